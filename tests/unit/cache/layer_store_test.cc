#include "cache/layer_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <random>
#include <thread>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "tar_builder.h"

namespace regfs::cache {
namespace {

using testing::Header;
using testing::TarBuilder;

std::string gzip(const std::string& data) {
  z_stream s{};
  deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, data.size()) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

std::string zstd(const std::string& data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3));
  return out;
}

std::string read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class LayerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("regfs-layer-store-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    TarBuilder tar;
    tar.add(Header{.name = "etc/", .type = '5', .mode = 0755});
    tar.file("etc/hello", "hello world\n");
    tar.file("../escape", "confined");
    tar.add(Header{.name = "hard", .type = '1', .link = "/etc/hello"});
    tar.file("big", std::string(300000, 'q'));
    tar_ = tar.end().raw(std::string(10240, '\0')).str();  // record padding counts too
    diff_id_ = registry::sha256_digest(tar_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path blob(const std::string& bytes) {
    auto path = dir_ / ("blob" + std::to_string(blobs_++));
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  void expect_layer(const LayerIndex& index) {
    EXPECT_EQ(index.diff_id, diff_id_);
    EXPECT_EQ(index.tar_size, tar_.size());
    ASSERT_EQ(index.entries.size(), 5u);
    EXPECT_EQ(index.entries[0].path, "etc");
    EXPECT_EQ(index.entries[2].path, "escape");
    EXPECT_EQ(index.entries[3].link, "etc/hello");  // hardlink targets cleaned too
    const auto& big = index.entries[4];
    EXPECT_EQ(tar_.substr(big.offset, big.size), std::string(300000, 'q'));
    ASSERT_TRUE(index.data);
    EXPECT_EQ(read_entry(index, index.entries[1]), "hello world\n");
    EXPECT_EQ(read_entry(index, big), std::string(300000, 'q'));
  }

  static std::string read_entry(const LayerIndex& index, const TarEntry& entry, uint64_t offset = 0,
                                size_t size = SIZE_MAX) {
    std::string out(std::min<uint64_t>(size, entry.size), '\0');
    out.resize(index.data->read_entry(entry, offset, out.data(), out.size()));
    return out;
  }

  std::filesystem::path index_file() const {
    return dir_ / "layers" / "sha256" / (std::string(registry::digest_hex(diff_id_)) + ".index");
  }

  std::filesystem::path dir_;
  std::string tar_;
  std::string diff_id_;
  int blobs_ = 0;
};

TEST_F(LayerStoreTest, IndexesEveryCompression) {
  LayerStore store(dir_ / "layers");
  expect_layer(*store.index(blob(tar_), Compression::kNone, diff_id_));
  std::filesystem::remove_all(dir_ / "layers");
  LayerStore gz(dir_ / "layers");
  expect_layer(*gz.index(blob(gzip(tar_)), Compression::kGzip, diff_id_));
  std::filesystem::remove_all(dir_ / "layers");
  LayerStore zs(dir_ / "layers");
  expect_layer(*zs.index(blob(zstd(tar_)), Compression::kZstd, diff_id_));
}

TEST_F(LayerStoreTest, MultiMemberGzip) {
  std::string half = tar_.substr(0, 1000);
  LayerStore store(dir_ / "layers");
  auto both = gzip(half) + gzip(tar_.substr(1000));
  expect_layer(*store.index(blob(both), Compression::kGzip, diff_id_));
}

TEST_F(LayerStoreTest, DiffIdMismatchKeepsNothing) {
  LayerStore store(dir_ / "layers");
  std::string wrong = registry::sha256_digest("something else");
  try {
    store.index(blob(gzip(tar_)), Compression::kGzip, wrong);
    ADD_FAILURE() << "no error";
  } catch (const registry::Error& e) {
    EXPECT_EQ(e.kind(), registry::ErrorKind::kIntegrity);
  }
  EXPECT_EQ(store.find(wrong), nullptr);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "layers" / "sha256"));
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "layers" / "tmp"));
}

TEST_F(LayerStoreTest, CorruptOrTruncatedCompressedData) {
  LayerStore store(dir_ / "layers");
  auto gz = gzip(tar_);
  auto zs = zstd(tar_);
  for (auto [bytes, c] : {std::pair{gz.substr(0, gz.size() / 2), Compression::kGzip},
                          std::pair{zs.substr(0, zs.size() / 2), Compression::kZstd},
                          std::pair{std::string("not gzip at all"), Compression::kGzip},
                          std::pair{std::string("not zstd at all"), Compression::kZstd}}) {
    EXPECT_THROW(store.index(blob(bytes), c, diff_id_), registry::Error);
  }
  EXPECT_EQ(store.find(diff_id_), nullptr);
}

TEST_F(LayerStoreTest, ARemountReusesTheIndex) {
  auto path = blob(zstd(tar_));
  {
    LayerStore store(dir_ / "layers");
    store.index(path, Compression::kZstd, diff_id_);
  }
  struct stat before;
  ASSERT_EQ(::stat(index_file().c_str(), &before), 0);
  LayerStore again(dir_ / "layers");
  EXPECT_EQ(again.find(diff_id_), nullptr);  // not loaded yet
  auto index = again.get(diff_id_, Compression::kZstd, [&] { return path; });
  expect_layer(*index);
  struct stat after;
  ASSERT_EQ(::stat(index_file().c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);  // not indexed again
  // The same tar compressed otherwise is another blob: indexed for it.
  index.reset();
  LayerStore third(dir_ / "layers");
  expect_layer(*third.get(diff_id_, Compression::kGzip, [&] { return blob(gzip(tar_)); }));
  ASSERT_EQ(::stat(index_file().c_str(), &after), 0);
  EXPECT_NE(after.st_ino, before.st_ino);
}

TEST_F(LayerStoreTest, ADamagedIndexIsRebuilt) {
  auto path = blob(tar_);
  {
    LayerStore store(dir_ / "layers");
    store.index(path, Compression::kNone, diff_id_);
  }
  std::ofstream(index_file(), std::ios::binary | std::ios::trunc) << "garbage";
  LayerStore again(dir_ / "layers");
  expect_layer(*again.get(diff_id_, Compression::kNone, [&] { return path; }));
  EXPECT_NE(read(index_file()), "garbage");
}

TEST_F(LayerStoreTest, AnIndexOfAnOlderVersionIsReplacedWhenFirstUsed) {
  auto path = blob(gzip(tar_));
  {
    LayerStore store(dir_ / "layers");
    store.index(path, Compression::kGzip, diff_id_);
  }
  // What regfs kept before access points: version 2 and the whole tar.
  std::string bytes = read(index_file());
  std::string v3 = "regfs-layer-index-3\n";
  ASSERT_EQ(bytes.substr(0, v3.size()), v3);
  bytes.replace(0, v3.size(), "regfs-layer-index-2\n");
  std::ofstream(index_file(), std::ios::binary | std::ios::trunc) << bytes;
  auto old_tar = index_file();
  old_tar.replace_extension(".tar");
  std::ofstream(old_tar, std::ios::binary) << tar_;
  std::vector<std::string> tracked;
  FileHooks hooks;
  hooks.track = [&](const auto& p) { tracked.push_back(p.filename().string()); };
  LayerStore again(dir_ / "layers", hooks);
  // Nothing is read at start-up: the old files wait for their layer's first use.
  EXPECT_TRUE(std::filesystem::exists(old_tar));
  EXPECT_TRUE(tracked.empty());
  int fetches = 0;
  expect_layer(*again.get(diff_id_, Compression::kGzip, [&] {
    ++fetches;
    return path;
  }));
  EXPECT_EQ(fetches, 1);
  EXPECT_EQ(read(index_file()).substr(0, v3.size()), v3);  // indexed again
  EXPECT_FALSE(std::filesystem::exists(old_tar));          // access points, no copy
  auto tar_name = old_tar.filename().string();
  auto index_name = index_file().filename().string();
  // The old files forgotten by the cache's bound, the new index tracked.
  EXPECT_EQ(std::count(tracked.begin(), tracked.end(), tar_name), 1);
  EXPECT_GE(std::count(tracked.begin(), tracked.end(), index_name), 2);
  // A remount uses the new index as it is.
  struct stat before;
  ASSERT_EQ(::stat(index_file().c_str(), &before), 0);
  LayerStore third(dir_ / "layers");
  expect_layer(*third.get(diff_id_, Compression::kGzip, [&] { return path; }));
  struct stat after;
  ASSERT_EQ(::stat(index_file().c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
}

TEST_F(LayerStoreTest, ConcurrentRequestsIndexOnce) {
  LayerStore store(dir_ / "layers");
  auto path = blob(gzip(tar_));
  std::atomic<int> fetches{0};
  std::vector<std::thread> threads;
  std::vector<std::shared_ptr<const LayerIndex>> got(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      got[i] = store.get(diff_id_, Compression::kGzip, [&] {
        ++fetches;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return path;
      });
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(fetches.load(), 1);
  for (auto& index : got) expect_layer(*index);
}

TEST_F(LayerStoreTest, PinsFilesWhileAnIndexLives) {
  std::map<std::string, int> pins;
  std::vector<std::string> tracked;
  FileHooks hooks{[&](const auto& p) { tracked.push_back(p.filename().string()); },
                  [&](const auto& p) { ++pins[p.filename().string()]; },
                  [&](const auto& p) { --pins[p.filename().string()]; },
                  [&](const auto& p) { ++pins["blob:" + p.filename().string()]; },
                  [&](const auto& p) { --pins["blob:" + p.filename().string()]; }};
  LayerStore store(dir_ / "layers", hooks);
  auto path = blob(gzip(tar_));
  auto index = store.index(path, Compression::kGzip, diff_id_);
  std::string hex(registry::digest_hex(diff_id_));
  EXPECT_EQ(tracked, (std::vector<std::string>{hex + ".index"}));  // no uncompressed copy
  EXPECT_FALSE(std::filesystem::exists(dir_ / "layers" / "sha256" / (hex + ".tar")));
  EXPECT_EQ(pins[hex + ".index"], 1);
  EXPECT_EQ(pins["blob:" + path.filename().string()], 1);  // read from the blob
  index.reset();
  EXPECT_EQ(pins[hex + ".index"], 0);
  EXPECT_EQ(pins["blob:" + path.filename().string()], 0);
}

// A file big enough for many access points, of varied bytes that compress.
std::string varied(size_t size, unsigned seed) {
  std::mt19937 random(seed);
  std::string out;
  out.reserve(size);
  while (out.size() < size) {
    out += "word" + std::to_string(random() % 5000) + (random() % 7 ? " " : "\n");
  }
  out.resize(size);
  return out;
}

// zstd frames of `frame` input bytes each, one after the other.
std::string zstd_frames(const std::string& data, size_t frame) {
  std::string out;
  for (size_t at = 0; at < data.size(); at += frame) out += zstd(data.substr(at, frame));
  return out;
}

class AccessPointTest : public LayerStoreTest {
 protected:
  void SetUp() override {
    LayerStoreTest::SetUp();
    TarBuilder tar;
    tar.file("small", "tiny");
    tar.file("large", large_);
    tar.file("after", "the end\n");
    tar_ = tar.end().str();
    diff_id_ = registry::sha256_digest(tar_);
  }
  // Reads `large` at random offsets and sizes (across points, spans and the
  // file's end) and in order, each compared with the file.
  void expect_random_reads(const LayerIndex& index) {
    ASSERT_EQ(index.entries.size(), 3u);
    const auto& large = index.entries[1];
    std::mt19937 random(7);
    for (int i = 0; i < 300; ++i) {
      uint64_t offset = random() % (large_.size() + 10);
      size_t size = 1 + random() % (i % 10 == 0 ? 600000 : 70000);
      std::string want = offset < large_.size() ? large_.substr(offset, size) : "";
      ASSERT_EQ(read_entry(index, large, offset, size), want) << offset << " " << size;
    }
    std::string whole;
    for (uint64_t at = 0; at < large.size; at += 131072)
      whole += read_entry(index, large, at, 131072);
    EXPECT_EQ(whole, large_);
    EXPECT_EQ(read_entry(index, index.entries[2]), "the end\n");
  }
  const std::string large_ = varied(3 << 20, 1);
};

TEST_F(AccessPointTest, GzipReadsAtRandomFromThePoints) {
  LayerStore store(dir_ / "layers", {}, 64 * 1024);
  auto index = store.index(blob(gzip(tar_)), Compression::kGzip, diff_id_);
  EXPECT_FALSE(index->tar_copy);
  auto stored = parse_index(read(index_file()));
  ASSERT_TRUE(stored);
  EXPECT_GT(stored->points.size(), 20u);
  EXPECT_GT(stored->points[5].bits + stored->points[6].bits + stored->points[7].bits, 0);
  expect_random_reads(*index);
  index.reset();
  LayerStore again(dir_ / "layers", {}, 64 * 1024);  // the points as stored
  expect_random_reads(*again.get(diff_id_, Compression::kGzip, [&] { return dir_ / "blob0"; }));
}

TEST_F(AccessPointTest, MultiMemberGzipReadsAcrossMembers) {
  LayerStore store(dir_ / "layers", {}, 64 * 1024);
  std::string members;
  for (size_t at = 0; at < tar_.size(); at += 700000) members += gzip(tar_.substr(at, 700000));
  expect_random_reads(*store.index(blob(members), Compression::kGzip, diff_id_));
}

TEST_F(AccessPointTest, ZstdFramesAreThePoints) {
  LayerStore store(dir_ / "layers", {}, 64 * 1024);
  auto index = store.index(blob(zstd_frames(tar_, 100000)), Compression::kZstd, diff_id_);
  EXPECT_FALSE(index->tar_copy);
  EXPECT_GT(parse_index(read(index_file()))->points.size(), 25u);
  expect_random_reads(*index);
}

TEST_F(AccessPointTest, ASingleFrameZstdKeepsADecompressedCopy) {
  std::vector<std::string> tracked;
  FileHooks hooks;
  hooks.track = [&](const auto& p) { tracked.push_back(p.filename().string()); };
  LayerStore store(dir_ / "layers", hooks, 64 * 1024, 1 << 20);
  auto index = store.index(blob(zstd(tar_)), Compression::kZstd, diff_id_);
  EXPECT_TRUE(index->tar_copy);
  auto copy = index_file();
  copy.replace_extension(".tar");
  EXPECT_EQ(read(copy), tar_);
  EXPECT_EQ(tracked.size(), 2u);
  expect_random_reads(*index);
}

TEST_F(AccessPointTest, TheStoreIsSmallNextToTheBlob) {
  LayerStore store(dir_ / "layers");  // the default spacing
  auto gz = gzip(tar_);
  store.index(blob(gz), Compression::kGzip, diff_id_);
  uint64_t stored = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir_ / "layers")) {
    if (f.is_regular_file()) stored += f.file_size();
  }
  EXPECT_LT(static_cast<double>(stored), 0.15 * static_cast<double>(gz.size()));
}

TEST(LayerIndexFormat, RoundTripsAndRefusesGarbage) {
  LayerIndex index;
  index.diff_id = registry::sha256_digest("x");
  index.tar_size = 4096;
  TarEntry e;
  e.path = "a/b";
  e.type = EntryType::kChar;
  e.mode = 04755;
  e.uid = 7;
  e.mtime = -5;
  e.offset = 512;
  e.size = 10;
  e.dev_major = 4;
  e.xattrs = {{"user.a", std::string("\0\1", 2)}};
  index.entries = {e, e};
  index.blob = "abc";
  index.compression = Compression::kGzip;
  index.points = {AccessPoint{10, 0, 0, ""}, AccessPoint{900, 2048, 3, "window"}};
  auto bytes = serialize_index(index);
  auto parsed = parse_index(bytes);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->entries, index.entries);
  EXPECT_EQ(parsed->points, index.points);
  EXPECT_EQ(parsed->blob, "abc");
  EXPECT_EQ(parsed->compression, Compression::kGzip);
  for (size_t cut = 0; cut < bytes.size(); cut += 7) {
    EXPECT_FALSE(parse_index(bytes.substr(0, cut)));
  }
  index.entries[0].offset = 4095;  // data past the tar's end
  EXPECT_FALSE(parse_index(serialize_index(index)));

  TarEntry sparse;
  sparse.path = "sparse";
  sparse.size = 1 << 20;
  sparse.sparse = true;
  sparse.segments = {{0, 100, 512}, {8192, 200, 1024}};
  index.entries = {sparse};
  parsed = parse_index(serialize_index(index));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->entries, index.entries);
  index.entries[0].segments[1].offset = 50;  // overlaps the run before
  EXPECT_FALSE(parse_index(serialize_index(index)));
  index.entries[0].segments[1] = {8192, 200, 4000};  // data past the tar's end
  EXPECT_FALSE(parse_index(serialize_index(index)));
  index.entries[0].segments[1] = {(1 << 20) - 100, 200, 1024};  // past the file's size
  EXPECT_FALSE(parse_index(serialize_index(index)));
}

}  // namespace
}  // namespace regfs::cache

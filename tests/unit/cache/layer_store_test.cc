#include "cache/layer_store.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <atomic>
#include <fstream>
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
    EXPECT_EQ(read(index.tar), tar_);
    ASSERT_EQ(index.entries.size(), 5u);
    EXPECT_EQ(index.entries[0].path, "etc");
    EXPECT_EQ(index.entries[2].path, "escape");
    EXPECT_EQ(index.entries[3].link, "etc/hello");  // hardlink targets cleaned too
    const auto& big = index.entries[4];
    EXPECT_EQ(tar_.substr(big.offset, big.size), std::string(300000, 'q'));
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

TEST_F(LayerStoreTest, ARemountFindsTheIndexWithoutTheBlob) {
  {
    LayerStore store(dir_ / "layers");
    store.index(blob(zstd(tar_)), Compression::kZstd, diff_id_);
  }
  LayerStore again(dir_ / "layers");
  auto index = again.get(diff_id_, Compression::kZstd, []() -> std::filesystem::path {
    throw std::runtime_error("the blob must not be needed");
  });
  expect_layer(*index);
}

TEST_F(LayerStoreTest, ADamagedIndexIsRebuilt) {
  LayerStore store(dir_ / "layers");
  auto index = store.index(blob(tar_), Compression::kNone, diff_id_);
  auto index_file = index->tar;
  index_file.replace_extension(".index");
  index.reset();
  std::ofstream(index_file, std::ios::binary | std::ios::trunc) << "garbage";
  LayerStore again(dir_ / "layers");
  EXPECT_EQ(again.find(diff_id_), nullptr);
  expect_layer(*again.get(diff_id_, Compression::kNone, [&] { return blob(tar_); }));
}

TEST_F(LayerStoreTest, AnIndexOfAnOlderVersionIsRebuilt) {
  LayerStore store(dir_ / "layers");
  auto index = store.index(blob(tar_), Compression::kNone, diff_id_);
  auto index_file = index->tar;
  index_file.replace_extension(".index");
  index.reset();
  // What regfs before sparse files wrote: the same records under version 1.
  std::string bytes = read(index_file);
  std::string v2 = "regfs-layer-index-2\n";
  ASSERT_EQ(bytes.substr(0, v2.size()), v2);
  bytes.replace(0, v2.size(), "regfs-layer-index-1\n");
  std::ofstream(index_file, std::ios::binary | std::ios::trunc) << bytes;
  LayerStore again(dir_ / "layers");
  EXPECT_EQ(again.find(diff_id_), nullptr);
  int fetches = 0;
  expect_layer(*again.get(diff_id_, Compression::kNone, [&] {
    ++fetches;
    return blob(tar_);
  }));
  EXPECT_EQ(fetches, 1);
  EXPECT_EQ(read(index_file).substr(0, v2.size()), v2);
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
                  [&](const auto& p) { --pins[p.filename().string()]; }};
  LayerStore store(dir_ / "layers", hooks);
  auto index = store.index(blob(tar_), Compression::kNone, diff_id_);
  std::string hex(registry::digest_hex(diff_id_));
  EXPECT_EQ(tracked, (std::vector<std::string>{hex + ".tar", hex + ".index"}));
  EXPECT_EQ(pins[hex + ".tar"], 1);
  index.reset();
  EXPECT_EQ(pins[hex + ".tar"], 0);
  EXPECT_EQ(pins[hex + ".index"], 0);
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
  auto bytes = serialize_index(index);
  auto parsed = parse_index(bytes);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->entries, index.entries);
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

// Files of a lazy layer read by chunks (cache/lazy_layer.h): a read fetches
// only the chunks it covers, verified; a bad chunk fails only the reads
// needing it; chunks in flight are fetched once; files without chunk
// digests are read and verified whole.
#include "cache/lazy_layer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "registry/core/deadline.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "tests/unit/cache/zstd_frame.h"

namespace regfs::cache {
namespace {

using registry::Error;
using registry::ErrorKind;

using testing::zstd_frame;
// "sha256:<hex>" of `data`.
std::string sha(const std::string& data) { return registry::sha256_digest(data); }

// A zstd:chunked-like blob of one file of `count` chunks of `size` bytes,
// each its own frame; ranges asked for are recorded.
struct Blob {
  std::string bytes;
  std::string content;
  TocFile file;
  std::mutex mutex;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;

  Blob(size_t count, size_t size, bool chunk_digests = true) {
    for (size_t i = 0; i < count; ++i) {
      std::string chunk(size, static_cast<char>('a' + i));
      chunk[i % size] = 'X';
      TocChunk c;
      c.offset = bytes.size();
      bytes += zstd_frame(chunk);
      c.end = bytes.size();
      c.file_offset = i * size;
      c.size = size;
      if (chunk_digests) c.digest = sha(chunk);
      file.chunks.push_back(c);
      content += chunk;
    }
    file.digest = sha(content);
  }
  LazyLayer::ReadRange reader() {
    return [this](uint64_t offset, uint64_t length) {
      std::lock_guard lock(mutex);
      ranges.emplace_back(offset, length);
      return bytes.substr(offset, length);
    };
  }
};

std::string read(const LayerData& data, uint64_t offset, size_t size) {
  std::string out(size, '\0');
  out.resize(data.read_entry(TarEntry{}, offset, out.data(), size));
  return out;
}

TEST(LazyLayerTest, AReadFetchesOnlyTheChunksItCovers) {
  Blob blob(8, 1000);
  auto layer = std::make_shared<LazyLayer>("sha256:blob", TocFormat::kZstdChunked,
                                           std::vector<TocFile>{blob.file}, blob.reader());
  EXPECT_TRUE(layer->reads_by_chunks(0));
  auto file = layer->open_file(0, blob.content.size());
  EXPECT_EQ(read(*file, 3500, 100), blob.content.substr(3500, 100));
  ASSERT_EQ(blob.ranges.size(), 1u);
  EXPECT_EQ(blob.ranges[0].first, blob.file.chunks[3].offset);
  EXPECT_EQ(blob.ranges[0].second, blob.file.chunks[3].end - blob.file.chunks[3].offset);
  // The open file keeps the chunk it read: a read in it fetches nothing.
  EXPECT_EQ(read(*file, 3000, 1000), blob.content.substr(3000, 1000));
  EXPECT_EQ(blob.ranges.size(), 1u);
  // Two missing consecutive chunks: one range.
  EXPECT_EQ(read(*file, 5500, 1000), blob.content.substr(5500, 1000));
  ASSERT_EQ(blob.ranges.size(), 2u);
  EXPECT_EQ(blob.ranges[1].first, blob.file.chunks[5].offset);
  EXPECT_EQ(blob.ranges[1].second, blob.file.chunks[6].end - blob.file.chunks[5].offset);
  // The end of the file, and past it.
  EXPECT_EQ(read(*file, 7990, 100), blob.content.substr(7990));
  EXPECT_EQ(read(*file, 8000, 100), "");
}

TEST(LazyLayerTest, ChunksComeFromTheStoreByDigest) {
  Blob blob(4, 500);
  std::map<std::string, std::string> kept;
  LazyLayer::ChunkStore store{
      [&](const std::string& d) -> std::optional<std::string> {
        auto it = kept.find(d);
        if (it == kept.end()) return std::nullopt;
        return it->second;
      },
      [&](const std::string& d, std::string_view b) { kept[d] = std::string(b); }};
  auto layer = std::make_shared<LazyLayer>("sha256:blob", TocFormat::kZstdChunked,
                                           std::vector<TocFile>{blob.file}, blob.reader(), store);
  EXPECT_EQ(read(*layer->open_file(0, 2000), 0, 2000), blob.content);
  EXPECT_EQ(kept.size(), 4u);
  auto fetched = blob.ranges.size();
  EXPECT_EQ(read(*layer->open_file(0, 2000), 600, 1000), blob.content.substr(600, 1000));
  EXPECT_EQ(blob.ranges.size(), fetched);
}

TEST(LazyLayerTest, ABadChunkFailsOnlyTheReadsThatNeedIt) {
  Blob blob(4, 1000);
  blob.bytes[blob.file.chunks[2].offset + 6] ^= 0x55;  // inside chunk 2's frame
  auto layer = std::make_shared<LazyLayer>("sha256:blob", TocFormat::kZstdChunked,
                                           std::vector<TocFile>{blob.file}, blob.reader());
  auto file = layer->open_file(0, 4000);
  try {
    read(*file, 2100, 10);
    FAIL() << "a bad chunk read";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIntegrity);
  }
  EXPECT_EQ(read(*file, 0, 2000), blob.content.substr(0, 2000));
  EXPECT_EQ(read(*file, 3000, 1000), blob.content.substr(3000));
  EXPECT_THROW(read(*file, 1990, 20), Error);  // spans chunks 1 and 2
}

TEST(LazyLayerTest, AFileWithoutChunkDigestsIsReadAndVerifiedWhole) {
  Blob blob(3, 1000, /*chunk_digests=*/false);
  auto layer = std::make_shared<LazyLayer>("sha256:blob", TocFormat::kZstdChunked,
                                           std::vector<TocFile>{blob.file}, blob.reader());
  EXPECT_FALSE(layer->reads_by_chunks(0));
  auto file = layer->open_file(0, 3000);
  EXPECT_EQ(read(*file, 1500, 10), blob.content.substr(1500, 10));
  EXPECT_EQ(blob.ranges.size(), 1u);  // the three chunks in one range
  EXPECT_EQ(read(*file, 0, 3000), blob.content);
  EXPECT_EQ(blob.ranges.size(), 1u);

  Blob bad(3, 1000, false);
  bad.file.digest = sha("another file");
  auto other = std::make_shared<LazyLayer>("sha256:bad", TocFormat::kZstdChunked,
                                           std::vector<TocFile>{bad.file}, bad.reader());
  EXPECT_THROW(read(*other->open_file(0, 3000), 0, 10), Error);
}

// A pool of one thread that starts tasks only when let go.
struct GatedPool {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::function<void()>> tasks;
  bool open = false;
  std::atomic<int> submitted{0};
  LazyLayer::Submit submit() {
    return [this](std::function<void()> task) {
      ++submitted;
      std::lock_guard lock(mutex);
      tasks.push_back(std::move(task));
      cv.notify_all();
    };
  }
  void run_all() {
    std::vector<std::function<void()>> now;
    {
      std::lock_guard lock(mutex);
      now.swap(tasks);
    }
    for (auto& t : now) t();
  }
};

TEST(LazyLayerTest, ReadersOfOneChunkFetchItOnceAndWaitWithinTheirDeadline) {
  Blob blob(2, 1000);
  GatedPool pool;
  auto layer = std::make_shared<LazyLayer>("sha256:blob", TocFormat::kZstdChunked,
                                           std::vector<TocFile>{blob.file}, blob.reader(),
                                           LazyLayer::ChunkStore{}, pool.submit());
  {
    // Nothing runs the fetch: the read gives up at its deadline.
    registry::ScopedDeadline deadline(std::chrono::milliseconds(50));
    try {
      read(*layer->open_file(0, 2000), 10, 10);
      FAIL() << "read without its chunk";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kTimeout);
    }
  }
  EXPECT_EQ(pool.submitted, 1);
  // More readers of the chunk in flight join it.
  std::vector<std::thread> readers;
  std::vector<std::string> got(4);
  std::atomic<size_t> done{0};
  for (size_t i = 0; i < got.size(); ++i) {
    readers.emplace_back([&, i] {
      got[i] = read(*layer->open_file(0, 2000), 100 * i, 50);
      ++done;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // all waiting
  while (done < got.size()) {
    pool.run_all();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& t : readers) t.join();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], blob.content.substr(100 * i, 50));
  EXPECT_EQ(pool.submitted, 1);
  EXPECT_EQ(blob.ranges.size(), 1u);
}

}  // namespace
}  // namespace regfs::cache

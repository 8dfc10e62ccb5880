#include "cache/cached_blob.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "cache/blob_cache.h"
#include "registry/core/deadline.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::cache {
namespace {

using registry::Error;
using registry::ErrorKind;

constexpr uint64_t kChunk = 64 << 10;

class CachedBlobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("regfs-cachedblob-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
    std::mt19937 rng(7);
    bytes_.resize(10 * kChunk + 123);
    for (auto& c : bytes_) c = static_cast<char>(rng());
    digest_ = registry::sha256_digest(bytes_);
    hex_ = std::string(registry::digest_hex(digest_));
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::unique_ptr<BlobCache> cache() {
    return std::make_unique<BlobCache>(root_, 1ull << 30, kChunk);
  }
  std::string_view chunk(size_t i) const {
    return std::string_view(bytes_).substr(i * kChunk,
                                           std::min<uint64_t>(kChunk, bytes_.size() - i * kChunk));
  }
  void store(CachedBlob& blob, size_t i) {
    ASSERT_EQ(blob.claim(i, i).size(), 1u);
    blob.store_chunk(i, chunk(i));
  }
  // The bytes a lease gives, or nullopt if the chunk must be fetched again.
  std::optional<std::string> read(CachedBlob& blob, uint64_t offset, size_t length) {
    auto lease = blob.lease(offset, length);
    if (!lease) return std::nullopt;
    std::string out(lease->length(), '\0');
    EXPECT_EQ(::pread(lease->fd(), out.data(), out.size(), static_cast<off_t>(lease->offset())),
              static_cast<ssize_t>(out.size()));
    return out;
  }
  std::filesystem::path partial() const { return root_ / "partial/sha256" / hex_; }
  std::filesystem::path complete() const { return root_ / "blobs/sha256" / hex_; }

  std::filesystem::path root_;
  std::string bytes_;
  std::string digest_;
  std::string hex_;
};

TEST_F(CachedBlobTest, ChunksStoredInAnyOrderByManyThreadsComplete) {
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  ASSERT_EQ(blob->chunk_count(), 11u);
  std::vector<size_t> order(blob->chunk_count());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  ASSERT_FALSE(blob->claim(0, order.size() - 1).empty());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = t; k < order.size(); k += 4) blob->store_chunk(order[k], chunk(order[k]));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(blob->wait(0, blob->chunk_count() - 1));
  EXPECT_TRUE(blob->await_verified());
  EXPECT_TRUE(blob->complete());
  EXPECT_TRUE(std::filesystem::is_regular_file(complete()));
  EXPECT_FALSE(std::filesystem::exists(partial()));
  EXPECT_EQ(read(*blob, 0, bytes_.size()), bytes_);
}

// Another instance (an evicting thread's, another mount's) may complete or
// drop the partial file under this one: its reads and completion go on
// from the file it writes (the load test once saw EIO here).
TEST_F(CachedBlobTest, PartialCompletedByAnotherInstanceStillServesAndCompletes) {
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  for (size_t i = 0; i < 10; ++i) store(*blob, i);
  std::filesystem::rename(partial(), complete());
  EXPECT_EQ(read(*blob, 0, 2 * kChunk), bytes_.substr(0, 2 * kChunk));
  store(*blob, 10);
  EXPECT_TRUE(blob->await_complete());
  EXPECT_TRUE(blob->complete());
  EXPECT_EQ(read(*blob, 0, bytes_.size()), bytes_);
}

TEST_F(CachedBlobTest, PartialDroppedUnderAnInstanceStillServesIt) {
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  for (size_t i = 0; i < 5; ++i) store(*blob, i);
  std::filesystem::remove(partial());
  EXPECT_EQ(read(*blob, kChunk, 3 * kChunk), bytes_.substr(kChunk, 3 * kChunk));
  for (size_t i = 5; i < blob->chunk_count(); ++i) store(*blob, i);
  EXPECT_TRUE(blob->await_verified());
  EXPECT_EQ(read(*blob, 0, bytes_.size()), bytes_);
}

TEST_F(CachedBlobTest, WrongBytesDropTheBlobAndFailReaders) {
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  for (size_t i = 0; i + 1 < blob->chunk_count(); ++i) store(*blob, i);
  std::string last(chunk(10));
  last[5] ^= 1;
  ASSERT_EQ(blob->claim(10, 10).size(), 1u);
  blob->store_chunk(10, last);
  try {
    blob->wait(0, 10);
    FAIL() << "expected an integrity error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIntegrity);
  }
  EXPECT_THROW(blob->await_verified(), Error);
  EXPECT_FALSE(std::filesystem::exists(partial()));
  EXPECT_FALSE(std::filesystem::exists(complete()));
}

TEST_F(CachedBlobTest, ChunksStoredWithoutHashAreTrustedInThisProcessAndHashedAtTheEnd) {
  {
    auto c = cache();
    {
      auto blob = c->open(digest_, bytes_.size());
      store(*blob, 2);
      store(*blob, 3);
    }
    // A later instance in the same process serves them without a fetch.
    auto blob = c->open(digest_, bytes_.size());
    EXPECT_TRUE(blob->claim(2, 3).empty());
    EXPECT_EQ(read(*blob, 2 * kChunk + 10, kChunk),
              std::string(bytes_.substr(2 * kChunk + 10, kChunk)));
  }  // ~BlobCache logs their hashes
  std::ifstream log(partial().string() + ".chunks");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("+2 "), std::string::npos) << text;
  EXPECT_NE(text.find("+3 "), std::string::npos) << text;

  // The next process verifies them against those hashes...
  {
    auto c = cache();
    auto blob = c->open(digest_, bytes_.size());
    EXPECT_EQ(read(*blob, 2 * kChunk, 2 * kChunk),
              std::string(bytes_.substr(2 * kChunk, 2 * kChunk)));
  }
  // ...and fetches a corrupt one again.
  {
    std::fstream f(partial(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(3 * kChunk + 7));
    f.put(static_cast<char>(bytes_[3 * kChunk + 7] ^ 1));
  }
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  EXPECT_EQ(read(*blob, 2 * kChunk, 100), std::string(bytes_.substr(2 * kChunk, 100)));
  EXPECT_FALSE(read(*blob, 3 * kChunk, 100)) << "a corrupt chunk is never served";
  EXPECT_EQ(blob->claim(3, 3).size(), 1u);
}

TEST_F(CachedBlobTest, ChunksLoggedWithoutHashByAnotherProcessAreFetchedAgain) {
  {
    auto c = cache();
    auto blob = c->open(digest_, bytes_.size());
    store(*blob, 0);
    store(*blob, 1);
    // As if killed: the log keeps "+0" and "+1" without hashes.
    std::filesystem::copy_file(partial().string() + ".chunks", root_ / "killed.chunks");
  }
  std::filesystem::copy_file(root_ / "killed.chunks", partial().string() + ".chunks",
                             std::filesystem::copy_options::overwrite_existing);
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  EXPECT_FALSE(read(*blob, 0, 100));
  EXPECT_EQ(blob->claim(0, 1).size(), 1u);
  blob->store_chunk(0, chunk(0));
  blob->store_chunk(1, chunk(1));
  EXPECT_EQ(read(*blob, 0, 2 * kChunk), std::string(bytes_.substr(0, 2 * kChunk)));
}

TEST_F(CachedBlobTest, HashingResumesFromChunksAlreadyPresent) {
  {
    auto c = cache();
    auto blob = c->open(digest_, bytes_.size());
    for (size_t i = 0; i < 5; ++i) store(*blob, i);
  }
  // A new process has chunks 0-4 from the last one; storing the rest
  // completes the blob, hashing 0-4 from the file.
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  for (size_t i = 10; i >= 5; --i) store(*blob, i);
  EXPECT_TRUE(blob->complete());
  EXPECT_EQ(read(*blob, 0, bytes_.size()), bytes_);
}

TEST_F(CachedBlobTest, AwaitCompleteHashesABlobWhoseChunksAreAllPresent) {
  {
    auto c = cache();
    auto blob = c->open(digest_, bytes_.size());
    for (size_t i = 1; i < blob->chunk_count(); ++i) store(*blob, i);
  }
  // Chunk 0 written and logged by another mount: nobody here stores a chunk.
  {
    std::fstream f(partial(), std::ios::in | std::ios::out | std::ios::binary);
    f.write(bytes_.data(), kChunk);
    std::ofstream log(partial().string() + ".chunks", std::ios::app);
    log << "+0 " << registry::digest_hex(registry::sha256_digest(chunk(0))) << "\n";
  }
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  EXPECT_TRUE(blob->wait(0, blob->chunk_count() - 1));
  EXPECT_FALSE(blob->complete());
  EXPECT_TRUE(blob->await_complete());
  EXPECT_TRUE(std::filesystem::is_regular_file(complete()));
}

// A FUSE operation waits for a chunk another thread fetches only until its
// deadline (registry/core/deadline.h); the fetch itself is not disturbed.
TEST_F(CachedBlobTest, WaitEndsAtTheOperationsDeadline) {
  auto c = cache();
  auto blob = c->open(digest_, bytes_.size());
  ASSERT_EQ(blob->claim(1, 1).size(), 1u);  // being fetched, never stored
  auto started = std::chrono::steady_clock::now();
  try {
    registry::ScopedDeadline deadline(std::chrono::milliseconds(200));
    blob->wait(1, 1);
    FAIL() << "wait returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kTimeout);
  }
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, std::chrono::milliseconds(150));
  EXPECT_LT(waited, std::chrono::seconds(5));
  blob->store_chunk(1, chunk(1));
  EXPECT_TRUE(blob->wait(1, 1));  // no deadline: the chunk is there
}

}  // namespace
}  // namespace regfs::cache

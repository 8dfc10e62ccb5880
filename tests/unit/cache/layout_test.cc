#include "cache/layout.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cache/blob_cache.h"
#include "cache/cached_blob.h"
#include "registry/core/digest.h"

namespace regfs::cache {
namespace {

constexpr uint64_t kChunk = 64 << 10;

TEST(CacheLayoutTest, NamesTheDocumentedPaths) {
  CacheLayout layout("/c");
  const std::string digest = "sha256:" + std::string(64, 'a');
  const std::string hex(64, 'a');
  EXPECT_EQ(layout.blob(digest), "/c/blobs/sha256/" + hex);
  EXPECT_EQ(layout.partial(digest), "/c/partial/sha256/" + hex);
  EXPECT_EQ(layout.chunk_log(digest), "/c/partial/sha256/" + hex + ".chunks");
  EXPECT_EQ(CacheLayout::layer_tar(layout.layers(), digest), "/c/layers/sha256/" + hex + ".tar");
  EXPECT_EQ(CacheLayout::layer_index(layout.layers(), digest),
            "/c/layers/sha256/" + hex + ".index");
  EXPECT_EQ(layout.refs_of("r:5000"), "/c/refs/r:5000");
  EXPECT_EQ(layout.staging(), "/c/staging");
  EXPECT_EQ(layout.builds(), "/c/builds");
  EXPECT_EQ(layout.tmp(), "/c/tmp");
  EXPECT_EQ(layout.log_file(), "/c/regfs.log");
  // What `regfs cache clear` removes: neither staged pushes nor builds.
  for (const auto& dir : layout.content_dirs()) {
    EXPECT_NE(dir, layout.staging());
    EXPECT_NE(dir, layout.builds());
  }
}

// A chunk of a blob no instance has open is punched and logged gone without
// loading the blob; the next instance sees it absent.
TEST(CacheLayoutTest, AChunkOfAClosedBlobIsEvictedFromItsFiles) {
  auto root =
      std::filesystem::temp_directory_path() / ("regfs-layout-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  std::string bytes(3 * kChunk, 'x');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  const std::string digest = registry::sha256_digest(bytes);
  {
    BlobCache cache(root, 1ull << 30, kChunk);
    {
      auto blob = cache.open(digest, bytes.size());
      for (size_t i : {0, 1}) {
        ASSERT_EQ(blob->claim(i, i).size(), 1u);
        blob->store_chunk(i, std::string_view(bytes).substr(i * kChunk, kChunk));
      }
    }
    CachedBlob::evict_closed_chunk(cache.layout(), digest, bytes.size(), kChunk, 1);
    std::ifstream log(cache.layout().chunk_log(digest));
    std::stringstream text;
    text << log.rdbuf();
    EXPECT_NE(text.str().find("\n-1\n"), std::string::npos) << text.str();
    int fd = ::open(cache.layout().partial(digest).c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    std::string read(kChunk, '\1');
    EXPECT_EQ(::pread(fd, read.data(), read.size(), kChunk), static_cast<ssize_t>(kChunk));
    EXPECT_EQ(read, std::string(kChunk, '\0'));  // a hole
    ::close(fd);
    auto again = cache.open(digest, bytes.size());
    EXPECT_TRUE(again->present(0, 0));
    EXPECT_FALSE(again->present(1, 1));
  }
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace regfs::cache

// eStargz layers regfs writes (cache/estargz_writer.h) read back through
// their own table (cache/toc.h): footer, table digest, entries, chunks.
#include "cache/estargz_writer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cache/toc.h"
#include "registry/core/digest.h"

namespace regfs::cache {
namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

LayerEntry entry(std::string path, mode_t type, uint32_t mode) {
  LayerEntry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = mode;
  return e;
}

TEST(EstargzWriterTest, LayerReadsBackThroughItsTable) {
  auto dir = std::filesystem::path(::testing::TempDir()) / "estargz_writer_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string big(kEstargzChunkSize + 1000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 % 251);
  std::ofstream(dir / "big", std::ios::binary) << big;
  std::ofstream(dir / "small", std::ios::binary) << "small\n";
  std::vector<LayerEntry> entries(5);
  entries[0] = entry("d", S_IFDIR, 0755);
  entries[1] = entry("d/big", S_IFREG, 0644);
  entries[1].source = dir / "big";
  entries[2] = entry("d/small", S_IFREG, 0600);
  entries[2].source = dir / "small";
  entries[2].xattrs = {{"user.k", "v"}};
  entries[3] = entry("d/link", S_IFLNK, 0777);
  entries[3].link_target = "small";
  entries[4] = entry("d/hard", S_IFREG, 0600);
  entries[4].hardlink_to = "d/small";
  auto layer = write_estargz_layer(entries, dir / "layer");
  auto blob = read_all(dir / "layer");
  ASSERT_EQ(static_cast<int64_t>(blob.size()), layer.size);
  EXPECT_EQ(layer.digest, registry::sha256_digest(blob));

  auto range = estargz_toc_range(std::string_view(blob).substr(blob.size() - kEstargzFooterSize),
                                 blob.size());
  ASSERT_TRUE(range);
  auto toc_bytes =
      extract_toc(TocFormat::kEstargz, std::string_view(blob).substr(range->offset, range->length));
  EXPECT_EQ(registry::sha256_digest(toc_bytes.json),
            layer.annotations.at(std::string(kEstargzTocDigest)));
  auto toc = parse_toc(TocFormat::kEstargz, toc_bytes.json, range->offset);
  ASSERT_EQ(toc.entries.size(), 5u);
  EXPECT_EQ(toc.entries[1].path, "d/big");
  EXPECT_EQ(toc.entries[1].size, big.size());
  EXPECT_EQ(toc.entries[2].xattrs.at(0), std::make_pair(std::string("user.k"), std::string("v")));
  EXPECT_EQ(toc.entries[3].link, "small");
  EXPECT_EQ(toc.entries[4].type, EntryType::kHardlink);
  EXPECT_EQ(toc.entries[4].link, "d/small");
  const auto& chunks = toc.files[1].chunks;
  ASSERT_EQ(chunks.size(), 2u);
  std::string got;
  for (const auto& c : chunks) {
    got += decompress_chunk(TocFormat::kEstargz, c,
                            std::string_view(blob).substr(c.offset, c.end - c.offset));
  }
  EXPECT_EQ(got, big);
  const auto& small = toc.files[2].chunks.at(0);
  EXPECT_EQ(decompress_chunk(TocFormat::kEstargz, small,
                             std::string_view(blob).substr(small.offset, small.end - small.offset)),
            "small\n");
  std::filesystem::remove_all(dir);
}

TEST(EstargzWriterTest, FifosAndDevicesAreInTheTable) {
  auto dir = std::filesystem::path(::testing::TempDir()) / "estargz_writer_nodes_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<LayerEntry> entries(3);
  entries[0] = entry("pipe", S_IFIFO, 0640);
  entries[1] = entry("null", S_IFCHR, 0666);
  entries[1].rdev = makedev(1, 3);
  entries[2] = entry("sda", S_IFBLK, 0660);
  entries[2].rdev = makedev(8, 0);
  write_estargz_layer(entries, dir / "layer");
  auto blob = read_all(dir / "layer");
  auto range = estargz_toc_range(std::string_view(blob).substr(blob.size() - kEstargzFooterSize),
                                 blob.size());
  ASSERT_TRUE(range);
  auto toc_bytes =
      extract_toc(TocFormat::kEstargz, std::string_view(blob).substr(range->offset, range->length));
  auto toc = parse_toc(TocFormat::kEstargz, toc_bytes.json, range->offset);
  ASSERT_EQ(toc.entries.size(), 3u);
  EXPECT_EQ(toc.entries[0].type, EntryType::kFifo);
  EXPECT_EQ(toc.entries[0].mode & 07777, 0640u);
  EXPECT_EQ(toc.entries[1].type, EntryType::kChar);
  EXPECT_EQ(toc.entries[1].dev_major, 1u);
  EXPECT_EQ(toc.entries[1].dev_minor, 3u);
  EXPECT_EQ(toc.entries[2].type, EntryType::kBlock);
  EXPECT_EQ(toc.entries[2].dev_major, 8u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace regfs::cache

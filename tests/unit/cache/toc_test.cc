// Tables of contents of eStargz and zstd:chunked layers (cache/toc.h): the
// footers, the annotation, the JSON tables and chunk decompression.
#include "cache/toc.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "tests/unit/cache/zstd_frame.h"

namespace regfs::cache {
namespace {

std::string gzip_member(const std::string& data) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

using testing::zstd_frame;
// "sha256:<hex>" of `data`.
std::string sha(const std::string& data) { return registry::sha256_digest(data); }

std::string estargz_footer(uint64_t offset) {
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(offset));
  std::string f = {'\x1f', '\x8b', '\x08', '\x04', 0, 0, 0, 0, 0, '\xff', 26, 0, 'S', 'G', 22, 0};
  f += hex;
  f += "STARGZ";
  f += std::string("\x01\x00\x00\xff\xff", 5) + std::string(8, '\0');
  return f;
}

TEST(TocTest, EstargzFooterGivesTheTableRange) {
  auto f = estargz_footer(1000);
  ASSERT_EQ(f.size(), kEstargzFooterSize);
  auto range = estargz_toc_range(f, 2000);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->offset, 1000u);
  EXPECT_EQ(range->length, 2000u - 51 - 1000);
  EXPECT_FALSE(estargz_toc_range(f, 1040));  // the table would start past the footer
  f[33] = 'X';
  EXPECT_FALSE(estargz_toc_range(f, 2000));
}

// The legacy stargz (CRFS) footer: the extra field is the 22 bytes alone.
std::string legacy_footer(uint64_t offset) {
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(offset));
  std::string f = {'\x1f', '\x8b', '\x08', '\x04', 0, 0, 0, 0, 0, '\xff', 22, 0};
  f += hex;
  f += "STARGZ";
  f += std::string("\x01\x00\x00\xff\xff", 5) + std::string(8, '\0');
  return f;
}

TEST(TocTest, LegacyStargzFooterGivesTheTableRange) {
  auto legacy = legacy_footer(1000);
  ASSERT_EQ(legacy.size(), kLegacyStargzFooterSize);
  // The last 51 bytes of the blob: 4 bytes of the table's member, then the footer.
  auto f = std::string("\x12\x34\x00\x00", 4) + legacy;
  auto range = estargz_toc_range(f, 2000);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->offset, 1000u);
  EXPECT_EQ(range->length, 2000u - 47 - 1000);
  f[4 + 12] = 'g';  // not a hex digit
  EXPECT_FALSE(estargz_toc_range(f, 2000));
  f = std::string(4, '\0') + legacy;
  f[4 + 10] = 26;  // the length eStargz has, without its subfield
  EXPECT_FALSE(estargz_toc_range(f, 2000));
}

TEST(TocTest, ZstdChunkedFooterAndAnnotation) {
  std::string f;
  auto put32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) f.push_back(static_cast<char>(v >> (8 * i)));
  };
  auto put64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) f.push_back(static_cast<char>(v >> (8 * i)));
  };
  put32(0x184D2A50);
  put32(64);
  for (uint64_t v : {500, 40, 90, 1, 540, 10, 20}) put64(v);
  f += "GNUlInUx";
  auto range = zstd_chunked_footer_range(f);
  ASSERT_TRUE(range);
  EXPECT_EQ(range->offset, 500u);
  EXPECT_EQ(range->length, 40u);
  auto a = zstd_chunked_annotation_range("107123052:1009822:5525223:1");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->offset, 107123052u);
  EXPECT_EQ(a->length, 1009822u);
  EXPECT_FALSE(zstd_chunked_annotation_range("1:2:3:2"));
  EXPECT_FALSE(zstd_chunked_annotation_range("1:2:3"));
  EXPECT_FALSE(zstd_chunked_annotation_range("1:x:3:1"));
}

TEST(TocTest, Rfc3339Times) {
  using Time = std::pair<int64_t, uint32_t>;
  EXPECT_EQ(parse_rfc3339("2024-01-01T00:00:00Z"), Time(1704067200, 0));
  EXPECT_EQ(parse_rfc3339("2024-01-01T02:00:00.5+02:00"), Time(1704067200, 500000000));
  EXPECT_FALSE(parse_rfc3339("yesterday"));
}

TEST(TocTest, EstargzTableEntriesAndChunks) {
  std::string a = "hello ", b = "world\n";
  std::string head = gzip_member("header");
  std::string blob = head + gzip_member(a);
  uint64_t second = blob.size();
  blob += gzip_member(b);
  uint64_t toc_offset = blob.size();
  std::string json = R"({"version":1,"entries":[
    {"name":"etc/","type":"dir","mode":16877,"modtime":"2024-01-01T00:00:00Z",
     "xattrs":{"user.k":"dg=="}},
    {"name":"etc/f","type":"reg","size":12,"mode":420,"uid":7,"offset":)" +
                     std::to_string(head.size()) + R"(,
     "digest":")" + sha(a + b) +
                     R"(","chunkSize":6,"chunkDigest":")" + sha(a) + R"("},
    {"name":"etc/f","type":"chunk","offset":)" +
                     std::to_string(second) + R"(,"chunkOffset":6,"chunkSize":6,"chunkDigest":")" +
                     sha(b) + R"("},
    {"name":"etc/l","type":"hardlink","linkName":"/etc/f"},
    {"name":"etc/.wh.gone","type":"reg","size":0}]})";
  auto toc = parse_toc(TocFormat::kEstargz, json, toc_offset);
  ASSERT_EQ(toc.entries.size(), 4u);
  EXPECT_EQ(toc.entries[0].path, "etc");
  EXPECT_EQ(toc.entries[0].type, EntryType::kDir);
  EXPECT_EQ(toc.entries[0].mode, 0755u);
  EXPECT_EQ(toc.entries[0].mtime, 1704067200);
  EXPECT_EQ(toc.entries[0].xattrs.at(0).second, "v");
  EXPECT_EQ(toc.entries[1].uid, 7u);
  EXPECT_EQ(toc.entries[2].link, "etc/f");
  EXPECT_EQ(toc.entries[3].path, "etc/.wh.gone");
  const auto& chunks = toc.files[1].chunks;
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].end, chunks[1].offset);
  EXPECT_EQ(chunks[1].end, toc_offset);
  std::string got;
  for (const auto& c : chunks) {
    got += decompress_chunk(TocFormat::kEstargz, c,
                            std::string_view(blob).substr(c.offset, c.end - c.offset));
  }
  EXPECT_EQ(got, a + b);
}

TEST(TocTest, BadChunksAndTablesAreRefused) {
  std::string data = "payload";
  std::string frame = zstd_frame(data);
  TocChunk c{0, frame.size(), 0, 0, data.size(), sha("other"), false};
  EXPECT_THROW(decompress_chunk(TocFormat::kZstdChunked, c, frame), registry::Error);
  c.digest = sha(data);
  EXPECT_EQ(decompress_chunk(TocFormat::kZstdChunked, c, frame), data);
  EXPECT_THROW(parse_toc(TocFormat::kZstdChunked, "{not json", 0), registry::Error);
  EXPECT_THROW(parse_toc(TocFormat::kZstdChunked,
                         R"({"entries":[{"name":"x","type":"reg","size":5,"offset":10,)"
                         R"("endOffset":20,"chunkSize":3}]})",
                         0),
               registry::Error);  // chunks do not cover the size
  EXPECT_THROW(parse_toc(TocFormat::kZstdChunked, R"({"entries":[{"name":"x","type":"sock"}]})", 0),
               registry::Error);
  // Integer fields hold integers T can represent (fuzz_toc found a float uid).
  for (const char* uid : {"2.2e20", "1.5", "-1", "18446744073709551615"}) {
    EXPECT_THROW(parse_toc(TocFormat::kEstargz,
                           std::string(R"({"version":1,"entries":[{"name":"etc/","type":"dir",)") +
                               R"("uid":)" + uid + "}]}",
                           0),
                 registry::Error)
        << uid;
  }
}

TEST(TocTest, EstargzTableMemberGivesJsonAndItsTarEntry) {
  std::string json = R"({"version":1,"entries":[]})";
  std::string header(512, '\0');
  std::string name = "stargz.index.json";
  header.replace(0, name.size(), name);
  header.replace(100, 7, "0000444");
  header.replace(108, 7, "0000000");
  header.replace(116, 7, "0000000");
  char size[12];
  snprintf(size, sizeof size, "%011o", static_cast<unsigned>(json.size()));
  header.replace(124, 11, size);
  header.replace(136, 11, "00000000000");
  header[156] = '0';
  std::string tar = header + json + std::string(512 - json.size() % 512, '\0');
  auto got = extract_toc(TocFormat::kEstargz, gzip_member(tar));
  EXPECT_EQ(got.json, json);
  ASSERT_TRUE(got.toc_entry);
  EXPECT_EQ(got.toc_entry->mode, 0444u);
  EXPECT_EQ(got.toc_entry->size, json.size());
}

}  // namespace
}  // namespace regfs::cache

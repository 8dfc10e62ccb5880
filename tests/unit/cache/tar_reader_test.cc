#include "cache/tar_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "cache/layer_data.h"
#include "cache/layer_index.h"
#include "registry/core/error.h"
#include "tar_builder.h"

namespace regfs::cache {
namespace {

using testing::Header;
using testing::TarBuilder;

// Reads every entry of `archive`, feeding it `chunk` bytes at a time.
std::vector<TarEntry> read_all(const std::string& archive, size_t chunk = 7) {
  size_t at = 0;
  TarReader reader([&](char* data, size_t size) {
    size_t n = std::min({size, chunk, archive.size() - at});
    std::memcpy(data, archive.data() + at, n);
    at += n;
    return n;
  });
  std::vector<TarEntry> entries;
  while (auto e = reader.next()) entries.push_back(*e);
  return entries;
}

void expect_invalid(const std::string& archive) {
  try {
    read_all(archive, 4096);
    ADD_FAILURE() << "no error";
  } catch (const registry::Error& e) {
    EXPECT_EQ(e.kind(), registry::ErrorKind::kInvalid) << e.what();
  }
}

TEST(TarReader, EveryEntryTypeWithItsMetadataAndDataOffset) {
  TarBuilder tar;
  Header dir{.name = "etc/", .type = '5', .mode = 0755, .uid = 1, .gid = 2};
  tar.add(dir);
  tar.file("etc/hello", "hello\n", 04755);
  tar.add(Header{.name = "etc/sh", .type = '2', .mode = 0777, .link = "../bin/busybox"});
  tar.add(Header{.name = "etc/hard", .type = '1', .link = "etc/hello"});
  tar.add(Header{.name = "dev/null", .type = '3', .mode = 0666, .major = 1, .minor = 3});
  tar.add(Header{.name = "dev/sda", .type = '4', .mode = 0660, .major = 8, .minor = 0});
  tar.add(Header{.name = "run/fifo", .type = '6', .mode = 01644});
  tar.file("big", std::string(1000, 'x'));
  auto archive = tar.end().str();

  auto entries = read_all(archive);
  ASSERT_EQ(entries.size(), 8u);
  EXPECT_EQ(entries[0].path, "etc/");
  EXPECT_EQ(entries[0].type, EntryType::kDir);
  EXPECT_EQ(entries[0].mode, 0755u);
  EXPECT_EQ(entries[0].uid, 1u);
  EXPECT_EQ(entries[0].gid, 2u);
  EXPECT_EQ(entries[0].mtime, 1704067200);
  EXPECT_EQ(entries[1].type, EntryType::kFile);
  EXPECT_EQ(entries[1].mode, 04755u);
  EXPECT_EQ(archive.substr(entries[1].offset, entries[1].size), "hello\n");
  EXPECT_EQ(entries[2].type, EntryType::kSymlink);
  EXPECT_EQ(entries[2].link, "../bin/busybox");
  EXPECT_EQ(entries[3].type, EntryType::kHardlink);
  EXPECT_EQ(entries[3].link, "etc/hello");
  EXPECT_EQ(entries[4].type, EntryType::kChar);
  EXPECT_EQ(entries[4].dev_major, 1u);
  EXPECT_EQ(entries[4].dev_minor, 3u);
  EXPECT_EQ(entries[5].type, EntryType::kBlock);
  EXPECT_EQ(entries[5].dev_major, 8u);
  EXPECT_EQ(entries[6].type, EntryType::kFifo);
  EXPECT_EQ(entries[6].mode, 01644u);
  EXPECT_EQ(archive.substr(entries[7].offset, entries[7].size), std::string(1000, 'x'));
}

TEST(TarReader, PaxRecordsOverrideTheHeader) {
  std::string long_name(300, 'n');
  TarBuilder tar;
  tar.pax({{"path", "dir/" + long_name},
           {"uid", "4000000000"},
           {"gid", "70000"},
           {"mtime", "1704067200.123456789"},
           {"SCHILY.xattr.user.b", "2"},
           {"SCHILY.xattr.security.capability", std::string("\x01\0\x02", 3)},
           {"uname", "ignored"}});
  tar.file("short", "data");
  tar.pax({{"linkpath", "/target/" + long_name}});
  tar.add(Header{.name = "link", .type = '2', .link = "short"});
  tar.file("after", "no pax here");
  auto archive = tar.end().str();

  auto entries = read_all(archive);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].path, "dir/" + long_name);
  EXPECT_EQ(entries[0].uid, 4000000000u);
  EXPECT_EQ(entries[0].gid, 70000u);
  EXPECT_EQ(entries[0].mtime_nsec, 123456789u);
  ASSERT_EQ(entries[0].xattrs.size(), 2u);
  EXPECT_EQ(entries[0].xattrs[0].first, "security.capability");
  EXPECT_EQ(entries[0].xattrs[0].second, std::string("\x01\0\x02", 3));
  EXPECT_EQ(entries[0].xattrs[1], std::make_pair(std::string("user.b"), std::string("2")));
  EXPECT_EQ(archive.substr(entries[0].offset, entries[0].size), "data");
  EXPECT_EQ(entries[1].link, "/target/" + long_name);
  EXPECT_EQ(entries[2].path, "after");
  EXPECT_TRUE(entries[2].xattrs.empty());
}

TEST(TarReader, PaxSizeAndNegativeFractionalTime) {
  TarBuilder tar;
  tar.pax({{"size", "5"}, {"mtime", "-1.25"}});
  Header h{.name = "f", .size = 0};
  tar.raw(TarBuilder::header_block(h)).raw(std::string("12345") + std::string(507, '\0'));
  auto entries = read_all(tar.end().str());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].size, 5u);
  EXPECT_EQ(entries[0].mtime, -2);
  EXPECT_EQ(entries[0].mtime_nsec, 750000000u);
}

TEST(TarReader, GnuLongNamesAndLinks) {
  std::string name(200, 'a'), target(150, 'b');
  TarBuilder tar;
  tar.gnu_long('L', name).gnu_long('K', target);
  tar.add(Header{.name = "truncated", .type = '1', .link = "trunc", .gnu = true});
  auto entries = read_all(tar.end().str());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].path, name);
  EXPECT_EQ(entries[0].link, target);
}

TEST(TarReader, RepeatedGnuLongNamesTheLastWins) {
  TarBuilder tar;
  tar.gnu_long('L', std::string(120, 'x')).gnu_long('L', "second/" + std::string(110, 'y'));
  tar.add(Header{.name = "short", .gnu = true}, "data");
  auto archive = tar.end().str();
  auto entries = read_all(archive);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].path, "second/" + std::string(110, 'y'));
  EXPECT_EQ(archive.substr(entries[0].offset, entries[0].size), "data");
}

TEST(TarReader, UstarPrefixAndBase256Ids) {
  TarBuilder ok;
  ok.add(
      Header{.name = "name", .uid = 70000, .gid = 5, .prefix = "some/prefix", .base256_ids = true},
      "x");
  auto entries = read_all(ok.end().str());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].path, "some/prefix/name");
  EXPECT_EQ(entries[0].uid, 70000u);
}

TEST(TarReader, HeaderOnlyTypesHaveNoData) {
  TarBuilder tar;
  // A directory claiming 512 bytes of data: Go's reader (and so umoci) skips none.
  tar.add(Header{.name = "d", .type = '5', .size = 512});
  tar.file("f", "after");
  auto entries = read_all(tar.end().str());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].size, 0u);
  EXPECT_EQ(entries[1].path, "f");
}

TEST(TarReader, OldRegularTypeWithSlashIsADirectory) {
  TarBuilder tar;
  tar.add(Header{.name = "old/", .type = '\0'});
  tar.add(Header{.name = "oldfile", .type = '\0'}, "z");
  auto entries = read_all(tar.end().str());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].type, EntryType::kDir);
  EXPECT_EQ(entries[1].type, EntryType::kFile);
  EXPECT_EQ(entries[1].size, 1u);
}

TEST(TarReader, GlobalHeadersVolumesAndDumpdirsAndUnknownTypes) {
  TarBuilder tar;
  tar.add(Header{.name = "global", .type = 'g'}, TarBuilder::record("comment", "x"));
  tar.add(Header{.name = "label", .type = 'V', .gnu = true});
  // GNU incremental: a directory whose data is the list of its names.
  tar.add(Header{.name = "inc/", .type = 'D', .mode = 0710, .uid = 7, .gnu = true},
          std::string("Yfile\0Nother\0\0", 15));
  // POSIX: an unknown type is read as a regular file.
  tar.add(Header{.name = "vendor", .type = 'Z'}, "vendor data");
  tar.file("kept", "k");
  auto archive = tar.end().str();
  auto entries = read_all(archive);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].path, "inc/");
  EXPECT_EQ(entries[0].type, EntryType::kDir);
  EXPECT_EQ(entries[0].mode, 0710u);
  EXPECT_EQ(entries[0].uid, 7u);
  EXPECT_EQ(entries[1].path, "vendor");
  EXPECT_EQ(entries[1].type, EntryType::kFile);
  EXPECT_EQ(archive.substr(entries[1].offset, entries[1].size), "vendor data");
  EXPECT_EQ(entries[2].path, "kept");
  EXPECT_EQ(archive.substr(entries[2].offset, entries[2].size), "k");
}

// Writes `archive` to a temporary file and returns it open.
int open_archive(const std::string& archive) {
  char path[] = "/tmp/regfs-tar-test-XXXXXX";
  int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::unlink(path);
  EXPECT_EQ(::write(fd, archive.data(), archive.size()), static_cast<ssize_t>(archive.size()));
  return fd;
}

std::string read_range(int fd, const TarEntry& e, uint64_t offset, size_t size) {
  std::string out(size, '?');
  out.resize(read_entry_data(fd, e, offset, out.data(), size));
  return out;
}

TEST(TarReader, SparseFilesOfEveryKindReadWithHolesAsZeros) {
  uint64_t real = 3 * 1024 * 1024;
  std::vector<TarBuilder::Run> runs = {{4096, std::string(1000, 'a')},
                                       {1024 * 1024, std::string(5000, 'b')},
                                       {real - 10, std::string(10, 'c')}};
  std::string expected(real, '\0');
  for (const auto& r : runs) expected.replace(r.offset, r.data.size(), r.data);
  TarBuilder tar;
  tar.sparse_pax10("dir/pax10", real, runs);
  tar.sparse_oldgnu("dir/oldgnu", real, runs);
  tar.sparse_pax10("dir/allhole", 8192, {});
  tar.file("after", "tail");
  auto archive = tar.end().str();
  auto entries = read_all(archive, 4096);
  ASSERT_EQ(entries.size(), 4u);
  int fd = open_archive(archive);
  for (int i = 0; i < 2; ++i) {
    const auto& e = entries[i];
    EXPECT_EQ(e.path, i == 0 ? "dir/pax10" : "dir/oldgnu");
    EXPECT_EQ(e.type, EntryType::kFile);
    EXPECT_EQ(e.size, real);
    EXPECT_TRUE(e.sparse);
    ASSERT_EQ(e.segments.size(), 3u);
    EXPECT_EQ(e.segments[1].offset, 1024u * 1024);
    EXPECT_EQ(e.segments[1].length, 5000u);
    EXPECT_EQ(read_range(fd, e, 0, real), expected);
    // Random access: across a hole and a run, and past the end.
    EXPECT_EQ(read_range(fd, e, 4000, 200), expected.substr(4000, 200));
    EXPECT_EQ(read_range(fd, e, 1024 * 1024 + 4990, 100), expected.substr(1024 * 1024 + 4990, 100));
    EXPECT_EQ(read_range(fd, e, real - 5, 100), "ccccc");
    EXPECT_EQ(read_range(fd, e, real, 100), "");
  }
  EXPECT_EQ(entries[2].size, 8192u);
  EXPECT_TRUE(entries[2].sparse);
  EXPECT_EQ(read_range(fd, entries[2], 0, 9000), std::string(8192, '\0'));
  EXPECT_FALSE(entries[3].sparse);
  EXPECT_EQ(read_range(fd, entries[3], 1, 10), "ail");
  ::close(fd);
}

TEST(TarReader, PaxNamesAreUtf8AndGnuNamesRawBytes) {
  TarBuilder tar;
  tar.pax({{"path", "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac"}}).file("x", "1");
  tar.gnu_long('L', "latin1-\xe9");
  tar.file("truncated", "2");
  tar.add(Header{.name = "raw-\xff"}, "3");
  // Go's archive/tar puts a name that is not UTF-8 in a PAX record as it is.
  tar.pax({{"path", "go-latin1-\xe9"}, {"linkpath", "target-\xe9"}});
  tar.add(Header{.name = "x", .type = '2', .link = "x"});
  auto entries = read_all(tar.end().str());
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[3].path, "go-latin1-\xe9");
  EXPECT_EQ(entries[3].link, "target-\xe9");
  EXPECT_EQ(entries[0].path, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac");
  EXPECT_EQ(entries[1].path, "latin1-\xe9");
  EXPECT_EQ(entries[2].path, "raw-\xff");
}

TEST(TarReader, SkipsEntriesItCannotReadAndKeepsTheRest) {
  TarBuilder tar;
  tar.add(Header{.name = "p", .type = 'x'}, "99 path=x\n");  // a malformed PAX record
  tar.file("bad", "skipped");
  tar.add(Header{.name = "big-uid", .uid = 1ull << 40, .base256_ids = true}, "x");
  tar.file("good", "kept");
  auto entries = read_all(tar.end().str());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].path, "good");
}

TEST(TarReader, EndsWithOrWithoutZeroBlocks) {
  TarBuilder a;
  a.file("x", "1");
  EXPECT_EQ(read_all(a.str()).size(), 1u);  // no end marker at all
  TarBuilder b;
  b.file("x", "1").raw(std::string(512, '\0'));
  EXPECT_EQ(read_all(b.str()).size(), 1u);  // one zero block
  EXPECT_TRUE(read_all("").empty());        // an empty layer
  EXPECT_TRUE(read_all(std::string(10240, '\0')).empty());
}

TEST(TarReader, RefusesHostileArchives) {
  TarBuilder good;
  good.file("x", "hello");
  std::string archive = good.str();

  std::string bad_checksum = archive;
  bad_checksum[0] = 'y';
  expect_invalid(bad_checksum);

  expect_invalid(archive.substr(0, 300));  // truncated header
  expect_invalid(archive.substr(0, 514));  // truncated data

  TarBuilder absurd;  // an 8 GiB file in a tiny archive
  absurd.add(Header{.name = "huge", .size = 077777777777ull}, "tiny");
  expect_invalid(absurd.str());

  TarBuilder pax_too_big;
  pax_too_big.add(Header{.name = "p", .type = 'x', .size = (1u << 20) + 1});
  expect_invalid(pax_too_big.str());

  expect_invalid("this is not a tar archive at all, nor empty" + std::string(600, 'x'));

  // Entries behind a lone zero block: some readers stop there, Go's refuses.
  TarBuilder zero_then_header;
  zero_then_header.file("a", "1").raw(std::string(512, '\0')).file("x", "1");
  expect_invalid(zero_then_header.str());
  TarBuilder zero_first;
  zero_first.raw(std::string(512, '\0')).file("x", std::string(70000, 'x')).end();
  expect_invalid(zero_first.str());

  Header bad_octal{.name = "x"};
  auto block = TarBuilder::header_block(bad_octal);
  block[124] = '9';  // not octal; checksum now wrong too, so fix it up
  std::memset(&block[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : block) sum += c;
  std::snprintf(&block[148], 8, "%06o", sum);
  expect_invalid(block);
}

TEST(TarReader, MutatedArchivesNeverCrash) {
  TarBuilder tar;
  tar.pax({{"path", std::string(150, 'p')}, {"SCHILY.xattr.user.x", "v"}});
  tar.file("a", "alpha");
  tar.gnu_long('L', std::string(120, 'l'));
  tar.file("b", std::string(700, 'b'));
  tar.add(Header{.name = "c", .type = '2', .link = "a"});
  std::string archive = tar.end().str();
  std::mt19937 rng(42);
  for (int round = 0; round < 3000; ++round) {
    std::string mutated = archive;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      mutated[rng() % mutated.size()] = static_cast<char>(rng());
    }
    if (rng() % 4 == 0) mutated.resize(rng() % mutated.size());
    try {
      for (const auto& e : read_all(mutated, 1 + rng() % 1000)) {
        if (!e.sparse) {
          EXPECT_LE(e.offset + e.size, mutated.size());
        }
        for (const auto& s : e.segments) EXPECT_LE(s.data + s.length, mutated.size());
      }
    } catch (const registry::Error& e) {
      EXPECT_EQ(e.kind(), registry::ErrorKind::kInvalid);
    }
  }
}

TEST(CleanPath, ConfinesToTheRoot) {
  EXPECT_EQ(clean_path("../x"), "x");
  EXPECT_EQ(clean_path("/x"), "x");
  EXPECT_EQ(clean_path("a/../../b"), "b");
  EXPECT_EQ(clean_path("../../../etc/passwd"), "etc/passwd");
  EXPECT_EQ(clean_path("./"), "");
  EXPECT_EQ(clean_path("."), "");
  EXPECT_EQ(clean_path("/"), "");
  EXPECT_EQ(clean_path("a//b/./c/"), "a/b/c");
  EXPECT_EQ(clean_path("a/b/.."), "a");
  EXPECT_EQ(clean_path("..a/b.."), "..a/b..");
}

}  // namespace
}  // namespace regfs::cache

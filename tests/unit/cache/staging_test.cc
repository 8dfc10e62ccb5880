// The staging area: paths, namespaces and tags on disk, state persistence
// across instances (a remount; a push in flight included), the push lock
// shared by instances (mounts of one cache directory), no state for a
// discarded tag, tag-to-namespace promotion, and the write hasher (in-order
// writes hashed as written; anything else asks for a rehash).
#include "cache/staging.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "registry/core/digest.h"

namespace regfs::cache {
namespace {

namespace fsys = std::filesystem;

class StagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-staging-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fsys::remove_all(dir_); }
  fsys::path dir_;
};

TEST_F(StagingTest, TagsNamespacesAndStateSurviveReopen) {
  StagedTag tag{"localhost:5000", "team/app", "v1"};
  {
    StagingArea area(dir_ / "staging");
    area.make_namespace("localhost:5000", "team");
    area.make_tag(tag);
    EXPECT_TRUE(area.has_tag(tag));
    EXPECT_EQ(area.tag_dir(tag), dir_ / "staging/localhost:5000/team/app/@v1");
    std::ofstream(area.file(tag, "index.json")) << "{}";
    area.update_state(tag, [](StagedTagState& s) {
      s.modes["index.json"] = 0444;
      s.references["blobs/sha256/x"] = {"r", "a/b", registry::sha256_digest("x"), 1};
      s.error = "denied";
    });
  }
  StagingArea area(dir_ / "staging");
  EXPECT_EQ(area.child_namespaces("localhost:5000", ""), std::vector<std::string>{"team"});
  EXPECT_EQ(area.child_namespaces("localhost:5000", "team"), std::vector<std::string>{"app"});
  EXPECT_EQ(area.tags("localhost:5000", "team/app"), std::vector<std::string>{"v1"});
  auto state = area.state(tag);
  EXPECT_EQ(state.modes.at("index.json"), 0444u);
  EXPECT_EQ(state.references.at("blobs/sha256/x").repository, "a/b");
  EXPECT_EQ(state.error, "denied");
  auto all = area.all_tags();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].repository, "team/app");
  area.discard_tag(tag);
  EXPECT_FALSE(area.has_tag(tag));
  EXPECT_TRUE(area.state(tag).modes.empty());
  EXPECT_TRUE(area.remove_namespace("localhost:5000", "team/app"));
}

TEST_F(StagingTest, PushInFlightSurvivesReopenAndDiscardedTagsKeepNoState) {
  StagedTag tag{"r", "ns/app", "v1"};
  {
    StagingArea area(dir_ / "staging");
    area.make_tag(tag);
    area.update_state(tag, [](StagedTagState& s) {
      s.pushed_digest = registry::sha256_digest("old");
      s.pushing = registry::sha256_digest("new");
      s.uploads[registry::sha256_digest("blob")] = {"http://r/v2/ns/app/blobs/uploads/u?_state=x",
                                                    5 << 20, 8 << 20};
      s.uploads["not-a-digest"] = {"http://r/x", 1, 2};
    });
  }  // as if the daemon died mid-push
  StagingArea area(dir_ / "staging");
  EXPECT_EQ(area.state(tag).pushing, registry::sha256_digest("new"));
  // Its upload sessions too, for the next push to resume.
  auto uploads = area.state(tag).uploads;
  ASSERT_EQ(uploads.size(), 1u);
  const auto& session = uploads.at(registry::sha256_digest("blob"));
  EXPECT_EQ(session.url, "http://r/v2/ns/app/blobs/uploads/u?_state=x");
  EXPECT_EQ(session.offset, 5u << 20);
  EXPECT_EQ(session.size, 8u << 20);
  EXPECT_EQ(area.state(tag).pushed_digest, registry::sha256_digest("old"));
  // A push that ends after its tag was discarded leaves no state behind.
  area.discard_tag(tag);
  area.update_state(tag, [](StagedTagState& s) { s.error = "late"; });
  EXPECT_FALSE(fsys::exists(dir_ / "staging/r/ns/app/%v1.json"));
  area.make_tag(tag);
  EXPECT_TRUE(area.state(tag).error.empty());
  EXPECT_TRUE(area.state(tag).pushing.empty());
}

TEST_F(StagingTest, PushLockIsSharedByMountsAndRereadsTheState) {
  StagedTag tag{"localhost:5000", "app", "v1"};
  StagingArea first(dir_ / "staging");
  StagingArea second(dir_ / "staging");  // another mount of the same cache
  first.make_tag(tag);
  EXPECT_TRUE(second.state(tag).pushed_digest.empty());  // read, and kept in memory

  auto held = first.lock_push(tag);
  ASSERT_TRUE(held);
  std::atomic<bool> second_has_it = false;
  std::thread waiter([&] {
    auto lock = second.lock_push(tag);
    second_has_it = true;
    EXPECT_EQ(second.state(tag).pushed_digest, "sha256:abc") << "read again from disk";
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(second_has_it) << "one mount at a time";
  first.update_state(tag, [](StagedTagState& s) { s.pushed_digest = "sha256:abc"; });
  held.reset();
  waiter.join();
  EXPECT_TRUE(second_has_it);

  first.discard_tag(tag);
  EXPECT_FALSE(first.lock_push(tag)) << "a tag no longer staged";
}

// Per-path changes (a cp of many files) are appended to the journal; the
// state read again is the same, removals included.
TEST_F(StagingTest, PerPathChangesAreJournaledAndSurviveReopen) {
  StagedTag tag{"r", "app", "v1"};
  StagedTagState expected;
  {
    StagingArea area(dir_ / "staging");
    area.make_tag(tag);
    for (int i = 0; i < 3000; ++i) {
      std::string path = "dir/file" + std::to_string(i);
      area.update_state(tag, [&](StagedTagState& s) { s.modes[path] = 0755; });
      if (i % 3 == 0) {
        area.update_state(tag, [&](StagedTagState& s) { s.xattrs[path]["user.n"] = "\x01\xff"; });
      }
      if (i % 7 == 0) {
        area.update_state(tag, [&](StagedTagState& s) {
          s.rootfs.entries[path] = RootfsEntryMeta{0600, 1, 2, {{"user.a", "b"}}};
        });
      }
    }
    area.update_state(tag, [](StagedTagState& s) {
      s.modes.erase("dir/file1");
      s.xattrs.erase("dir/file3");
      s.rootfs.entries.erase("dir/file7");
      s.references["blobs/x"] = {"r", "a", registry::sha256_digest("x"), 1};
    });
    expected = area.state(tag);
  }
  EXPECT_EQ(expected.modes.size(), 2999u);
  EXPECT_FALSE(expected.xattrs.contains("dir/file3"));
  auto journal = dir_ / "staging/r/app/%v1.journal";
  auto document = dir_ / "staging/r/app/%v1.json";
  ASSERT_TRUE(fsys::exists(document)) << "the journal outgrew its limit and was folded in";
  EXPECT_LE(fsys::exists(journal) ? fsys::file_size(journal) : 0,
            std::max<uintmax_t>(fsys::file_size(document), 64 << 10));
  StagingArea area(dir_ / "staging");
  auto state = area.state(tag);
  EXPECT_EQ(state.modes, expected.modes);
  EXPECT_EQ(state.xattrs, expected.xattrs);
  EXPECT_EQ(state.rootfs, expected.rootfs);
  EXPECT_EQ(state.references, expected.references);
}

// Changes of one path at a time, made in place: the same journal and the
// same state read again as whole-state changes give; a change that throws
// leaves the path as it was; whiteouts (no journal line) rewrite the document.
TEST_F(StagingTest, PathChangesAreMadeInPlaceAndSurviveReopen) {
  StagedTag tag{"r", "app", "v1"};
  StagedTagState expected;
  {
    StagingArea area(dir_ / "staging");
    area.make_tag(tag);
    for (int i = 0; i < 2000; ++i) {
      std::string path = "dir/file" + std::to_string(i);
      area.update_path_state_if(tag, path, [&](StagedTagState& s) {
        s.modes[path] = 0755;
        if (i % 3 == 0) s.xattrs[path]["user.n"] = "v";
        if (i % 7 == 0) s.rootfs.entries[path] = RootfsEntryMeta{0600, 1, 2, {}};
        return true;
      });
    }
    area.update_path_state_if(tag, "dir/file1",
                              [](StagedTagState& s) { return s.modes.erase("dir/file1") > 0; });
    area.update_path_state_if(tag, "dir/file2", [](StagedTagState&) { return false; });
    EXPECT_THROW(area.update_path_state_if(tag, "dir/file3",
                                           [](StagedTagState& s) -> bool {
                                             s.modes["dir/file3"] = 0700;
                                             s.xattrs.erase("dir/file3");
                                             throw std::runtime_error("failed midway");
                                           }),
                 std::runtime_error);
    area.read_state(tag, [](const StagedTagState& s) {
      EXPECT_EQ(s.modes.at("dir/file3"), 0755u);
      EXPECT_EQ(s.xattrs.at("dir/file3").at("user.n"), "v");
    });
    area.update_path_state_if(tag, "dir/gone", [](StagedTagState& s) {
      s.rootfs.whiteouts.insert("dir/gone");
      return true;
    });
    expected = area.state(tag);
  }
  EXPECT_EQ(expected.modes.size(), 1999u);
  EXPECT_EQ(expected.rootfs.whiteouts.count("dir/gone"), 1u);
  StagingArea area(dir_ / "staging");
  auto state = area.state(tag);
  EXPECT_EQ(state.modes, expected.modes);
  EXPECT_EQ(state.xattrs, expected.xattrs);
  EXPECT_EQ(state.rootfs, expected.rootfs);
}

// A crash mid-append leaves a torn line; a crash right after a rewrite
// leaves lines of the older document: both are ignored.
TEST_F(StagingTest, ATornOrOutdatedJournalLineIsIgnored) {
  StagedTag tag{"r", "app", "v1"};
  auto journal = dir_ / "staging/r/app/%v1.journal";
  {
    StagingArea area(dir_ / "staging");
    area.make_tag(tag);
    area.update_state(tag, [](StagedTagState& s) { s.modes["a"] = 0700; });
    area.update_state(tag, [](StagedTagState& s) { s.modes["b"] = 0700; });
    ASSERT_TRUE(fsys::exists(journal));
    std::ofstream(journal, std::ios::app) << R"({"modes":{"c":)";
  }
  {
    StagingArea area(dir_ / "staging");
    auto state = area.state(tag);
    EXPECT_EQ(state.modes, (std::map<std::string, uint32_t>{{"a", 0700}, {"b", 0700}}));
  }
  fsys::copy_file(journal, dir_ / "old-journal");
  {
    StagingArea area(dir_ / "staging");
    // Not a per-path change: the document is rewritten, the journal dropped.
    area.update_state(tag, [](StagedTagState& s) {
      s.error = "denied";
      s.modes.erase("a");
    });
    EXPECT_FALSE(fsys::exists(journal));
  }
  fsys::copy_file(dir_ / "old-journal", journal);  // as if the removal never happened
  StagingArea area(dir_ / "staging");
  auto state = area.state(tag);
  EXPECT_EQ(state.error, "denied");
  EXPECT_EQ(state.modes, (std::map<std::string, uint32_t>{{"b", 0700}}));
}

TEST_F(StagingTest, EmptyTagBecomesNamespace) {
  StagingArea area(dir_ / "staging");
  StagedTag tag{"r", "ns", "app"};
  area.make_tag(tag);
  area.tag_to_namespace(tag);
  EXPECT_FALSE(area.has_tag(tag));
  EXPECT_TRUE(area.has_namespace("r", "ns/app"));
}

TEST(WriteHasher, InOrderWritesAreHashedAsWritten) {
  WriteHasher hasher;
  hasher.wrote(0, "hello ", 6);
  hasher.wrote(6, "world", 5);
  EXPECT_EQ(hasher.digest(11), registry::sha256_digest("hello world"));
  WriteHasher gap;
  gap.wrote(0, "ab", 2);
  gap.wrote(4, "cd", 2);
  EXPECT_EQ(gap.digest(6), std::nullopt);
  WriteHasher truncated;
  truncated.wrote(0, "junk", 4);
  truncated.truncated(0);
  truncated.wrote(0, "x", 1);
  EXPECT_EQ(truncated.digest(1), registry::sha256_digest("x"));
  WriteHasher short_file;
  short_file.wrote(0, "abc", 3);
  EXPECT_EQ(short_file.digest(4), std::nullopt);
}

TEST_F(StagingTest, HashFile) {
  std::ofstream(dir_ / "f") << "content";
  EXPECT_EQ(hash_file(dir_ / "f"), registry::sha256_digest("content"));
}

TEST_F(StagingTest, TheUpperDirectoryOfARootfsIsNoNamespaceAndGoesWithItsTag) {
  StagingArea area(dir_ / "staging");
  StagedTag tag{"localhost:5000", "team/app", "v1"};
  area.make_tag(tag);
  fsys::create_directories(area.upper_dir(tag) / "etc");
  EXPECT_EQ(area.child_namespaces("localhost:5000", "team/app"), std::vector<std::string>{});
  EXPECT_FALSE(area.has_namespace("localhost:5000", "team/app/%v1.upper"));
  std::ofstream(area.upper_dir(tag) / "etc/@x") << "x";
  fsys::create_directories(area.upper_dir(tag) / "@y");
  EXPECT_EQ(area.all_tags().size(), 1u);  // nothing in it is taken for a tag
  area.update_state(tag, [](StagedTagState& s) {
    s.rootfs.whiteouts.insert("etc/motd");
    s.rootfs.opaque.insert("usr/share");
    s.rootfs.entries["etc"] = RootfsEntryMeta{0750, 7, 8, {{"user.a", std::string("\0b", 2)}}};
  });
  StagingArea again(dir_ / "staging");
  auto state = again.state(tag);
  EXPECT_EQ(state.rootfs.whiteouts, std::set<std::string>{"etc/motd"});
  EXPECT_EQ(state.rootfs.opaque, std::set<std::string>{"usr/share"});
  EXPECT_EQ(state.rootfs.entries.at("etc"),
            (RootfsEntryMeta{0750, 7, 8, {{"user.a", std::string("\0b", 2)}}}));
  again.discard_tag(tag);
  EXPECT_FALSE(fsys::exists(again.upper_dir(tag)));
}

}  // namespace
}  // namespace regfs::cache

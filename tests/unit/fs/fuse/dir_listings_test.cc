#include "fs/fuse/dir_listings.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <stdexcept>

namespace regfs::fs {
namespace {

bool operator==(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

NodePtr entry(const std::string& name) {
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::kImage;
  n->name = name;
  n->reference = name;
  return n;
}

NodePtr repo(const std::string& key) {
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::kNamespace;
  n->key = key;
  return n;
}

// A lister answering from a map of names by key, or failing when asked to.
struct FakeLister {
  std::map<std::string, std::vector<std::string>> names;
  bool fail = false;
  int calls = 0;
  DirListings::Lister lister() {
    return [this](const Node& dir) {
      ++calls;
      if (fail) throw std::runtime_error("registry unreachable");
      std::vector<NodePtr> out;
      for (const auto& name : names[dir.key]) out.push_back(entry(name));
      return out;
    };
  }
};

TEST(DirListings, UnlistedDirectoryGetsANewMtimeAtEveryAnswerAndIsNotListed) {
  FakeLister fake;
  DirListings listings(fake.lister());
  auto dir = repo("r/app");
  auto first = listings.mtime(*dir);
  auto second = listings.mtime(*dir);
  EXPECT_FALSE(first == second);
  EXPECT_EQ(fake.calls, 0) << "an unlisted repository is not listed for its attributes";
}

TEST(DirListings, ListedDirectoryKeepsItsMtimeUntilItsListingChanges) {
  FakeLister fake;
  fake.names["r/app"] = {"v1", "v2"};
  DirListings listings(fake.lister());
  auto dir = repo("r/app");
  auto before_listing = listings.mtime(*dir);
  EXPECT_EQ(listings.list(7, *dir, 0)->size(), 2u);
  auto stamp = listings.mtime(*dir);
  EXPECT_FALSE(stamp == before_listing);
  EXPECT_TRUE(listings.mtime(*dir) == stamp) << "same listing, same mtime";

  fake.names["r/app"].push_back("v3");
  auto changed = listings.mtime(*dir);
  EXPECT_FALSE(changed == stamp) << "a new tag changes the mtime";
  EXPECT_TRUE(listings.mtime(*dir) == changed);

  fake.names["r/app"].pop_back();
  EXPECT_FALSE(listings.mtime(*dir) == changed) << "and so does a tag going away";
}

// A repository r/app with tag v1, listed once (so its mtime is stamped).
struct ListedRepo {
  FakeLister fake;
  DirListings listings{fake.lister()};
  NodePtr dir = repo("r/app");
  timespec stamp{};
  ListedRepo() {
    fake.names["r/app"] = {"v1"};
    listings.list(7, *dir, 0);
    stamp = listings.mtime(*dir);
  }
};

TEST(DirListings, LastMtimeDoesNotListAgain) {
  ListedRepo r;
  auto& [fake, listings, dir, stamp] = r;
  int calls = fake.calls;
  fake.names["r/app"].push_back("v2");
  EXPECT_TRUE(listings.last_mtime(*dir) == stamp) << "an entry's mtime, as last seen";
  EXPECT_EQ(fake.calls, calls);
  EXPECT_FALSE(listings.mtime(*dir) == stamp) << "GETATTR lists it again";
}

TEST(DirListings, FailingListingKeepsTheLastStamp) {
  ListedRepo r;
  auto& [fake, listings, dir, stamp] = r;
  fake.fail = true;
  EXPECT_TRUE(listings.mtime(*dir) == stamp);
  EXPECT_THROW(listings.list(7, *dir, 0), std::runtime_error);
}

TEST(DirListings, ImmutableDirectoryIsNeverStamped) {
  FakeLister fake;
  auto dir = std::make_shared<Node>();
  dir->kind = NodeKind::kBlobsAlgDir;
  dir->key = "r/app/sha256:abc/blobs/sha256";
  dir->reference = "sha256:abc";
  ASSERT_TRUE(dir->immutable());
  DirListings listings(fake.lister());
  listings.list(9, *dir, 0);
  EXPECT_EQ(fake.calls, 1);
  listings.mtime(*dir);
  EXPECT_EQ(fake.calls, 1) << "no stamp kept, so nothing listed again";
}

TEST(DirListings, OnePassReadsOneListing) {
  FakeLister fake;
  fake.names["r/app"] = {"a", "b", "c"};
  DirListings listings(fake.lister());
  auto dir = repo("r/app");
  auto pass = listings.list(7, *dir, 0);
  listings.served(7, pass, false);
  fake.names["r/app"] = {"x"};
  EXPECT_EQ(listings.list(7, *dir, 3), pass) << "the rest of the pass, from the same listing";
  listings.served(7, pass, true);
  EXPECT_EQ(listings.list(7, *dir, 3)->size(), 1u) << "a finished pass is not kept";
}

TEST(DirListings, ForgettingStampsIsSafe) {
  FakeLister fake;
  fake.names["a"] = {"1"};
  fake.names["b"] = {"1"};
  DirListings listings(fake.lister(), /*max_entries=*/1);
  auto a = repo("a");
  auto b = repo("b");
  listings.list(1, *a, 0);
  auto stamp_a = listings.mtime(*a);
  listings.list(2, *b, 0);  // the table is full: a's stamp is forgotten
  auto after = listings.mtime(*a);
  EXPECT_FALSE(after == stamp_a) << "a forgotten stamp never answers with an old mtime";
}

}  // namespace
}  // namespace regfs::fs

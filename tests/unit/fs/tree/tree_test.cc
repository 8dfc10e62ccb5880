// The tree's names without FUSE and without a network, on a fake source
// (fake_source.h): registries with and without a catalog (Docker Hub's
// rules, fs/tree/known_names.h), tags and digest directories, errors of the
// source as the tree passes them on, and staged names (fs/tree/names.h)
// among a namespace's.
#include "fs/tree/tree.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "fake_source.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

using testing::FakeRegistry;
using testing::FakeTree;
using Set = std::set<std::string>;
using registry::ErrorKind;

constexpr const char* kRegistry = "reg.test:5000";

// A registry with a catalog: app (v1, v2), lib/base (1), team/tools/cli
// (latest), and app's tag "sub" beside a repository app/sub.
class TreeTest : public ::testing::Test {
 protected:
  TreeTest() : fake_(kRegistry), reg_(fake_.source.add(kRegistry)) {
    auto image = reg_.put_image({});
    digest_ = image.digest;
    for (auto tag : {"v1", "v2"}) reg_.put_tag("app", tag, digest_);
    reg_.put_tag("lib/base", "1", digest_);
    reg_.put_tag("team/tools/cli", "latest", digest_);
  }
  NodePtr at(const std::string& path) { return fake_.at(path); }
  NodePtr must(const std::string& path) { return fake_.must(path); }
  Set names(const Node& dir) { return fake_.names(dir); }
  Tree& tree() { return *fake_.tree; }

  FakeTree fake_;
  FakeRegistry& reg_;
  std::string digest_;
};

TEST_F(TreeTest, TheRegistryRootListsTheCatalogsFirstComponents) {
  EXPECT_EQ(tree().root()->kind, NodeKind::kNamespace);
  EXPECT_EQ(names(*tree().root()), (Set{"app", "lib", "team"}));
  EXPECT_TRUE(S_ISDIR(tree().attr(*tree().root()).mode));
}

TEST_F(TreeTest, NamespacesAndRepositoriesAreLookedUpByPath) {
  auto lib = at("lib");
  ASSERT_NE(lib, nullptr);
  EXPECT_EQ(lib->kind, NodeKind::kNamespace);
  EXPECT_EQ(lib->path, "lib");
  EXPECT_EQ(names(*lib), Set{"base"});
  auto base = at("lib/base");
  ASSERT_NE(base, nullptr);
  EXPECT_EQ(base->path, "lib/base");
  EXPECT_EQ(base->key, "lib/base");
  EXPECT_EQ(at("nothing"), nullptr);
  EXPECT_EQ(must("team/tools")->path, "team/tools");
  EXPECT_EQ(names(*must("team/tools")), Set{"cli"});
  EXPECT_EQ(at("team/tool"), nullptr) << "a prefix of a name is no name";
}

TEST_F(TreeTest, ARepositoryListsItsTags) {
  auto app = at("app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(names(*app), (Set{"v1", "v2"}));
  for (auto& node : tree().list(*app)) {
    EXPECT_EQ(node->kind, NodeKind::kImage) << node->name;
    EXPECT_EQ(node->path, "app");
    EXPECT_TRUE(node->is_tag_image());
    EXPECT_FALSE(node->immutable());
  }
}

TEST_F(TreeTest, ATagHidesTheNamespaceOfTheSameName) {
  reg_.put_tag("app", "sub", digest_);
  reg_.put_tag("app/sub", "1", digest_);
  EXPECT_EQ(fake_.listing(*must("app")), (std::vector<std::string>{"sub", "v1", "v2"}));
  EXPECT_EQ(must("app/sub")->kind, NodeKind::kImage);
}

TEST_F(TreeTest, ATagMissingFromTheListIsAskedByItsManifest) {
  EXPECT_EQ(at("app/new"), nullptr);
  EXPECT_EQ(reg_.calls("resolve app:new"), 1) << "HEAD of the manifest before ENOENT";
  EXPECT_EQ(must("app/v1")->kind, NodeKind::kImage);
  EXPECT_EQ(reg_.calls("resolve app:v1"), 0) << "in the tag list: nothing asked";
}

TEST_F(TreeTest, DigestDirectoriesAreImmutableImages) {
  auto node = at("app/" + digest_);
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->kind, NodeKind::kImage);
  EXPECT_FALSE(node->is_tag_image());
  EXPECT_TRUE(node->immutable());
  EXPECT_EQ(names(*must("app")).count(digest_), 0u) << "digest directories are not listed";
  EXPECT_EQ(FakeTree::kind_thrown([&] { at("app/sha256:" + std::string(64, '0')); }),
            ErrorKind::kNotFound);
  EXPECT_EQ(at("app/sha256:xyz"), nullptr);
  EXPECT_EQ(at(digest_), nullptr) << "no image at the registry's root";
}

TEST_F(TreeTest, TheControlDirectoryIsThereButUnlisted) {
  auto control = at(std::string(kControlDirName));
  ASSERT_NE(control, nullptr);
  EXPECT_EQ(control->kind, NodeKind::kControlDir);
  EXPECT_EQ(names(*tree().root()).count(std::string(kControlDirName)), 0u);
  auto status = tree().lookup(*control, "status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(status->kind, NodeKind::kStatusFile);
  EXPECT_EQ(tree().lookup(*control, "other"), nullptr);
}

TEST_F(TreeTest, WithoutAStagedSideANewNameIsAskedOfTheRegistry) {
  // A tree given no staged side (set_staged) shows no staged names: a new
  // name is the registry's to answer, and an unreachable one is an error.
  Tree bare(TreeOptions{kRegistry, testing::kAmd64, {}}, fake_.source);
  auto app = bare.lookup(*bare.root(), "app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(bare.lookup(*app, "new"), nullptr);
  EXPECT_EQ(reg_.calls("resolve app:new"), 1);
  reg_.down = ErrorKind::kUnavailable;
  EXPECT_EQ(FakeTree::kind_thrown([&] { bare.lookup(*app, "new"); }), ErrorKind::kUnavailable);
  EXPECT_EQ(FakeTree::kind_thrown([&] { at("app/new"); }), ErrorKind::kUnavailable);
}

TEST_F(TreeTest, ErrorsOfTheSourceReachTheCaller) {
  reg_.refused = {"app"};
  EXPECT_NE(at("app"), nullptr) << "the catalog names it";
  EXPECT_EQ(FakeTree::kind_thrown([&] { at("app/v1"); }), ErrorKind::kUnauthorized)
      << "a repository known to exist that refuses the read: EACCES, not ENOENT";
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().list(*must("app")); }), ErrorKind::kUnauthorized);
  reg_.down = ErrorKind::kTimeout;
  EXPECT_EQ(FakeTree::kind_thrown([&] { at("lib"); }), ErrorKind::kTimeout);
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().list(*tree().root()); }), ErrorKind::kTimeout);
}

TEST_F(TreeTest, StagedNamesAreAmongANamespacesNames) {
  fake_.staged.tags = {{kRegistry, "app:new"}};
  EXPECT_EQ(names(*must("app")), (Set{"new", "v1", "v2"}));
  auto node = at("app/new");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->kind, NodeKind::kStaged);
  EXPECT_EQ(node->key, "app/new");
  EXPECT_EQ(reg_.calls("resolve app:new"), 0) << "the staged side answers first";
  EXPECT_EQ(at("lib/base/new"), nullptr) << "staged in app only";
  EXPECT_EQ(must("app/v1")->kind, NodeKind::kImage) << "the remote tags stay";
}

TEST_F(TreeTest, AStagedTagShadowsTheRemoteOneOfItsName) {
  fake_.staged.tags = {{kRegistry, "app:v1"}};
  EXPECT_EQ(must("app/v1")->kind, NodeKind::kStaged);
  std::map<std::string, NodeKind> kinds;
  for (auto& node : tree().list(*must("app"))) kinds[node->name] = node->kind;
  EXPECT_EQ(kinds,
            (std::map<std::string, NodeKind>{{"v1", NodeKind::kStaged}, {"v2", NodeKind::kImage}}));
}

TEST_F(TreeTest, StagedNamespacesAreListedWhereTheyWereMade) {
  fake_.staged.namespaces = {{kRegistry, "lib/new"}, {kRegistry, "fresh"}};
  EXPECT_EQ(names(*must("lib")), (Set{"base", "new"}));
  EXPECT_EQ(names(*tree().root()), (Set{"app", "fresh", "lib", "team"}));
  EXPECT_EQ(must("fresh")->kind, NodeKind::kNamespace);
  EXPECT_EQ(must("lib/new")->path, "lib/new");
  EXPECT_EQ(names(*must("app")), (Set{"v1", "v2"}));
}

// A registry that serves no catalog, answering 404 for what it lacks: a
// name stands where something proves it (fs/tree/known_names.h).
class NoCatalogTest : public ::testing::Test {
 protected:
  NoCatalogTest() : fake_(kRegistry), reg_(fake_.source.add(kRegistry)) {
    reg_.serves_catalog = false;
    auto image = reg_.put_image({});
    reg_.put_tag("org/app", "v1", image.digest);
    reg_.put_tag("solo", "1", image.digest);
  }
  FakeTree fake_;
  FakeRegistry& reg_;
};

TEST_F(NoCatalogTest, RepositoriesAreProvenByTheirTags) {
  EXPECT_EQ(fake_.must("org/app")->kind, NodeKind::kNamespace);
  EXPECT_EQ(fake_.names("org/app"), Set{"v1"});
  EXPECT_EQ(fake_.must("org/app/v1")->kind, NodeKind::kImage);
  EXPECT_EQ(fake_.at("org/app/nope"), nullptr) << "a repository holds tags, not namespaces";
  EXPECT_EQ(fake_.names("solo"), Set{"1"});
  EXPECT_TRUE(fake_.tree->is_known_repository(kRegistry, "org/app"));
  EXPECT_FALSE(fake_.tree->is_known_repository(kRegistry, "org"));
}

TEST_F(NoCatalogTest, UnprovenNamesStandOnlyWhereAnAnchorIs) {
  EXPECT_NE(fake_.at("anything"), nullptr) << "under the root any name may be made";
  EXPECT_EQ(fake_.at("anything/deeper"), nullptr) << "an unproven namespace anchors nothing";
  EXPECT_EQ(fake_.at("org/other"), nullptr) << "org is not proven yet";
  fake_.at("org/app");
  EXPECT_NE(fake_.at("org/other"), nullptr) << "org holds a proven repository";
}

TEST_F(NoCatalogTest, ListingsShowWhatIsKnown) {
  EXPECT_EQ(fake_.names(*fake_.tree->root()), Set{});
  fake_.at("org/app");
  EXPECT_EQ(fake_.names(*fake_.tree->root()), Set{"org"});
  EXPECT_EQ(fake_.names("org"), Set{"app"});
}

TEST(NoCatalog, TheCacheAndTheCredentialsNameNamespaces) {
  FakeTree fake(kRegistry);
  auto& reg = fake.source.add(kRegistry);
  reg.serves_catalog = false;
  reg.cached = {"old/repo"};
  fake.source.named[kRegistry] = {"me/work"};
  EXPECT_EQ(fake.names(*fake.tree->root()), (Set{"me", "old"}));
  EXPECT_EQ(fake.names("me"), Set{"work"});
  EXPECT_NE(fake.at("me/work/new"), nullptr) << "a named namespace anchors new names";
  EXPECT_EQ(fake.at("old/repo/new"), nullptr) << "a repository proven before holds tags only";
}

// Docker Hub: no catalog, 401 for a private and for a missing repository
// alike, names `namespace/name`.
class HubTest : public ::testing::Test {
 protected:
  HubTest() : fake_(std::string(registry::kDockerHub)), hub_(fake_.source.add("docker.io")) {
    hub_.serves_catalog = false;
    hub_.refuses_unknown = true;
    auto image = hub_.put_image({});
    hub_.put_tag("library/alpine", "3.19", image.digest);
    hub_.put_tag("someone/tool", "1.0", image.digest);
  }
  FakeTree fake_;
  FakeRegistry& hub_;
};

TEST_F(HubTest, LibraryIsListedAndItsRepositoriesProven) {
  EXPECT_EQ(fake_.names(*fake_.tree->root()), Set{"library"});
  auto library = fake_.at("library");
  ASSERT_NE(library, nullptr);
  EXPECT_EQ(hub_.calls("tags library"), 0) << "a first level is never a repository here";
  EXPECT_EQ(fake_.must("library/alpine")->path, "library/alpine");
  EXPECT_EQ(fake_.names("library/alpine"), Set{"3.19"});
  EXPECT_EQ(fake_.must("library/alpine/3.19")->kind, NodeKind::kImage);
  EXPECT_EQ(fake_.at("library/alpine/deeper"), nullptr) << "nothing below namespace/name";
  EXPECT_EQ(fake_.names("library"), Set{"alpine"});
}

TEST_F(HubTest, ARefusedNameIsNoNameUnlessNamed) {
  fake_.source.named["docker.io"] = {"mine"};  // read at the registry's first lookup
  EXPECT_NE(fake_.at("someone"), nullptr);
  EXPECT_EQ(fake_.at("someone/private"), nullptr) << "401: it may not exist";
  EXPECT_EQ(fake_.must("someone/tool")->kind, NodeKind::kNamespace);
  EXPECT_EQ(fake_.at("someone/other"), nullptr) << "a proven namespace anchors nothing on the Hub";
  EXPECT_NE(fake_.at("mine/private"), nullptr) << "a namespace the credentials name anchors";
}

TEST_F(HubTest, AStagedNamespaceAnchorsNewNames) {
  EXPECT_EQ(fake_.at("newns/repo"), nullptr);
  fake_.staged.namespaces = {{"docker.io", "newns"}};
  auto repo = fake_.at("newns/repo");
  ASSERT_NE(repo, nullptr);
  EXPECT_EQ(repo->kind, NodeKind::kNamespace);
  EXPECT_EQ(repo->path, "newns/repo");
}

// Every registry under one root: registries are named, never listed by
// asking, and one that cannot be reached fails its own lookups only.
TEST(MultiRegistry, TheRootShowsRegistriesInUse) {
  FakeTree fake("", testing::kAmd64, {"listed.test"});
  auto& reg = fake.source.add(kRegistry);
  reg.put_tag("app", "v1", reg.put_image({}).digest);
  EXPECT_EQ(fake.tree->root()->kind, NodeKind::kRoot);
  EXPECT_EQ(fake.names(*fake.tree->root()), (Set{"docker.io", "listed.test", kRegistry}));
  EXPECT_EQ(fake.at("notaregistry"), nullptr);
  auto app = fake.at(std::string(kRegistry) + "/app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->registry, kRegistry);
  EXPECT_EQ(app->key, std::string(kRegistry) + "/app");
  EXPECT_EQ(fake.names(*app), Set{"v1"});
  EXPECT_EQ(FakeTree::kind_thrown([&] { fake.at("down.test/app"); }), ErrorKind::kUnavailable);
  EXPECT_EQ(fake.names(*fake.tree->root()).count("down.test"), 1u) << "in use now";
}

}  // namespace
}  // namespace regfs::fs

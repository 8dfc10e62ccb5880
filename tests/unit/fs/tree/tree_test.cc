// The tree without FUSE and without a registry: a source whose registry is
// down (127.0.0.1:9 refuses connections) and whose cache holds the catalog
// and tag lists the registry gave before, and a fake staged side, so these
// test what Tree makes of names: lookup, listing, and staged names merged
// into a namespace's (fs/tree/names.h).
#include "fs/tree/tree.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "cache/tag_store.h"
#include "fs/source/content.h"
#include "fs/tree/path.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

using Set = std::set<std::string>;
constexpr const char* kRegistry = "127.0.0.1:9";

// Staged names: one staged tag `name` in each namespace of `names`.
class FakeStaged : public StagedNames {
 public:
  std::map<std::string, std::string> tags;  // namespace path -> staged tag name

  NodePtr lookup_in_namespace(const Node& dir, std::string_view name) override {
    auto it = tags.find(dir.path);
    if (it == tags.end() || it->second != name) return nullptr;
    return node(dir, name);
  }
  void add_to_listing(const Node& dir, std::vector<NodePtr>* entries) override {
    auto it = tags.find(dir.path);
    if (it != tags.end()) entries->push_back(node(dir, it->second));
  }
  bool is_staged_namespace(const std::string&, const std::string&) const override { return false; }
  NodePtr lookup(const Node&, std::string_view) override { return nullptr; }
  std::vector<NodePtr> list(const Node&) override { return {}; }
  Attr attr(const Node&) override { return Attr{S_IFDIR | 0755}; }
  std::optional<std::string> xattr(const Node&, std::string_view) override { return {}; }
  std::vector<std::string> xattr_names(const Node&) override { return {}; }
  std::string readlink(const Node&) override { return {}; }
  std::vector<std::pair<std::string, std::string>> states() override { return {}; }

 private:
  static NodePtr node(const Node& dir, std::string_view name) {
    auto node = std::make_shared<Node>();
    node->kind = NodeKind::kStaged;
    node->name = std::string(name);
    node->key = join(dir.key, name);
    node->registry = dir.registry;
    node->path = dir.path;
    node->reference = std::string(name);
    return node;
  }
};

class TreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-tree-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cache::TagStore saved(dir_);
    saved.put_listing(kRegistry, "", {"app", "lib/base"});
    saved.put_listing(kRegistry, "app", {"v1", "v2"});
    saved.put_listing(kRegistry, "lib/base", {"1"});
    ContentOptions options;
    options.cache_dir = dir_;
    options.insecure = {kRegistry};
    options.request_timeout = std::chrono::seconds(5);
    content_ = std::make_unique<Content>(options);
    TreeOptions tree;
    tree.registry = kRegistry;
    tree_ = std::make_unique<Tree>(tree, *content_);
  }
  void TearDown() override {
    tree_.reset();
    content_.reset();
    std::filesystem::remove_all(dir_);
  }
  Set names(const Node& dir) {
    Set out;
    for (auto& node : tree_->list(dir)) out.insert(node->name);
    return out;
  }
  NodePtr at(const std::string& path) {
    NodePtr node = tree_->root();
    size_t start = 0;
    while (node && start < path.size()) {
      size_t end = path.find('/', start);
      if (end == std::string::npos) end = path.size();
      node = tree_->lookup(*node, path.substr(start, end - start));
      start = end + 1;
    }
    return node;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Content> content_;
  std::unique_ptr<Tree> tree_;
};

TEST_F(TreeTest, TheRegistryRootListsTheCatalogsFirstComponents) {
  EXPECT_EQ(tree_->root()->kind, NodeKind::kNamespace);
  EXPECT_EQ(names(*tree_->root()), (Set{"app", "lib"}));
  EXPECT_TRUE(S_ISDIR(tree_->attr(*tree_->root()).mode));
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
}

TEST_F(TreeTest, ARepositoryListsItsTags) {
  auto app = at("app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(names(*app), (Set{"v1", "v2"}));
  for (auto& node : tree_->list(*app)) {
    EXPECT_EQ(node->kind, NodeKind::kImage) << node->name;
    EXPECT_EQ(node->path, "app");
    EXPECT_TRUE(node->is_tag_image());
  }
}

TEST_F(TreeTest, TheControlDirectoryIsThereButUnlisted) {
  auto control = at(std::string(kControlDirName));
  ASSERT_NE(control, nullptr);
  EXPECT_EQ(control->kind, NodeKind::kControlDir);
  EXPECT_EQ(names(*tree_->root()).count(std::string(kControlDirName)), 0u);
  auto status = tree_->lookup(*control, "status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(status->kind, NodeKind::kStatusFile);
}

TEST_F(TreeTest, WithoutAStagedSideANewNameIsAskedOfTheRegistry) {
  // Not among the cached tags, and the registry cannot be asked: an error,
  // not a name (nothing staged answers first).
  EXPECT_THROW(at("app/new"), registry::Error);
}

TEST_F(TreeTest, StagedNamesAreAmongANamespacesNames) {
  FakeStaged staged;
  staged.tags["app"] = "new";
  tree_->set_staged(staged);
  EXPECT_EQ(names(*at("app")), (Set{"new", "v1", "v2"}));
  auto node = at("app/new");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->kind, NodeKind::kStaged);
  EXPECT_EQ(node->key, "app/new");
  EXPECT_THROW(at("lib/base/new"), registry::Error) << "staged in app only";
}

}  // namespace
}  // namespace regfs::fs

// The one tree the glue sees (fs/push/mount_tree.h), without FUSE and
// without a registry (127.0.0.1:9 refuses connections): reads go to the
// tree's parts by node kind, remote content cannot be opened for writing,
// and changes of remote content answer read-only.
#include "fs/push/mount_tree.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>

#include "cache/tag_store.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

constexpr const char* kRegistry = "127.0.0.1:9";

class MountTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-mount-tree-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cache::TagStore saved(dir_ / "cache");
    saved.put_listing(kRegistry, "", {"app"});
    saved.put_listing(kRegistry, "app", {"v1"});
    ContentOptions options;
    options.cache_dir = dir_ / "cache";
    options.insecure = {kRegistry};
    options.request_timeout = std::chrono::seconds(5);
    content_ = std::make_unique<Content>(options);
    TreeOptions tree;
    tree.registry = kRegistry;
    StagingOptions staging;
    staging.root = dir_ / "staging";
    staging.build.work_dir = dir_ / "builds";
    tree_ = std::make_unique<MountTree>(tree, *content_, staging);
  }
  void TearDown() override {
    tree_.reset();
    content_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::set<std::string> names(const Node& dir) {
    std::set<std::string> out;
    for (auto& node : tree_->list(dir)) out.insert(node->name);
    return out;
  }
  static registry::ErrorKind error_of(const std::function<void()>& call) {
    try {
      call();
    } catch (const registry::Error& e) {
      return e.kind();
    }
    ADD_FAILURE() << "no error";
    return registry::ErrorKind::kIo;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Content> content_;
  std::unique_ptr<MountTree> tree_;
};

TEST_F(MountTreeTest, ReadsGoToTheNamespacesAndTheControlDirectory) {
  auto root = tree_->root();
  EXPECT_EQ(root->kind, NodeKind::kNamespace);
  EXPECT_EQ(names(*root), std::set<std::string>{"app"});
  auto app = tree_->lookup(*root, "app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->kind, NodeKind::kNamespace);
  auto attr = tree_->attr(*app);
  EXPECT_EQ(attr.mode, static_cast<mode_t>(S_IFDIR | 0555));
  EXPECT_EQ(attr.nlink, 2u);
  EXPECT_EQ(tree_->xattr(*app, "user.regfs.digest"), std::nullopt);
  EXPECT_TRUE(tree_->xattr_names(*app).empty());
  EXPECT_EQ(error_of([&] { tree_->readlink(*app); }), registry::ErrorKind::kInvalid);

  auto control = tree_->lookup(*root, kControlDirName);
  ASSERT_NE(control, nullptr);
  EXPECT_EQ(control->key, "/.regfs");
  EXPECT_EQ(names(*control), std::set<std::string>{"status"});
  auto status = tree_->lookup(*control, "status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(status->kind, NodeKind::kStatusFile);
  EXPECT_EQ(status->key, "/.regfs/status");
  EXPECT_EQ(tree_->attr(*status).mode, static_cast<mode_t>(S_IFREG | 0444));
  EXPECT_EQ(tree_->lookup(*control, "other"), nullptr);
  EXPECT_EQ(error_of([&] { tree_->list(*status); }), registry::ErrorKind::kInvalid);
}

TEST_F(MountTreeTest, RemoteContentOpensForReadingOnly) {
  auto control = tree_->lookup(*tree_->root(), kControlDirName);
  auto status = tree_->lookup(*control, "status");
  auto file = tree_->open(*status, O_RDONLY);
  EXPECT_EQ(file.staged, nullptr);
  ASSERT_NE(file.remote.bytes, nullptr);
  EXPECT_EQ(file.remote.bytes->front(), '{');  // JSON (fs/source/status.h)
  EXPECT_EQ(error_of([&] { tree_->open(*status, O_WRONLY); }), registry::ErrorKind::kReadOnly);
  EXPECT_EQ(error_of([&] { tree_->open(*status, O_RDONLY | O_TRUNC); }),
            registry::ErrorKind::kReadOnly);
  EXPECT_EQ(error_of([&] { tree_->open(*tree_->root(), O_RDONLY); }),
            registry::ErrorKind::kInvalid);
}

TEST_F(MountTreeTest, ChangesOfRemoteContentAreReadOnly) {
  auto control = tree_->lookup(*tree_->root(), kControlDirName);
  EXPECT_EQ(error_of([&] { tree_->mkdir(*control, "new", 0755); }), registry::ErrorKind::kReadOnly);
  auto status = tree_->lookup(*control, "status");
  EXPECT_EQ(error_of([&] { tree_->unlink(*control, "status"); }), registry::ErrorKind::kReadOnly);
  EXPECT_EQ(error_of([&] { tree_->setxattr(*status, "user.x", "1", 0); }),
            registry::ErrorKind::kReadOnly);
}

}  // namespace
}  // namespace regfs::fs

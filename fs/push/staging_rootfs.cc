// rootfs/ of a staged copy of an image (SPEC §4, fs/push/rootfs_overlay.h): the
// StagingTree's side of it. Which base a staged tag has is read from its
// files: manifest.json (an image manifest or index; docker save's array has
// no base), else the descriptor of index.json naming the tag (or its only
// one); the manifest is loaded from where its blob was copied from (the
// reference cp's copy_file_range recorded), else from the tag's own
// repository. A build, or a layout without an image for --platform, has no
// rootfs/ (ENOENT). Nodes under it are kStaged with Node::overlay set.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "fs/push/build_plan.h"
#include "fs/push/push_errors.h"
#include "fs/push/rootfs_overlay.h"
#include "fs/push/staging_tree.h"
#include "fs/tree/path.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/manifest.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kMaxLayoutFile = 4 << 20;  // index.json, manifest.json

std::optional<std::string> read_small(const fsys::path& file) {
  std::error_code ec;
  auto size = fsys::file_size(file, ec);
  if (ec || size > kMaxLayoutFile) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The digest of the manifest a staged layout pushes as `tag`, or "".
std::string base_manifest(const fsys::path& dir, const std::string& tag) {
  if (auto bytes = read_small(dir / "manifest.json")) {
    auto doc = nlohmann::json::parse(*bytes, nullptr, false);
    return doc.is_object() ? registry::sha256_digest(*bytes) : "";
  }
  auto bytes = read_small(dir / "index.json");
  if (!bytes) return "";
  auto doc = nlohmann::json::parse(*bytes, nullptr, false);
  if (!doc.is_object() || !doc.contains("manifests") || !doc["manifests"].is_array()) return "";
  const auto& manifests = doc["manifests"];
  for (const auto& descriptor : manifests) {
    if (!descriptor.is_object()) continue;
    auto annotations = descriptor.value("annotations", nlohmann::json::object());
    if (annotations.is_object() &&
        annotations.value("org.opencontainers.image.ref.name", "") == tag) {
      return descriptor.value("digest", "");
    }
  }
  if (manifests.size() == 1 && manifests[0].is_object()) return manifests[0].value("digest", "");
  return "";
}

}  // namespace

std::shared_ptr<RootfsOverlay> StagingTree::overlay_of(const cache::StagedTag& tag) {
  auto dir = area_.tag_dir(tag);
  struct stat st;
  if (::lstat((dir / std::string(kRootfsName)).c_str(), &st) == 0 || is_build(dir)) return nullptr;
  std::string digest = base_manifest(dir, tag.tag);
  if (!registry::is_valid_digest(digest)) return nullptr;
  std::string registry = tag.registry;
  std::string repository = tag.repository;
  // Read in place: the state holds every rootfs/ entry's metadata, and this
  // runs at every change of rootfs/ (a copy made cp -a of n files quadratic).
  area_.read_state(tag, [&](const cache::StagedTagState& state) {
    auto ref = state.references.find("blobs/sha256/" + std::string(registry::digest_hex(digest)));
    if (ref == state.references.end()) ref = state.references.begin();
    if (ref != state.references.end()) {
      registry = ref->second.registry;
      repository = ref->second.repository;
    }
  });
  std::shared_ptr<const MergedTree> lower;
  try {
    lower = tree_.image_rootfs(registry, repository, digest);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNotFound) throw;
    LOG(kDebug) << "No rootfs/ for staged " << tag.repository << ":" << tag.tag << ": " << e.what();
  }
  if (!lower) return nullptr;
  std::shared_ptr<std::recursive_mutex> changing;
  {
    std::lock_guard lock(mutex_);
    auto& slot = rootfs_locks_[tag];
    if (!slot) slot = std::make_shared<std::recursive_mutex>();
    changing = slot;
  }
  return std::make_shared<RootfsOverlay>(area_, tag, lower, changing);
}

std::shared_ptr<RootfsOverlay> StagingTree::overlay_for(const Node& node) {
  auto overlay = overlay_of(tag_of(node));
  if (!overlay) fail(ErrorKind::kNotFound, "No rootfs/ in " + node.key + " any more");
  return overlay;
}

std::string StagingTree::rootfs_path_of(const Node& node) {
  return node.staged().path.size() > kRootfsName.size()
             ? node.staged().path.substr(kRootfsName.size() + 1)
             : "";
}

NodePtr StagingTree::rootfs_node(const Node& parent, std::string_view name, const std::string& path,
                                 mode_t type) {
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kStaged;
  node->name = name;
  node->key = parent.key + "/" + std::string(name);
  node->registry = parent.registry;
  node->path = parent.path;
  node->reference = parent.reference;
  node->at = Node::StagedAt{join(std::string(kRootfsName), path), type, true};
  return node;
}

NodePtr StagingTree::rootfs_lookup(const Node& dir, std::string_view name) {
  auto overlay = overlay_of(tag_of(dir));
  if (!overlay) return nullptr;
  std::string path = dir.is_overlay() ? join(rootfs_path_of(dir), name) : "";
  auto type = overlay->type(path);
  if (!type) return nullptr;
  return rootfs_node(dir, name, path, *type);
}

std::vector<NodePtr> StagingTree::rootfs_list(const Node& dir) {
  auto overlay = overlay_for(dir);
  std::string path = rootfs_path_of(dir);
  std::vector<NodePtr> entries;
  for (const auto& [name, type] : overlay->list(path)) {
    entries.push_back(rootfs_node(dir, name, join(path, name), type));
  }
  return entries;
}

std::shared_ptr<StagedFile> StagingTree::rootfs_open(const Node& node, int flags) {
  auto overlay = overlay_for(node);
  std::string path = rootfs_path_of(node);
  auto tag = tag_of(node);
  bool writable = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  if (writable) {
    overlay->copy_up(path, !(flags & O_TRUNC));
    // Written from now on: not what was pushed (so a crash keeps the tag).
    area_.update_state(tag, [](cache::StagedTagState& s) { s.pushed_digest.clear(); });
    changed(tag);
  }
  if (overlay->in_upper(path)) {
    return open_file(tag, node.staged().path, flags & ~(O_CREAT | O_EXCL), 0, overlay->upper(path));
  }
  auto lower = overlay->open_lower(path);
  auto handle = std::make_shared<StagedFile>();
  handle->tag = tag;
  handle->path = node.staged().path;
  handle->lower = lower.layer;
  handle->lower_entry = lower.entry;
  handle->lower_bytes = lower.bytes;
  handle->state = std::make_shared<StagedFile::PathState>();
  return handle;
}

std::shared_ptr<StagedFile> StagingTree::rootfs_create(const Node& parent, std::string_view name,
                                                       mode_t mode, int flags, NodePtr* node) {
  auto overlay = overlay_for(parent);
  std::string path = join(rootfs_path_of(parent), name);
  auto tag = tag_of(parent);
  std::shared_ptr<StagedFile> handle;
  if (overlay->type(path)) {
    if (flags & O_EXCL) fail(ErrorKind::kExists, "Cannot create rootfs/" + path + ": it exists");
    overlay->copy_up(path, !(flags & O_TRUNC));
    handle = open_file(tag, join(std::string(kRootfsName), path), flags & ~O_CREAT, 0,
                       overlay->upper(path));
  } else {
    auto file = overlay->create(path, mode);
    handle = open_file(tag, join(std::string(kRootfsName), path), flags | O_CREAT, mode, file);
  }
  changed(tag);
  *node = rootfs_node(parent, name, path, S_IFREG);
  return handle;
}

Attr StagingTree::rootfs_setattr(const Node& node, const SetAttr& change) {
  auto overlay = overlay_for(node);
  std::string path = rootfs_path_of(node);
  if (change.size) overlay->truncate(path, *change.size);
  if (change.mode) overlay->chmod(path, *change.mode);
  if (change.uid || change.gid) overlay->chown(path, change.uid, change.gid);
  if (change.atime || change.mtime) overlay->set_times(path, change.atime, change.mtime);
  changed(tag_of(node));
  return overlay->attr(path);
}

bool StagingTree::has_rootfs_changes(const cache::StagedTag& tag) {
  bool removed = false;
  area_.read_state(tag, [&](const cache::StagedTagState& state) {
    removed = !state.rootfs.whiteouts.empty() || !state.rootfs.opaque.empty();
  });
  if (removed) return true;
  std::error_code ec;
  auto upper = area_.upper_dir(tag);
  return fsys::exists(upper, ec) && !fsys::is_empty(upper, ec);
}

void StagingTree::add_rootfs_layer(const cache::StagedTag& tag, StagedLayout& layout,
                                   PushPlan& plan) {
  auto overlay = overlay_of(tag);
  if (!overlay || !overlay->has_changes()) return;
  if (auto platform = narrow_to_platform(plan, build_.platform); !platform.empty()) {
    LOG(kInfo) << tag.repository << ":" << tag.tag << " has changes in rootfs/: pushing its "
               << platform << " image alone, as docker build does FROM a multi-platform base";
  }
  const auto& top = plan.manifests.back();
  std::string config_digest = registry::parse_manifest(top.bytes).config.digest;
  std::string config;
  for (const auto& blob : plan.blobs) {
    if (blob.digest == config_digest) config = layout.config_bytes(blob);
  }
  if (config.empty()) throw Error(ErrorKind::kIo, "Cannot read config " + config_digest);
  int64_t newest = 0;
  auto entries = overlay->layer_entries(&newest);
  auto file = build_dir(tag) / "rootfs-layer";
  auto layer = cache::write_layer(entries, build_.compression, file, build_.compression_level);
  append_layer(plan, config, layer, file, newest);
  LOG(kInfo) << "Changes of rootfs/ of " << tag.repository << ":" << tag.tag << ": layer "
             << layer.digest << " (" << entries.size() << " entries) on the base's layers";
}

}  // namespace regfs::fs

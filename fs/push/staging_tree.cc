// StagingTree's view (fs/push/staging_tree.h): the staged names among a
// namespace's, lookup, listing, attributes and extended attributes of
// staged entries. File operations are in staging_files.cc, checks of what
// is written in staging_checks.cc, rmdir in staging_delete.cc, pushes in
// staging_pushes.cc and rootfs/ of a staged copy in staging_rootfs.cc.
#include "fs/push/staging_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "fs/push/push_plan.h"
#include "fs/push/staged_helpers.h"
#include "fs/tree/path.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;
using namespace staged;  // NOLINT: fs/push/staged_helpers.h

namespace {

// Tags pushed at once (each push uploads several blobs at once: Pusher).
constexpr size_t kPushThreads = 8;

}  // namespace

StagingTree::StagingTree(RemoteNames& remote, Content& content, StagingOptions options)
    : tree_(remote),
      content_(content),
      area_(std::move(options.root)),
      pusher_(content, &area_),
      allow_delete_(options.allow_delete),
      alone_on_cache_(options.alone_on_cache),
      push_delay_(options.push_delay),
      build_(std::move(options.build)),
      pushes_(kPushThreads),
      build_timers_(std::make_unique<WorkerPool>(1)),
      resumes_(std::make_unique<WorkerPool>(1)) {
  // A push that failed while its registry was down is tried again once it
  // is back (the staged tag keeps its error until then).
  content_.on_registry_up(
      [this](const std::string& registry) { resume_pushes(registry, /*only_failed=*/true); });
  // Tags pushed without error are in the registry now: drop their copies.
  // Not those whose push the daemon did not finish (kill -9, a crash), nor
  // any while another mount shares the cache (it may be showing them).
  if (!alone_on_cache_) {
    LOG(kInfo) << "Another mount uses this cache directory: its staged tags are left to it";
    return;
  }
  for (auto& tag : area_.all_tags()) {
    auto state = area_.state(tag);
    if (!state.pushed_digest.empty() && state.error.empty() && state.pushing.empty()) {
      LOG(kInfo) << "Dropping staged " << tag.registry << "/" << tag.repository << ":" << tag.tag
                 << ", pushed as " << state.pushed_digest;
      area_.discard_tag(tag);
      std::error_code ec;
      fsys::remove_all(build_dir(tag), ec);
    } else {
      LOG(kInfo) << "Staged tag " << tag.registry << "/" << tag.repository << ":" << tag.tag
                 << (!state.pushing.empty() ? " (push of " + state.pushing + " interrupted)"
                     : !state.error.empty() ? " (push failed: " + state.error + ")"
                                            : " (not pushed yet)");
    }
  }
}

cache::StagedTag StagingTree::tag_of(const Node& node) {
  return {node.registry, node.path, node.reference};
}

NodePtr StagingTree::make_node(const cache::StagedTag& tag, std::string path, std::string key,
                               std::string_view name) {
  struct stat st;
  if (::lstat(area_.file(tag, path).c_str(), &st) != 0) return nullptr;
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kStaged;
  node->name = name;
  node->key = std::move(key);
  node->registry = tag.registry;
  node->path = tag.repository;
  node->reference = tag.tag;
  node->at = Node::StagedAt{std::move(path), st.st_mode & S_IFMT};
  return node;
}

NodePtr StagingTree::namespace_node(const Node& dir, std::string_view name) {
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kNamespace;
  node->name = name;
  node->key = dir.key == "/" ? std::string(name) : dir.key + "/" + std::string(name);
  node->registry = dir.registry;
  node->path = join(dir.path, name);
  return node;
}

NodePtr StagingTree::lookup_in_namespace(const Node& dir, std::string_view name) {
  if (!is_name(name) || dir.registry.empty()) return nullptr;
  if (!dir.path.empty()) {
    cache::StagedTag tag{dir.registry, dir.path, std::string(name)};
    if (area_.has_tag(tag)) return make_node(tag, "", dir.key + "/" + std::string(name), name);
  }
  if (area_.has_namespace(dir.registry, join(dir.path, name))) return namespace_node(dir, name);
  return nullptr;
}

// Whether tag.repository is a repository (so tag.tag is one of its tags):
// proven by the registry, or holding other staged tags. (One made by
// promotion may still nest: mkdir -p a/b/c/d makes a/b/c a repository.)
bool StagingTree::repository_of_tags(const cache::StagedTag& tag) {
  auto tags = area_.tags(tag.registry, tag.repository);
  if (tags.size() > 1 || (tags.size() == 1 && tags.front() != tag.tag)) return true;
  return tree_.is_known_repository(tag.registry, tag.repository);
}

bool StagingTree::is_staged_namespace(const std::string& registry, const std::string& path) const {
  return area_.has_namespace(registry, path) && area_.tags(registry, path).empty() &&
         !area_.is_staged_repository(registry, path);
}

void StagingTree::add_to_listing(const Node& dir, std::vector<NodePtr>* entries) {
  if (dir.registry.empty()) return;
  auto add = [&](NodePtr node) {
    if (!node) return;
    for (auto& e : *entries) {
      if (e->name == node->name) {
        if (node->kind == NodeKind::kStaged) e = node;  // staged shadows remote
        return;
      }
    }
    entries->push_back(node);
  };
  if (!dir.path.empty()) {
    for (auto& tag : area_.tags(dir.registry, dir.path)) {
      add(make_node({dir.registry, dir.path, tag}, "", dir.key + "/" + tag, tag));
    }
  }
  for (auto& name : area_.child_namespaces(dir.registry, dir.path)) {
    add(namespace_node(dir, name));
  }
}

NodePtr StagingTree::lookup(const Node& dir, std::string_view name) {
  if (auto ns = promoted_namespace(area_, dir)) return tree_.lookup(*ns, name);
  if (!is_name(name)) return nullptr;
  if (dir.is_overlay()) return rootfs_lookup(dir, name);
  auto node = make_node(tag_of(dir), join(dir.staged().path, name),
                        dir.key + "/" + std::string(name), name);
  // rootfs/ of a staged copy of an image: unlisted, writable (fs/push/rootfs_overlay.h).
  if (!node && dir.staged().path.empty() && name == kRootfsName) return rootfs_lookup(dir, name);
  return node;
}

std::vector<NodePtr> StagingTree::list(const Node& dir) {
  if (auto ns = promoted_namespace(area_, dir)) return tree_.list(*ns);
  if (dir.is_overlay()) return rootfs_list(dir);
  auto tag = tag_of(dir);
  std::vector<std::string> names;
  std::error_code ec;
  for (auto& entry : fsys::directory_iterator(area_.file(tag, dir.staged().path), ec)) {
    names.push_back(entry.path().filename());
  }
  if (ec) fail_errno(ec.value(), "Cannot list staged " + dir.key);
  std::sort(names.begin(), names.end());
  std::vector<NodePtr> entries;
  for (auto& name : names) {
    if (auto node = make_node(tag, join(dir.staged().path, name), dir.key + "/" + name, name)) {
      entries.push_back(node);
    }
  }
  return entries;
}

Attr StagingTree::attr(const Node& node) {
  if (auto ns = promoted_namespace(area_, node)) return tree_.attr(*ns);
  if (node.is_overlay()) return overlay_for(node)->attr(rootfs_path_of(node));
  auto tag = tag_of(node);
  struct stat st;
  if (::lstat(area_.file(tag, node.staged().path).c_str(), &st) != 0) {
    fail_errno(errno, "Cannot stat staged " + node.key);
  }
  std::optional<uint32_t> mode;
  area_.read_state(tag, [&](const cache::StagedTagState& state) {
    if (auto it = state.modes.find(node.staged().path); it != state.modes.end()) {
      mode = it->second;
    }
  });
  Attr attr;
  mode_t perms = S_ISDIR(st.st_mode)   ? kDefaultDirMode
                 : S_ISLNK(st.st_mode) ? 0777
                                       : kDefaultFileMode;
  attr.mode = (st.st_mode & S_IFMT) | (mode && !S_ISLNK(st.st_mode) ? *mode : perms);
  attr.size = static_cast<uint64_t>(st.st_size);
  attr.rdev = st.st_rdev;
  attr.nlink = S_ISDIR(st.st_mode) ? 2 : static_cast<uint32_t>(st.st_nlink);
  attr.own_metadata = true;
  attr.uid = ::getuid();
  attr.gid = ::getgid();
  attr.mtime = st.st_mtim.tv_sec;
  attr.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  return attr;
}

std::optional<std::string> StagingTree::xattr(const Node& node, std::string_view name) {
  if (node.kind != NodeKind::kStaged) return std::nullopt;
  if (node.is_overlay()) return overlay_for(node)->xattr(rootfs_path_of(node), std::string(name));
  if (!node.staged().path.empty() || !std::string_view(name).starts_with("user.regfs.")) {
    std::optional<std::string> found;
    area_.read_state(tag_of(node), [&](const cache::StagedTagState& state) {
      auto entry = state.xattrs.find(node.staged().path);
      if (entry == state.xattrs.end()) return;
      auto value = entry->second.find(std::string(name));
      if (value != entry->second.end()) found = value->second;
    });
    return found;
  }
  if (!area_.has_tag(tag_of(node))) return std::nullopt;  // a tag that became a namespace
  if (name == "user.regfs.state") return state_of(tag_of(node));
  std::optional<std::string> found;
  area_.read_state(tag_of(node), [&](const cache::StagedTagState& state) {
    if (name == "user.regfs.error" && !state.error.empty()) found = state.error;
    if (name == "user.regfs.digest" && !state.pushed_digest.empty()) found = state.pushed_digest;
  });
  return found;
}

void StagingTree::setxattr(const Node& node, const std::string& name, const std::string& value,
                           int flags) {
  if (node.kind != NodeKind::kStaged || promoted_namespace(area_, node)) {
    fail(ErrorKind::kReadOnly, "Cannot set " + name + " on " + node.key + ": read-only");
  }
  if (name.starts_with("user.regfs.")) return;  // the mount's own (cp -a of an image dir)
  auto tag = tag_of(node);
  if (node.is_overlay()) {
    auto overlay = overlay_for(node);
    auto path = rootfs_path_of(node);
    if (name == "system.posix_acl_access") {  // a mode, as below
      auto mode = mode_of_acl(value);
      if (!mode)
        fail(ErrorKind::kInvalid, "Cannot set " + name + " on " + node.key + ": not an ACL");
      overlay->chmod(path, (overlay->attr(path).mode & 07000) | *mode);
    } else if (name != "system.posix_acl_default") {
      overlay->setxattr(path, name, value, flags);
    }
    changed(tag);
    return;
  }
  // cp -a, cp -p and sed -i set permissions as an access ACL, which a file
  // system applies to the mode (acl(5)); the mode is what the layer keeps.
  if (name == "system.posix_acl_access") {
    auto mode = mode_of_acl(value);
    if (!mode) fail(ErrorKind::kInvalid, "Cannot set " + name + " on " + node.key + ": not an ACL");
    // A default mode is not recorded: cp -a sets one on every file it makes.
    uint32_t default_mode = S_ISDIR(node.type_bits()) ? kDefaultDirMode : kDefaultFileMode;
    area_.update_path_state_if(tag, node.staged().path, [&](cache::StagedTagState& s) {
      auto old = s.modes.find(node.staged().path);
      uint32_t special = old != s.modes.end() ? old->second & 07000 : 0;
      return set_mode(s.modes, node.staged().path, special | *mode, default_mode);
    });
    share_with_links(tag, node.staged().path);
    changed(tag);
    return;
  }
  if (name == "system.posix_acl_default") return;  // no place in an image layer
  std::optional<ErrorKind> error;
  area_.update_path_state_if(tag, node.staged().path, [&](cache::StagedTagState& s) {
    auto& names = s.xattrs[node.staged().path];
    bool present = names.count(name) > 0;
    if ((flags & XATTR_CREATE) && present) {
      error = ErrorKind::kExists;
    } else if ((flags & XATTR_REPLACE) && !present) {
      error = ErrorKind::kNoAttribute;
    } else {
      names[name] = value;
    }
    if (names.empty()) s.xattrs.erase(node.staged().path);
    return !error;
  });
  if (error) fail(*error, "Cannot set " + name + " on " + node.key);
  share_with_links(tag, node.staged().path);
  changed(tag);
}

void StagingTree::removexattr(const Node& node, const std::string& name) {
  if (node.kind != NodeKind::kStaged || promoted_namespace(area_, node)) {
    fail(ErrorKind::kReadOnly, "Cannot remove " + name + " of " + node.key + ": read-only");
  }
  auto tag = tag_of(node);
  if (node.is_overlay()) {
    try {
      overlay_for(node)->removexattr(rootfs_path_of(node), name);
    } catch (const Error& e) {
      // cp -a removes ACLs it did not find: none is kept, so none is missing.
      if (!name.starts_with("system.posix_acl_") || e.kind() != ErrorKind::kNoAttribute) throw;
    }
    changed(tag);
    return;
  }
  bool removed = false;
  area_.update_path_state_if(tag, node.staged().path, [&](cache::StagedTagState& s) {
    auto entry = s.xattrs.find(node.staged().path);
    if (entry == s.xattrs.end()) return false;
    removed = entry->second.erase(name) > 0;
    if (entry->second.empty()) s.xattrs.erase(entry);
    return removed;
  });
  if (!removed && name.starts_with("system.posix_acl_")) return;  // cp -a removes them: none kept
  if (!removed)
    fail(ErrorKind::kNoAttribute, "Cannot remove " + name + " of " + node.key + ": not set");
  share_with_links(tag, node.staged().path);
  changed(tag);
}

std::vector<std::string> StagingTree::xattr_names(const Node& node) {
  if (node.is_overlay()) return overlay_for(node)->xattr_names(rootfs_path_of(node));
  std::vector<std::string> names;
  if (node.kind == NodeKind::kStaged) {
    area_.read_state(tag_of(node), [&](const cache::StagedTagState& state) {
      if (auto entry = state.xattrs.find(node.staged().path); entry != state.xattrs.end()) {
        for (auto& [name, _] : entry->second) names.push_back(name);
      }
    });
    if (!node.staged().path.empty()) return names;
  }
  for (const char* name : {"user.regfs.digest", "user.regfs.error", "user.regfs.state"}) {
    if (xattr(node, name)) names.push_back(name);
  }
  return names;
}

}  // namespace regfs::fs

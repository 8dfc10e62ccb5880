// StagingTree's links and special files (fs/push/staging_tree.h): symlink,
// mknod (fifos and devices) and hardlinks, in a staged tag or its rootfs/.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "fs/push/staged_helpers.h"
#include "fs/push/staging_tree.h"
#include "fs/tree/path.h"
#include "registry/core/error.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;
using namespace staged;  // NOLINT: fs/push/staged_helpers.h

NodePtr StagingTree::symlink(const Node& parent, std::string_view name, const std::string& target) {
  if (!is_name(name)) fail(ErrorKind::kInvalid, "Cannot make link \"" + std::string(name) + "\"");
  check_stageable_name(name);
  if (parent.kind == NodeKind::kNamespace && !parent.registry.empty()) {
    refuse_in_namespace(parent, "make link " + std::string(name));
  }
  if (auto ns = promoted_namespace(area_, parent))
    refuse_in_namespace(*ns, "make link " + std::string(name));
  if (parent.kind != NodeKind::kStaged) {
    fail(ErrorKind::kReadOnly, "Cannot make link " + std::string(name) + ": read-only");
  }
  auto tag = tag_of(parent);
  if (parent.is_overlay()) {
    std::string path = join(rootfs_path_of(parent), name);
    overlay_for(parent)->symlink(path, target);
    changed(tag);
    return rootfs_node(parent, name, path, S_IFLNK);
  }
  std::string path = join(parent.staged().path, name);
  if (path == name) refuse_image_part(tag, name, /*is_dir=*/false);
  if (::symlink(target.c_str(), area_.file(tag, path).c_str()) != 0) {
    fail_errno(errno, "Cannot make staged link " + path);
  }
  changed(tag);
  return make_node(tag, path, parent.key + "/" + std::string(name), name);
}

NodePtr StagingTree::mknod(const Node& parent, std::string_view name, mode_t mode, dev_t rdev) {
  if (!is_name(name)) fail(ErrorKind::kInvalid, "Cannot make \"" + std::string(name) + "\"");
  check_stageable_name(name);
  if (parent.kind != NodeKind::kStaged || promoted_namespace(area_, parent)) {
    fail(ErrorKind::kReadOnly, "Cannot make " + std::string(name) + ": read-only");
  }
  if (!S_ISFIFO(mode) && !S_ISCHR(mode) && !S_ISBLK(mode)) {
    fail(ErrorKind::kNotPermitted,
         "Cannot make " + std::string(name) + ": only fifos and devices are made by mknod here");
  }
  auto tag = tag_of(parent);
  std::string path =
      parent.is_overlay() ? join(rootfs_path_of(parent), name) : join(parent.staged().path, name);
  if (parent.is_overlay()) {
    overlay_for(parent)->mknod(path, mode, rdev);
    changed(tag);
    return rootfs_node(parent, name, path, mode & S_IFMT);
  }
  if (::mknod(area_.file(tag, path).c_str(), (mode & S_IFMT) | 0600, rdev) != 0) {
    fail_errno(errno, "Cannot make staged " + path);
  }
  area_.update_path_state_if(tag, path, [&](cache::StagedTagState& s) {
    return set_mode(s.modes, path, mode & 07777, kDefaultFileMode);
  });
  changed(tag);
  return make_node(tag, path, parent.key + "/" + std::string(name), name);
}

NodePtr StagingTree::link(const Node& node, const Node& new_parent, std::string_view new_name) {
  if (!is_name(new_name))
    fail(ErrorKind::kInvalid, "Cannot make link \"" + std::string(new_name) + "\"");
  check_stageable_name(new_name);
  if (node.kind != NodeKind::kStaged || new_parent.kind != NodeKind::kStaged ||
      node.staged().path.empty()) {
    fail(node.kind == NodeKind::kStaged ? ErrorKind::kCrossDevice : ErrorKind::kReadOnly,
         "Cannot link " + node.key + ": hardlinks stay within one staged tag");
  }
  auto tag = tag_of(node);
  auto to_tag = tag_of(new_parent);
  if (to_tag.registry != tag.registry || to_tag.repository != tag.repository ||
      to_tag.tag != tag.tag || promoted_namespace(area_, new_parent)) {
    fail(ErrorKind::kCrossDevice,
         "Cannot link " + node.key + ": hardlinks stay within one staged tag");
  }
  if (node.is_overlay() != new_parent.is_overlay()) {
    fail(ErrorKind::kCrossDevice, "Cannot link " + node.key + ": hardlinks stay within rootfs/");
  }
  if (node.is_overlay()) {
    std::string to = join(rootfs_path_of(new_parent), new_name);
    overlay_for(node)->link(rootfs_path_of(node), to);
    changed(tag);
    return rootfs_node(new_parent, new_name, to, S_IFREG);
  }
  std::string path = join(new_parent.staged().path, new_name);
  if (::link(area_.file(tag, node.staged().path).c_str(), area_.file(tag, path).c_str()) != 0) {
    fail_errno(errno, "Cannot make staged link " + path);
  }
  // One inode, many names: what the state keeps by path goes with the link.
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    if (auto mode = s.modes.find(node.staged().path); mode != s.modes.end()) {
      s.modes[path] = mode->second;
    }
    if (auto xattrs = s.xattrs.find(node.staged().path); xattrs != s.xattrs.end()) {
      s.xattrs[path] = xattrs->second;
    }
  });
  changed(tag);
  return make_node(tag, path, new_parent.key + "/" + std::string(new_name), new_name);
}

}  // namespace regfs::fs

// StagingTree's rmdir (fs/push/staging_tree.h): a staged directory, tag or
// namespace is discarded; a remote tag is deleted from its registry with
// --allow-delete.
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
#include "fs/push/staging_tree.h"
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

void StagingTree::rmdir(const Node& parent, std::string_view name) {
  if (auto ns = promoted_namespace(area_, parent)) return rmdir(*ns, name);
  std::string sname(name);
  if (parent.is_overlay()) {
    overlay_for(parent)->rmdir(join(rootfs_path_of(parent), name));
    changed(tag_of(parent));
    return;
  }
  if (parent.kind == NodeKind::kStaged) {
    auto tag = tag_of(parent);
    std::string path = join(parent.staged().path, name);
    refuse_removal_if_pushed(tag, "remove " + path);
    if (::rmdir(area_.file(tag, path).c_str()) != 0)
      fail_errno(errno, "Cannot remove staged " + path);
    forget_paths(tag, path);
    changed(tag);
    return;
  }
  if (parent.kind == NodeKind::kNamespace && !parent.registry.empty()) {
    if (!parent.path.empty()) {
      cache::StagedTag tag{parent.registry, parent.path, sname};
      if (area_.has_tag(tag)) {
        refuse_removal_if_pushed(tag, "delete tag " + sname);
        std::error_code ec;
        if (!fsys::is_empty(area_.tag_dir(tag), ec))
          fail(ErrorKind::kNotEmpty, "Cannot discard " + sname);
        // A pushed tag is in the registry too: with --allow-delete, rm -r
        // deletes it there as well; otherwise only the staged copy goes.
        if (allow_delete_ && !area_.state(tag).pushed_digest.empty()) {
          pusher_.delete_tag(tag.registry, tag.repository, tag.tag);
        }
        area_.discard_tag(tag);
        {
          std::lock_guard lock(builds_mutex_);
          pending_.erase(tag);
        }
        std::error_code rm_ec;
        fsys::remove_all(build_dir(tag), rm_ec);
        LOG(kInfo) << "Discarded staged " << tag.registry << "/" << tag.repository << ":"
                   << tag.tag;
        return;
      }
    }
    std::string path = join(parent.path, name);
    if (area_.has_namespace(parent.registry, path)) {
      if (!area_.remove_namespace(parent.registry, path)) {
        fail(ErrorKind::kNotEmpty, "Cannot remove staged namespace " + path);
      }
      return;
    }
    auto node = tree_.lookup(parent, name);
    if (!node) fail(ErrorKind::kNotFound, "Cannot remove " + sname + ": no such tag");
    if (node->kind == NodeKind::kImage && node->is_tag_image()) {
      if (!allow_delete_)
        fail(ErrorKind::kReadOnly, "Cannot delete tag " + sname + ": mount with --allow-delete");
      pusher_.delete_tag(parent.registry, parent.path, sname);
      return;
    }
  }
  if (allow_delete_ && is_remote_image_dir(parent) && parent.is_tag_image()) return;
  fail(ErrorKind::kReadOnly, "Cannot remove " + sname + ": read-only");
}

}  // namespace regfs::fs

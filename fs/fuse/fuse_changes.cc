// The FUSE callbacks that change the tree (SPEC §4): mkdir, create, write,
// flush, fsync, setattr, symlink, link, rename, unlink, rmdir, xattrs and
// copy_file_range, all answered by the staged tree.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>

#include "cache/layer_index.h"
#include "fs/fuse/dir_listings.h"
#include "fs/fuse/errno_map.h"
#include "fs/fuse/glue.h"
#include "fs/fuse/inode_table.h"
#include "fs/push/mount_tree.h"
#include "registry/core/deadline.h"
#include "registry/core/log.h"

namespace regfs::fs::glue {

// Changes (SPEC §4): namespaces, tags and files made under the mount are
// staged and pushed by the FUSE-free staged tree behind MountTree
// (fs/push/mount_tree.h); it answers EROFS for remote content.
void reply_entry(fuse_req_t req, MountState& s, const NodePtr& node) {
  auto e = entry_of(s, node, s.served.tree->attr(*node));
  if (fuse_reply_entry(req, &e) != 0) s.inodes->forget(e.ino, 1);
}

// Whether the process asking copies a tree (its name in /proc/PID/comm):
// a directory it makes in a namespace is a tag with content, not a
// repository to be (fs/push/staging_tree.h).
bool asked_by_copy(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (!ctx || ctx->pid <= 0) return false;
  std::ifstream comm("/proc/" + std::to_string(ctx->pid) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name == "cp" || name == "rsync" || name == "tar" || name == "bsdtar";
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "mkdir", [&] {
    reply_entry(req, s,
                s.served.tree->mkdir(*node_or_throw(s, parent), name, mode, asked_by_copy(req)));
  });
}
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "mknod", [&] {
    reply_entry(req, s, s.served.tree->mknod(*node_or_throw(s, parent), name, mode, rdev));
  });
}
// A change of the staged tree on the node `ino`, answered 0 or its errno.
template <typename Change>
void staged_change(fuse_req_t req, const char* operation, fuse_ino_t ino, Change&& change) {
  auto& s = state_of(req);
  guarded(req, operation, [&] {
    change(*s.served.tree, *node_or_throw(s, ino));
    fuse_reply_err(req, 0);
  });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (refused_read_only(req)) return;
  staged_change(req, "unlink", parent,
                [&](MountTree& tree, const Node& dir) { tree.unlink(dir, name); });
}
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (refused_read_only(req)) return;
  staged_change(req, "rmdir", parent,
                [&](MountTree& tree, const Node& dir) { tree.rmdir(dir, name); });
}
void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "symlink", [&] {
    reply_entry(req, s, s.served.tree->symlink(*node_or_throw(s, parent), name, target));
  });
}
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned int flags) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "rename", [&] {
    auto from = node_or_throw(s, parent);
    auto to = node_or_throw(s, new_parent);
    if (flags & ~static_cast<unsigned int>(RENAME_NOREPLACE)) {
      throw registry::Error(registry::ErrorKind::kInvalid,
                            "Cannot rename " + std::string(name) + ": flags other than NOREPLACE");
    }
    if ((flags & RENAME_NOREPLACE) && s.served.tree->lookup(*to, new_name)) {
      throw registry::Error(registry::ErrorKind::kExists,
                            "Cannot rename to " + std::string(new_name) + ": it exists");
    }
    s.served.tree->rename(*from, name, *to, new_name);
    // Nodes name paths: the kernel's inode of the moved entry follows it.
    if (auto moved = s.served.tree->lookup(*to, new_name)) {
      s.inodes->moved(from->key + "/" + name, moved);
    }
    fuse_reply_err(req, 0);
  });
}
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "link", [&] {
    reply_entry(
        req, s,
        s.served.tree->link(*node_or_throw(s, ino), *node_or_throw(s, new_parent), new_name));
  });
}
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "create", [&] {
    NodePtr node;
    auto handle = std::make_unique<FileHandle>();
    handle->staged = s.served.tree->create(*node_or_throw(s, parent), name, mode, fi->flags, &node);
    auto e = entry_of(s, node, s.served.tree->attr(*node));
    fi->fh = reinterpret_cast<uint64_t>(handle.get());
    if (fuse_reply_create(req, &e, fi) == 0) {
      handle.release();
    } else {
      s.inodes->forget(e.ino, 1);
    }
  });
}
void op_write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  if (refused_read_only(req)) return;
  auto* handle = reinterpret_cast<FileHandle*>(fi->fh);
  if (!handle->staged) {
    fuse_reply_err(req, EBADF);
    return;
  }
  guarded(req, "write", [&] {
    state_of(req).served.tree->write(*handle->staged, buf, size, static_cast<uint64_t>(off));
    fuse_reply_write(req, size);
  });
}
// close(): a staged file is checked, and its tag pushed if now complete; the
// result is close()'s (release cannot return errors).
void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  if (fi->fh == 0) {  // a no_open mount: nothing to do at close(), from now on asked no more
    fuse_reply_err(req, ENOSYS);
    return;
  }
  auto* handle = reinterpret_cast<FileHandle*>(fi->fh);
  if (!handle->staged) {
    fuse_reply_err(req, 0);
    return;
  }
  guarded(req, "flush", [&] {
    // The push this close() completes takes what it takes: its result is
    // close()'s (SPEC §4), and its requests keep their own timeouts.
    registry::NoDeadline unbounded;
    state_of(req).served.tree->flush(*handle->staged);
    fuse_reply_err(req, 0);
  });
}
void op_fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  auto* handle = reinterpret_cast<FileHandle*>(fi->fh);
  int rc = 0;
  if (handle && handle->staged && handle->staged->fd) {  // not a base file of rootfs/ (read only)
    rc = datasync ? ::fdatasync(handle->staged->fd.get()) : ::fsync(handle->staged->fd.get());
  }
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}
// fsync of a directory: a staged tag is pushed now (`regfs push`, `sync -f`),
// the root pushes every pending build (`regfs umount`). The builds and
// pushes take what they take, as a push a close() completes (op_flush): a
// 1 GiB build outlasts --request-timeout.
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  staged_change(req, "fsyncdir", ino, [](MountTree& tree, const Node& dir) {
    registry::NoDeadline unbounded;
    tree.push_now(dir);
  });
}
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "setattr", [&] {
    auto node = node_or_throw(s, ino);
    SetAttr change;
    if (to_set & FUSE_SET_ATTR_SIZE) change.size = static_cast<uint64_t>(attr->st_size);
    if (to_set & FUSE_SET_ATTR_MODE) change.mode = attr->st_mode;
    if (to_set & FUSE_SET_ATTR_UID) change.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) change.gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
      change.atime = timespec{0, UTIME_NOW};
    else if (to_set & FUSE_SET_ATTR_ATIME)
      change.atime = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
      change.mtime = timespec{0, UTIME_NOW};
    else if (to_set & FUSE_SET_ATTR_MTIME)
      change.mtime = attr->st_mtim;
    auto* handle = fi ? reinterpret_cast<FileHandle*>(fi->fh) : nullptr;
    StagedFile* file = handle && handle->staged ? handle->staged.get() : nullptr;
    auto st =
        to_stat(s, ino, *node, s.served.tree->setattr(*node, file, change), AttrReply::kGetattr);
    fuse_reply_attr(req, &st, attr_timeout_of(s, *node));
  });
}
// copy_file_range from a blob of the mount into the staged blob of the same
// digest records a reference and moves no bytes; otherwise EXDEV makes the
// kernel copy through read and write.
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                        fuse_ino_t, off_t off_out, fuse_file_info* fi_out, size_t len, int) {
  if (refused_read_only(req)) return;
  auto& s = state_of(req);
  guarded(req, "copy_file_range", [&] {
    auto* out = reinterpret_cast<FileHandle*>(fi_out->fh);
    auto source = node_or_throw(s, ino_in);
    std::optional<uint64_t> copied;
    if (out->staged) {
      registry::NoDeadline unbounded;  // may complete the tag, and push it (see op_flush)
      copied = s.served.tree->copy_reference(*source, static_cast<uint64_t>(off_in), *out->staged,
                                             static_cast<uint64_t>(off_out), len);
    }
    if (copied) {
      fuse_reply_write(req, *copied);
    } else {
      fuse_reply_err(req, EXDEV);
    }
  });
}
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
  if (refused_read_only(req)) return;
  staged_change(req, "setxattr", ino, [&](MountTree& tree, const Node& node) {
    tree.setxattr(node, name, std::string(value, size), flags);
  });
}
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (refused_read_only(req)) return;
  staged_change(req, "removexattr", ino,
                [&](MountTree& tree, const Node& node) { tree.removexattr(node, name); });
}

}  // namespace regfs::fs::glue

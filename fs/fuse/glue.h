// What the FUSE callbacks share (fs/fuse/fuse_ops.cc: the mount, reads and
// listings; fs/fuse/fuse_changes.cc: changes of the staged tree): the
// mount's state, open file handles, and the helpers that reply. Only for
// fs/fuse.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cache/layer_data.h"
#include "fs/fuse/dir_listings.h"
#include "fs/fuse/errno_map.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/fuse/inode_table.h"
#include "registry/core/bounded_map.h"
#include "registry/core/deadline.h"

namespace regfs::fs::glue {

inline constexpr double kImmutableTimeout = 86400.0;
inline constexpr double kNegativeTimeout = 1.0;
inline constexpr unsigned kMaxIo = 1 << 20;

struct FileHandle;

struct MountState {
  Served served;
  std::unique_ptr<InodeTable> inodes;
  double ttl = 30.0;
  unsigned max_read = kMaxIo;  // as in -o max_read, which libfuse wants equal
  uid_t uid = 0;
  gid_t gid = 0;
  timespec mount_time{};
  std::unique_ptr<DirListings> listings;
  bool no_opendir = false;  // the kernel opens directories itself
  // The most one operation waits in total (--request-timeout, SPEC §7).
  std::chrono::milliseconds request_timeout{30'000};
  // --read-only: mounted `ro`, and the kernel opens files itself
  // (FUSE_CAP_NO_OPEN_SUPPORT): no OPEN, FLUSH or RELEASE reaches the daemon,
  // so a warm open costs what a local one does. Reads come by inode
  // (fs/fuse/inode_reads.cc).
  bool read_only = false;
  bool no_open = false;
  fuse_session* session = nullptr;  // for the invalidations of no_open
  // no_open: the handles reads by inode go through, of immutable files only,
  // until read to their end (a blob reader holds a descriptor, a lazy file
  // its last chunks: bounded).
  std::mutex inode_handles_mutex;
  registry::BoundedMap<fuse_ino_t, std::shared_ptr<FileHandle>> inode_handles{64};
  // A tag's index.json, manifest.json and config.json as the last reply
  // sized them: their READs serve that content, whatever the tag names now.
  registry::BoundedMap<fuse_ino_t, std::shared_ptr<FileHandle>> pinned{256};
  // When a READ of a kept handle last failed (fs/fuse/inode_reads.cc).
  registry::BoundedMap<fuse_ino_t, std::chrono::steady_clock::time_point> failed_reads{256};
  // no_open: the status file's content as the last GETATTR sized it.
  std::mutex status_mutex;
  std::shared_ptr<const std::string> status;
};

struct FileHandle {
  std::shared_ptr<const std::string> bytes;
  std::shared_ptr<BlobReader> reader;
  std::shared_ptr<StagedFile> staged = {};  // a file under a staged tag
  // A rootfs file: `entry` read through `layer`; spliced from `span` if its
  // bytes lie as they are in a local file (an uncompressed layer).
  std::shared_ptr<const cache::LayerData> layer = {};
  std::shared_ptr<const cache::TarEntry> entry = {};
  std::optional<cache::FileSpan> span = {};
};

inline MountState& state_of(fuse_req_t req) {
  return *static_cast<MountState*>(fuse_req_userdata(req));
}

// Runs `body`, which replies on success; any exception becomes the errno
// reply, and false. Everything it chains shares one deadline
// (registry/core/deadline.h).
template <typename Body>
bool guarded(fuse_req_t req, const char* operation, Body&& body) {
  registry::ScopedDeadline deadline(state_of(req).request_timeout);
  try {
    body();
    return true;
  } catch (...) {
    fuse_reply_err(req, current_exception_to_errno(operation));
    return false;
  }
}

inline NodePtr node_or_throw(MountState& s, fuse_ino_t ino) {
  auto node = s.inodes->get(ino);
  if (!node) throw registry::Error(registry::ErrorKind::kNotFound, "stale inode");
  return node;
}

// `answer`: a GETATTR (the kernel asks before each listing of a directory
// whose listing can change, so its mtime is checked then) or an entry.
enum class AttrReply { kGetattr, kEntry };

inline struct stat to_stat(MountState& s, fuse_ino_t ino, const Node& node, const Attr& attr,
                           AttrReply answer) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = attr.mode;
  st.st_nlink = attr.nlink;
  st.st_size = static_cast<off_t>(attr.size);
  st.st_blocks = static_cast<blkcnt_t>((attr.size + 511) / 512);
  st.st_blksize = 1 << 20;
  st.st_uid = s.uid;
  st.st_gid = s.gid;
  st.st_atim = st.st_mtim = st.st_ctim = s.mount_time;
  if (attr.version_nsec != 0) st.st_mtim.tv_nsec = attr.version_nsec;
  if (attr.own_metadata) {
    st.st_uid = attr.uid;
    st.st_gid = attr.gid;
    st.st_rdev = static_cast<dev_t>(attr.rdev);
    st.st_mtim = timespec{static_cast<time_t>(attr.mtime), static_cast<long>(attr.mtime_nsec)};
    st.st_atim = st.st_ctim = st.st_mtim;
  } else if (DirListings::can_change(node)) {
    // See fs/fuse/dir_listings.h. An entry's attributes expire at once, so the
    // kernel asks GETATTR before listing it: `ls -l` of a namespace need not
    // list every repository in it.
    st.st_mtim =
        answer == AttrReply::kGetattr ? s.listings->mtime(node) : s.listings->last_mtime(node);
  }
  return st;
}

inline double entry_timeout_of(MountState& s, const Node& node) {
  return node.immutable() ? kImmutableTimeout : s.ttl;
}

// A mutable directory's attributes are asked for before each listing, so
// the kernel rereads a listing that changed (fs/fuse/dir_listings.h).
// A staged file's attributes change under the kernel too (a mode set as an
// ACL, a restored config.json, another name of a hardlink): asked each time.
// So are a tag's files (what the tag names may have moved): every read asks,
// so all of them follow the tag together.
inline bool follows_a_tag(const Node& node) {
  return node.is_tag_image() &&
         (node.kind == NodeKind::kIndexFile || node.kind == NodeKind::kManifestFile ||
          node.kind == NodeKind::kConfigFile);
}
inline double attr_timeout_of(MountState& s, const Node& node) {
  if (node.kind == NodeKind::kStaged || node.kind == NodeKind::kStatusFile) return 0.0;
  if (follows_a_tag(node)) return 0.0;
  return DirListings::can_change(node) ? 0.0 : entry_timeout_of(s, node);
}

// Fills `e` for a positive entry and counts the lookup.
inline fuse_entry_param entry_of(MountState& s, const NodePtr& node, const Attr& attr) {
  fuse_entry_param e{};
  e.ino = s.inodes->add_lookup(node);
  e.generation = 0;
  e.attr = to_stat(s, e.ino, *node, attr, AttrReply::kEntry);
  e.entry_timeout = entry_timeout_of(s, *node);
  e.attr_timeout = attr_timeout_of(s, *node);
  return e;
}

// The handle reads of `file` go through (a staged file, bytes, a blob
// reader or a rootfs entry of a layer).
FileHandle make_handle(MountFile file);

// Reads by inode on a no_open mount (fs/fuse/inode_reads.cc).
// The handle READs of `ino` go through: kept (bounded) for an immutable
// file, made for this READ otherwise. Throws the tree's errors.
// `direct_start`: an O_DIRECT READ at offset 0 (the status file is made anew).
std::shared_ptr<FileHandle> handle_of_inode(MountState& s, fuse_ino_t ino, bool direct_start);
// After a READ of `ino` through `handle` up to byte `end` was answered: a
// file read to its end is done with (its pages are the kernel's), so its
// handle, which may hold a lazy file's last chunks, is not kept.
void read_by_inode_done(MountState& s, fuse_ino_t ino, const FileHandle& handle, uint64_t end);
// After a failed READ of `ino` was answered: drops the pages the kernel kept,
// so a blob found wrong is not read from earlier pages; its handle fails the
// kernel's repeat of the read and is made anew by a READ 250 ms later.
void drop_inode_pages(MountState& s, fuse_ino_t ino);
// The attributes a reply gives `node`: the tree's; on a no_open mount the
// status file's content is made here, sized and stamped now, and kept for
// the READs that follow.
// On a no_open mount a tag's files are opened here too (`ino`: the inode the
// reply is for, 0 if none yet) and their READs pinned to that content.
Attr attr_of(MountState& s, const Node& node, fuse_ino_t ino);

// Answers EROFS for a change on a read-only mount (the kernel refuses them
// itself, unless the mount was remounted rw behind the daemon), and says so.
inline bool refused_read_only(fuse_req_t req) {
  if (!state_of(req).read_only) return false;
  fuse_reply_err(req, EROFS);
  return true;
}

// Changes of the staged tree (fs/fuse/fuse_changes.cc).
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned int flags);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name);
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi);
void op_write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
              fuse_file_info* fi);
void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi);
void op_fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                        fuse_ino_t, off_t off_out, fuse_file_info* fi_out, size_t len, int);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

}  // namespace regfs::fs::glue

// Reads on a read-only mount, where the kernel opens files itself
// (FUSE_CAP_NO_OPEN_SUPPORT): a READ comes with no handle (fh 0) and is
// served by inode. libfuse 3.14's fuse_lowlevel.h, `open`: "If this request
// is answered with an error code of ENOSYS and FUSE_CAP_NO_OPEN_SUPPORT is
// set in `fuse_conn_info.capable`, this is treated as success and future
// calls to open will also succeed without being sent to the filesystem".
// The kernel then keeps every file's pages across opens, so what can change
// says so by its attributes (glue.h: a tag's files by their mtime, the
// status file here), and a READ that fails drops the pages it left.
#include <fcntl.h>

#include <ctime>

#include "fs/fuse/glue.h"

namespace regfs::fs::glue {

FileHandle make_handle(MountFile file) {
  FileHandle handle;
  if (file.staged) {
    handle.staged = std::move(file.staged);
    return handle;
  }
  auto& opened = file.remote;
  handle.bytes = opened.bytes;
  handle.reader = opened.reader;
  if (opened.layer) {
    handle.layer = opened.layer;
    handle.entry = opened.entry;
    handle.span = opened.layer->file_span(*opened.entry);
  }
  return handle;
}

namespace {

constexpr std::chrono::milliseconds kFailedReadHeld{250};

std::shared_ptr<const std::string> status_snapshot(MountState& s, const Node& node, bool fresh) {
  std::lock_guard lock(s.status_mutex);
  if (fresh || !s.status) s.status = s.served.tree->open(node, O_RDONLY).remote.bytes;
  return s.status;
}

}  // namespace

std::shared_ptr<FileHandle> handle_of_inode(MountState& s, fuse_ino_t ino, bool direct_start) {
  auto node = node_or_throw(s, ino);
  if (node->kind == NodeKind::kStatusFile) {
    // Through the page cache, the content the last GETATTR sized; read
    // O_DIRECT from its start (regfs status), made now and read whole.
    auto handle = std::make_shared<FileHandle>();
    handle->bytes = status_snapshot(s, *node, direct_start);
    return handle;
  }
  if (follows_a_tag(*node)) {
    {
      std::lock_guard lock(s.inode_handles_mutex);
      if (auto* pinned = s.pinned.find(ino)) return *pinned;
    }
    auto handle = std::make_shared<FileHandle>(make_handle(s.served.tree->open(*node, O_RDONLY)));
    std::lock_guard lock(s.inode_handles_mutex);
    return s.pinned.put(ino, std::move(handle));
  }
  if (!node->immutable()) {
    return std::make_shared<FileHandle>(make_handle(s.served.tree->open(*node, O_RDONLY)));
  }
  {
    std::lock_guard lock(s.inode_handles_mutex);
    if (auto* kept = s.inode_handles.find(ino)) {
      // A handle whose read failed keeps failing the kernel's repeat of that
      // read (at once), as an opened file's would; a later read starts anew.
      auto* failed = s.failed_reads.find(ino);
      if (!failed || std::chrono::steady_clock::now() - *failed < kFailedReadHeld) return *kept;
      s.failed_reads.erase(ino);
      s.inode_handles.erase(ino);
    }
  }
  auto handle = std::make_shared<FileHandle>(make_handle(s.served.tree->open(*node, O_RDONLY)));
  std::lock_guard lock(s.inode_handles_mutex);
  if (auto* kept = s.inode_handles.find(ino)) return *kept;  // made meanwhile by another READ
  return s.inode_handles.put(ino, handle);
}

void read_by_inode_done(MountState& s, fuse_ino_t ino, const FileHandle& handle, uint64_t end) {
  uint64_t size = handle.entry    ? handle.entry->size
                  : handle.reader ? handle.reader->size()
                                  : UINT64_MAX;  // bytes are not kept (immutable files only)
  if (end < size) return;
  std::lock_guard lock(s.inode_handles_mutex);
  s.inode_handles.erase(ino);
}

void drop_inode_pages(MountState& s, fuse_ino_t ino) {
  {
    std::lock_guard lock(s.inode_handles_mutex);
    // From its first failure: the handle is made anew 250 ms on, however
    // often it failed since.
    if (!s.failed_reads.contains(ino)) s.failed_reads.put(ino, std::chrono::steady_clock::now());
  }
  // After the reply: the pages that READ was for are unlocked by then.
  fuse_lowlevel_notify_inval_inode(s.session, ino, 0, 0);
}

Attr attr_of(MountState& s, const Node& node, fuse_ino_t ino) {
  if (s.no_open && ino != 0 && follows_a_tag(node)) {
    // One resolution of the tag for the size, the mtime and the READs that
    // follow, so the kernel never holds one image's size with another's bytes.
    auto handle = std::make_shared<FileHandle>(make_handle(s.served.tree->open(node, O_RDONLY)));
    Attr attr;
    attr.mode = S_IFREG | 0444;
    attr.size = handle->bytes ? handle->bytes->size() : handle->reader->size();
    auto identity = handle->bytes ? std::hash<std::string>{}(*handle->bytes)
                                  : std::hash<std::string>{}(handle->reader->digest());
    attr.version_nsec = static_cast<uint32_t>(identity % 999'999'999) + 1;
    std::lock_guard lock(s.inode_handles_mutex);
    s.pinned.put(ino, std::move(handle));
    return attr;
  }
  auto attr = s.served.tree->attr(node);
  if (s.no_open && node.kind == NodeKind::kStatusFile) {
    // Made now and kept for the READs that follow; a new mtime each time, so
    // the kernel drops the pages of the previous one.
    attr.size = status_snapshot(s, node, true)->size();
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    attr.own_metadata = true;
    attr.uid = s.uid;
    attr.gid = s.gid;
    attr.mtime = now.tv_sec;
    attr.mtime_nsec = static_cast<uint32_t>(now.tv_nsec);
  }
  return attr;
}

}  // namespace regfs::fs::glue

#include "fs/fuse/fuse_ops.h"

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
#include <utility>

#include "cache/layer_data.h"
#include "cache/layer_index.h"
#include "fs/fuse/dir_listings.h"
#include "fs/fuse/errno_map.h"
#include "fs/fuse/glue.h"
#include "fs/fuse/inode_table.h"
#include "fs/push/mount_tree.h"
#include "registry/core/deadline.h"
#include "registry/core/log.h"

namespace regfs::fs {
using namespace glue;  // NOLINT: fs/fuse/glue.h
namespace {

void op_init(void* userdata, fuse_conn_info* conn) {
  // 1 MiB requests (libfuse's largest buffer; max_read also in fuse_arguments),
  // and enough background requests for the kernel's readahead to run ahead.
  conn->max_read = static_cast<MountState*>(userdata)->max_read;
  conn->max_write = kMaxIo;
  conn->max_readahead = kMaxIo;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  // Listings kept by the kernel are checked against the directory's mtime.
  auto& s = *static_cast<MountState*>(userdata);
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
  s.no_opendir =
      (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) && (conn->want & FUSE_CAP_AUTO_INVAL_DATA);
  // A read-only mount has no close() to answer (nothing is staged through
  // it): files are opened by the kernel alone (fs/fuse/inode_reads.cc).
  s.no_open = s.read_only && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) &&
              (conn->want & FUSE_CAP_AUTO_INVAL_DATA);
  LOG(kInfo) << "Mount ready" << (s.read_only ? " (read-only)" : "");
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto& s = state_of(req);
  guarded(req, "lookup", [&] {
    auto dir = node_or_throw(s, parent);
    auto node = s.served.tree->lookup(*dir, name);
    if (!node) {
      fuse_entry_param e{};
      e.entry_timeout = kNegativeTimeout;
      fuse_reply_entry(req, &e);
      return;
    }
    auto e = entry_of(s, node, attr_of(s, *node, 0));
    if (fuse_reply_entry(req, &e) != 0) s.inodes->forget(e.ino, 1);
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  state_of(req).inodes->forget(ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  auto& s = state_of(req);
  for (size_t i = 0; i < count; ++i) s.inodes->forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto& s = state_of(req);
  guarded(req, "getattr", [&] {
    auto node = node_or_throw(s, ino);
    auto st = to_stat(s, ino, *node, attr_of(s, *node, ino), AttrReply::kGetattr);
    fuse_reply_attr(req, &st, attr_timeout_of(s, *node));
  });
}

// Directories are opened by the kernel alone (FUSE_CAP_NO_OPENDIR_SUPPORT),
// which then keeps every listing (fs/fuse/dir_listings.h). A kernel without it
// gets an open that caches the listings of immutable directories only.
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto& s = state_of(req);
  if (s.no_opendir) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  guarded(req, "opendir", [&] {
    auto node = node_or_throw(s, ino);
    fi->cache_readdir = node->immutable();
    fi->keep_cache = node->immutable();
    fuse_reply_open(req, fi);
  });
}

// libfuse's FUSE_UNKNOWN_INO (lib/fuse.c): a d_ino for "not known".
constexpr ino_t kUnknownIno = 0xffffffff;

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, bool plus) {
  auto& s = state_of(req);
  const char* operation = plus ? "readdirplus" : "readdir";
  DirListings::Listing listing;
  try {
    registry::ScopedDeadline deadline(s.request_timeout);
    listing = s.listings->list(ino, *node_or_throw(s, ino), offset);
  } catch (...) {
    fuse_reply_err(req, current_exception_to_errno(operation));
    return;
  }
  const auto& entries = *listing;
  std::string buffer(size, '\0');
  size_t used = 0;
  auto total = static_cast<off_t>(entries.size()) + 2;
  off_t i = offset;
  for (; i < total; ++i) {
    char* at = buffer.data() + used;
    size_t room = size - used;
    size_t need;
    if (i < 2) {
      struct stat st {};
      st.st_ino = ino;
      st.st_mode = S_IFDIR;
      const char* name = i == 0 ? "." : "..";
      if (plus) {
        fuse_entry_param e{};
        e.attr = st;
        need = fuse_add_direntry_plus(req, at, room, name, &e, i + 1);
      } else {
        need = fuse_add_direntry(req, at, room, name, &st, i + 1);
      }
    } else {
      const auto& node = entries[static_cast<size_t>(i - 2)];
      if (plus) {
        Attr attr;
        try {
          attr = s.served.tree->attr(*node);
        } catch (...) {
          int err = current_exception_to_errno(operation);
          if (used == 0) {
            fuse_reply_err(req, err);
            return;
          }
          break;
        }
        auto e = entry_of(s, node, attr);
        need = fuse_add_direntry_plus(req, at, room, node->name.c_str(), &e, i + 1);
        if (need > room) s.inodes->forget(e.ino, 1);
      } else {
        // d_ino: readdir(3) skips an entry whose d_ino is 0 (ls showed only
        // what the first READDIRPLUS of a long listing held); one the kernel
        // has not looked up yet gets libfuse's FUSE_UNKNOWN_INO.
        struct stat st {};
        st.st_mode = node->type_bits();
        st.st_ino = s.inodes->known(node->key);
        if (st.st_ino == 0) st.st_ino = kUnknownIno;
        need = fuse_add_direntry(req, at, room, node->name.c_str(), &st, i + 1);
      }
    }
    if (need > room) break;
    used += need;
  }
  s.listings->served(ino, listing, i >= total);
  fuse_reply_buf(req, buffer.data(), used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  do_readdir(req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  do_readdir(req, ino, size, off, true);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto& s = state_of(req);
  if (s.no_open) {  // from now on the kernel opens files itself
    fuse_reply_err(req, ENOSYS);
    return;
  }
  guarded(req, "open", [&] {
    auto node = node_or_throw(s, ino);
    auto file = s.served.tree->open(*node, fi->flags);
    bool staged = static_cast<bool>(file.staged);
    auto opened_reader = file.remote.reader;
    // fi->fh points to it until op_release.
    auto handle = std::make_unique<FileHandle>(make_handle(std::move(file)));
    fi->fh = reinterpret_cast<uint64_t>(handle.get());
    if (staged) {
      if (fuse_reply_open(req, fi) == 0) handle.release();
      return;
    }
    // A blob not yet verified whole may turn out wrong (EIO, dropped): an
    // open then must not keep pages an earlier reader got before the check.
    fi->keep_cache = node->immutable() && (!opened_reader || opened_reader->verified());
    // Made at open: the status file has no size before; a tag's files are
    // read whole as opened, whatever size the kernel last heard of.
    fi->direct_io = node->kind == NodeKind::kStatusFile || follows_a_tag(*node);
    // Nothing to do at close() but for staged files: no FLUSH per close
    // (a third of the requests of a warm `grep -r`).
    fi->noflush = 1;
    if (fuse_reply_open(req, fi) == 0) handle.release();
  });
}

// Answers a READ of `size` bytes at `off` through `handle`; false if it was
// answered with an error.
bool read_from(fuse_req_t req, const FileHandle* handle, size_t size, off_t off) {
  if (handle->staged) {
    return guarded(req, "read", [&] {
      std::string buffer(size, '\0');
      size_t n = state_of(req).served.tree->read(*handle->staged, buffer.data(), size,
                                                 static_cast<uint64_t>(off));
      fuse_reply_buf(req, buffer.data(), n);
    });
  }
  if (handle->bytes) {
    // Held here: once the kernel has the reply, a RELEASE on another thread
    // may free the handle while fuse_reply_buf is still returning.
    auto held = handle->bytes;
    const std::string& bytes = *held;
    if (off >= static_cast<off_t>(bytes.size())) {
      fuse_reply_buf(req, nullptr, 0);
      return true;
    }
    size_t n = std::min(size, bytes.size() - static_cast<size_t>(off));
    fuse_reply_buf(req, bytes.data() + off, n);
    return true;
  }
  if (handle->span) {  // a rootfs file of an uncompressed layer: one splice
    uint64_t length = handle->entry->size;
    uint64_t begin = std::min(static_cast<uint64_t>(off), length);
    fuse_bufvec buf = FUSE_BUFVEC_INIT(std::min<uint64_t>(size, length - begin));
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = handle->span->fd;
    buf.buf[0].pos = static_cast<off_t>(handle->span->offset + begin);
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
    return true;
  }
  if (handle->layer) {           // a rootfs file: through its layer (decompressed)
    auto layer = handle->layer;  // held: see above
    auto entry = handle->entry;
    return guarded(req, "read", [&] {
      std::string buffer(std::min<uint64_t>(size, entry->size), '\0');
      size_t n =
          layer->read_entry(*entry, static_cast<uint64_t>(off), buffer.data(), buffer.size());
      fuse_reply_buf(req, buffer.data(), n);
    });
  }
  auto reader = handle->reader;  // held: the lease must not outlive its blob (see above)
  return guarded(req, "read", [&] {
    auto lease = reader->read(static_cast<uint64_t>(off), size);
    fuse_bufvec buf = FUSE_BUFVEC_INIT(lease.length());
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = lease.fd();
    buf.buf[0].pos = static_cast<off_t>(lease.offset());
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  });
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  if (fi->fh != 0) {
    read_from(req, reinterpret_cast<const FileHandle*>(fi->fh), size, off);
    return;
  }
  // Opened by the kernel alone (a no_open mount): by inode.
  auto& s = state_of(req);
  std::shared_ptr<FileHandle> handle;
  bool direct_start = (fi->flags & O_DIRECT) && off == 0;
  if (!guarded(req, "read", [&] { handle = handle_of_inode(s, ino, direct_start); })) return;
  if (!read_from(req, handle.get(), size, off)) {
    drop_inode_pages(s, ino);
  } else {
    read_by_inode_done(s, ino, *handle, static_cast<uint64_t>(off) + size);
  }
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<FileHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  auto& s = state_of(req);
  guarded(req, "readlink", [&] {
    auto target = s.served.tree->readlink(*node_or_throw(s, ino));
    fuse_reply_readlink(req, target.c_str());
  });
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto& s = state_of(req);
  guarded(req, "getxattr", [&] {
    auto value = s.served.tree->xattr(*node_or_throw(s, ino), name);
    if (!value) {
      fuse_reply_err(req, ENODATA);
    } else if (size == 0) {
      fuse_reply_xattr(req, value->size());
    } else if (size < value->size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, value->data(), value->size());
    }
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto& s = state_of(req);
  guarded(req, "listxattr", [&] {
    std::string names;
    for (auto& name : s.served.tree->xattr_names(*node_or_throw(s, ino))) {
      names += name;
      names.push_back('\0');
    }
    if (size == 0) {
      fuse_reply_xattr(req, names.size());
    } else if (size < names.size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, names.data(), names.size());
    }
  });
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs st {};
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_namemax = NAME_MAX;
  fuse_reply_statfs(req, &st);
}

fuse_lowlevel_ops make_operations() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.open = op_open;
  ops.read = op_read;
  ops.release = op_release;
  ops.readlink = op_readlink;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.statfs = op_statfs;
  ops.mkdir = op_mkdir;
  ops.mknod = op_mknod;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.write = op_write;
  ops.flush = op_flush;
  ops.fsync = op_fsync;
  ops.fsyncdir = op_fsyncdir;
  ops.copy_file_range = op_copy_file_range;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.create = op_create;
  ops.setattr = op_setattr;
  ops.setxattr = op_setxattr;
  ops.removexattr = op_removexattr;
  return ops;
}

// RAII for the libfuse handles, torn down in reverse order.
struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct LoopConfigDeleter {
  void operator()(fuse_loop_config* cfg) const { fuse_loop_cfg_destroy(cfg); }
};

// The user's -o max_read=N, else 1 MiB.
unsigned max_read_of(const MountOptions& options) {
  unsigned max_read = kMaxIo;
  for (const auto& option : options.fuse_options) {
    if (option.rfind("max_read=", 0) == 0) {
      max_read = static_cast<unsigned>(std::strtoul(option.c_str() + 9, nullptr, 10));
    }
  }
  return max_read;
}

std::vector<std::string> fuse_arguments(const MountOptions& options) {
  std::string fsname = "regfs" + (options.registry.empty() ? "" : ":" + options.registry);
  std::vector<std::string> args = {"regfs", "-o", "fsname=" + fsname, "-o", "subtype=regfs"};
  args.push_back("-o");
  args.push_back("max_read=" + std::to_string(max_read_of(options)));
  bool allow_other = false;
  for (const auto& option : options.fuse_options) {
    args.push_back("-o");
    args.push_back(option);
    if (option == "allow_other") allow_other = true;
  }
  if (options.read_only) {
    args.push_back("-o");
    args.push_back("ro");
  }
  if (allow_other) {
    args.push_back("-o");
    args.push_back("default_permissions");
    LOG(kWarning) << "allow_other: other users can read what this mount shows, private images "
                     "included";
  }
  return args;
}

}  // namespace

int mount_and_serve(const MountOptions& options, const std::function<Served()>& build) {
  auto arg_strings = fuse_arguments(options);
  std::vector<char*> argv;
  for (auto& a : arg_strings) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  MountState state;
  state.ttl = static_cast<double>(options.tag_ttl.count());
  if (options.request_timeout.count() > 0) state.request_timeout = options.request_timeout;
  state.max_read = max_read_of(options);
  state.read_only = options.read_only;
  state.uid = ::getuid();
  state.gid = ::getgid();
  clock_gettime(CLOCK_REALTIME, &state.mount_time);

  auto ops = make_operations();
  std::unique_ptr<fuse_session, SessionDeleter> session(
      fuse_session_new(&args, &ops, sizeof ops, &state));
  fuse_opt_free_args(&args);
  if (!session) {
    std::fprintf(stderr, "regfs: Cannot start FUSE session: bad FUSE options\n");
    return 1;
  }
  state.session = session.get();
  if (fuse_set_signal_handlers(session.get()) != 0) {
    std::fprintf(stderr, "regfs: Cannot install signal handlers\n");
    return 1;
  }
  if (fuse_session_mount(session.get(), options.mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(session.get());
    std::fprintf(stderr,
                 "regfs: Cannot mount on %s (is it a directory, and not mounted already?)\n",
                 options.mountpoint.c_str());
    return 1;
  }
  fuse_daemonize(options.foreground ? 1 : 0);
  int rc = 0;
  try {
    state.served = build();
    state.inodes = std::make_unique<InodeTable>(state.served.tree->root());
    state.listings = std::make_unique<DirListings>(
        [tree = state.served.tree.get()](const Node& dir) { return tree->list(dir); });
    std::unique_ptr<fuse_loop_config, LoopConfigDeleter> loop(fuse_loop_cfg_create());
    fuse_loop_cfg_set_clone_fd(loop.get(), 0);
    fuse_loop_cfg_set_idle_threads(loop.get(), 8);
    fuse_loop_cfg_set_max_threads(loop.get(), 32);
    rc = fuse_session_loop_mt(session.get(), loop.get()) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    LOG(kError) << "Cannot serve the mount: " << e.what();
    rc = 1;
  }
  fuse_session_unmount(session.get());
  fuse_remove_signal_handlers(session.get());
  LOG(kInfo) << "Unmounted " << options.mountpoint;
  return rc;
}

}  // namespace regfs::fs

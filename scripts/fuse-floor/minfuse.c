// The least a FUSE server can do: a root directory holding one 64 KiB file
// "f", every request answered at once from memory. Used by scripts/fuse-floor
// to measure what one OPEN/RELEASE round trip costs on this machine, against
// which the daemon's own cost per open is judged.
//
// minfuse MOUNTPOINT open|noopen
//   open:   OPEN answered with keep_cache and noflush (as regfs answers a
//           rootfs file): each open(2) is an OPEN round trip and a RELEASE.
//   noopen: OPEN and FLUSH answered ENOSYS (FUSE_CAP_NO_OPEN_SUPPORT): the
//           kernel stops sending either, keeps the page cache, and an
//           open(2) of a file it knows costs no request at all.
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>

static int no_open;
static char data[65536];

static void stat_of(fuse_ino_t ino, struct stat* st) {
  memset(st, 0, sizeof *st);
  st->st_ino = ino;
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = sizeof data;
  }
}

static void op_init(void* userdata, struct fuse_conn_info* conn) {
  (void)userdata;
  if (no_open && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != FUSE_ROOT_ID || strcmp(name, "f") != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  e.ino = 2;
  e.attr_timeout = e.entry_timeout = 86400;
  stat_of(e.ino, &e.attr);
  fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  (void)fi;
  struct stat st;
  stat_of(ino, &st);
  fuse_reply_attr(req, &st, 86400);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  (void)ino;
  if (no_open) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  fi->keep_cache = 1;
  fi->noflush = 1;
  fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info* fi) {
  (void)ino;
  (void)fi;
  if (off >= (off_t)sizeof data) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  if (size > sizeof data - (size_t)off) size = sizeof data - (size_t)off;
  fuse_reply_buf(req, data + off, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, no_open ? ENOSYS : 0);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: minfuse MOUNTPOINT open|noopen\n");
    return 2;
  }
  no_open = strcmp(argv[2], "noopen") == 0;
  char* fuse_argv[] = {argv[0], "-o", "fsname=minfuse", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
  struct fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.open = op_open;
  ops.read = op_read;
  ops.release = op_release;
  ops.flush = op_flush;
  struct fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, NULL);
  if (se == NULL || fuse_session_mount(se, argv[1]) != 0) return 1;
  // Threads as regfs's loop has them (fs/fuse/fuse_ops.cc).
  struct fuse_loop_config* loop = fuse_loop_cfg_create();
  fuse_loop_cfg_set_idle_threads(loop, 8);
  fuse_loop_cfg_set_max_threads(loop, 32);
  int rc = fuse_session_loop_mt(se, loop);
  fuse_loop_cfg_destroy(loop);
  fuse_session_unmount(se);
  fuse_session_destroy(se);
  return rc == 0 ? 0 : 1;
}

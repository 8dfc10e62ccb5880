// The changes of the rootfs overlay (fs/push/rootfs_overlay.h): copy-up,
// files and directories made, links, removals as whiteouts and opaque
// directories, renames, modes, owners and extended attributes.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "cache/unique_fd.h"
#include "fs/push/rootfs_overlay.h"
#include "fs/push/rootfs_overlay_paths.h"
#include "fs/push/staged_helpers.h"
#include "fs/tree/path.h"
#include "fs/tree/rootfs.h"

namespace regfs::fs {

namespace fsys = std::filesystem;

using namespace overlay;  // NOLINT: fs/push/rootfs_overlay_paths.h
using registry::ErrorKind;

namespace {

bool under(const std::string& key, const std::string& path) {
  return key == path || (key.size() > path.size() && key.compare(0, path.size(), path) == 0 &&
                         (path.empty() || key[path.size()] == '/'));
}

const std::string& key_of(const std::string& key) { return key; }
template <typename Value>
const std::string& key_of(const std::pair<const std::string, Value>& entry) {
  return entry.first;
}

// Drops what a map or set of the state keeps for `path` and under it.
template <typename Container>
void erase_under(Container& container, const std::string& path) {
  std::erase_if(container, [&](const auto& entry) { return under(key_of(entry), path); });
}

// Moves what a map or set of the state keeps for `from` and under it to `to`.
template <typename Container>
void move_under(Container& container, const std::string& from, const std::string& to) {
  Container moved;
  for (auto it = container.begin(); it != container.end();) {
    if (!under(key_of(*it), from)) {
      ++it;
      continue;
    }
    auto node = container.extract(it++);
    if constexpr (requires { node.key(); }) {
      node.key() = to + node.key().substr(from.size());
    } else {
      node.value() = to + node.value().substr(from.size());
    }
    moved.insert(std::move(node));
  }
  container.merge(moved);
}

// Writes the content of the base's file `from` to the new file `to`.
void copy_bytes(const OpenedFile& from, const fsys::path& to, const std::string& what) {
  cache::UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) fail_errno(errno, "Cannot copy up " + what);
  std::string buffer(from.bytes ? 0 : 1 << 20, '\0');
  uint64_t size = from.bytes ? from.bytes->size() : from.entry->size;
  try {
    for (uint64_t done = 0; done < size;) {
      // A file of a lazily read layer is in memory, fetched and verified;
      // others are read through their layer.
      const char* data = from.bytes ? from.bytes->data() + done : buffer.data();
      size_t n = from.bytes
                     ? static_cast<size_t>(size - done)
                     : from.layer->read_entry(*from.entry, done, buffer.data(), buffer.size());
      if (n == 0) fail(ErrorKind::kIo, "Cannot read " + what + " of the base");
      for (size_t written = 0; written < n;) {
        ssize_t w = ::write(out.get(), data + written, n - written);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) fail_errno(errno, "Cannot copy up " + what);
        written += static_cast<size_t>(w);
      }
      done += n;
    }
  } catch (...) {
    ::unlink(to.c_str());
    throw;
  }
}

}  // namespace

void RootfsOverlay::check_writable(const std::string& path) const {
  // In a layer such a name is a whiteout (OCI image-spec layer changesets):
  // it would delete, not add. Refused rather than changed in meaning.
  std::string name = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  if (name.starts_with(".wh.")) {
    fail(ErrorKind::kInvalid, "Cannot make rootfs/" + path +
                                  ": names starting with .wh. are whiteouts in an image layer");
  }
}

void RootfsOverlay::touch(const std::string& dir) {
  timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ::utimensat(AT_FDCWD, upper(dir).c_str(), now, AT_SYMLINK_NOFOLLOW);
}

void RootfsOverlay::copy_up(const std::string& path, bool data) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (in_upper(path)) return;
  auto state = changes();
  auto found = find(path, state);
  if (!found) fail(ErrorKind::kNotFound, "No rootfs/" + path);
  if (!path.empty()) copy_up(parent_of(path), false);
  fsys::path target = upper(path);
  cache::RootfsEntryMeta meta;
  Attr attr = this->attr(path);
  meta.mode = attr.mode & 07777;
  meta.uid = attr.uid;
  meta.gid = attr.gid;
  for (const auto& name : xattr_names(path)) {
    if (auto value = xattr(path, name)) meta.xattrs[name] = *value;
  }
  int rc = 0;
  switch (found->type) {
    case S_IFDIR:
      if (path.empty()) {
        std::error_code ec;
        fsys::create_directories(target, ec);
        rc = ec ? (errno = ec.value(), -1) : 0;
      } else {
        rc = ::mkdir(target.c_str(), 0700);
      }
      break;
    case S_IFLNK:
      rc = ::symlink(readlink(path).c_str(), target.c_str());
      break;
    case S_IFREG:
      if (data) {
        copy_bytes(open_lower(path), target, "rootfs/" + path);
      } else {
        cache::UniqueFd fd(::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        rc = fd ? 0 : -1;
      }
      break;
    case S_IFIFO:
      rc = ::mkfifo(target.c_str(), 0600);
      break;
    case S_IFCHR:
    case S_IFBLK:
      rc = ::mknod(target.c_str(), found->type | 0600, static_cast<dev_t>(attr.rdev));
      break;
    default:
      fail(ErrorKind::kUnsupported, "Cannot change rootfs/" + path + ": a socket of the base");
  }
  if (rc != 0) fail_errno(errno, "Cannot copy up rootfs/" + path);
  timespec times[2] = {{attr.mtime, static_cast<long>(attr.mtime_nsec)},
                       {attr.mtime, static_cast<long>(attr.mtime_nsec)}};
  ::utimensat(AT_FDCWD, target.c_str(), times, AT_SYMLINK_NOFOLLOW);
  update_path(path, [&](cache::RootfsChanges& c) { c.entries[path] = meta; });
}

fsys::path RootfsOverlay::create(const std::string& path, mode_t mode) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  copy_up(parent_of(path), false);
  update_path(path, [&](cache::RootfsChanges& c) {
    c.whiteouts.erase(path);
    c.entries[path] = cache::RootfsEntryMeta{static_cast<uint32_t>(mode & 07777), 0, 0, {}};
  });
  return upper(path);
}

void RootfsOverlay::mkdir(const std::string& path, mode_t mode) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (type(path)) fail(ErrorKind::kExists, "Cannot make rootfs/" + path + ": it exists");
  copy_up(parent_of(path), false);
  if (::mkdir(upper(path).c_str(), 0700) != 0) fail_errno(errno, "Cannot make rootfs/" + path);
  update_path(path, [&](cache::RootfsChanges& c) {
    // Where the base had a directory that was removed: a new one, opaque.
    if (c.whiteouts.erase(path)) c.opaque.insert(path);
    c.entries[path] = cache::RootfsEntryMeta{static_cast<uint32_t>(mode & 07777), 0, 0, {}};
  });
}

void RootfsOverlay::symlink(const std::string& path, const std::string& target) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (type(path)) fail(ErrorKind::kExists, "Cannot make rootfs/" + path + ": it exists");
  copy_up(parent_of(path), false);
  if (::symlink(target.c_str(), upper(path).c_str()) != 0) {
    fail_errno(errno, "Cannot make link rootfs/" + path);
  }
  update_path(path, [&](cache::RootfsChanges& c) {
    c.whiteouts.erase(path);
    c.entries[path] = cache::RootfsEntryMeta{0777, 0, 0, {}};
  });
}

void RootfsOverlay::mknod(const std::string& path, mode_t mode, dev_t rdev) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (type(path)) fail(ErrorKind::kExists, "Cannot make rootfs/" + path + ": it exists");
  copy_up(parent_of(path), false);
  if (::mknod(upper(path).c_str(), (mode & S_IFMT) | 0600, rdev) != 0) {
    fail_errno(errno, "Cannot make rootfs/" + path);
  }
  update_path(path, [&](cache::RootfsChanges& c) {
    c.whiteouts.erase(path);
    c.entries[path] = cache::RootfsEntryMeta{static_cast<uint32_t>(mode & 07777), 0, 0, {}};
  });
}

void RootfsOverlay::link(const std::string& from, const std::string& to) {
  std::lock_guard lock(*changing_);
  check_writable(to);
  auto source = type(from);
  if (!source) fail(ErrorKind::kNotFound, "No rootfs/" + from);
  if (*source == S_IFDIR) fail(ErrorKind::kNotPermitted, "Cannot link directory rootfs/" + from);
  if (type(to)) fail(ErrorKind::kExists, "Cannot link rootfs/" + to + ": it exists");
  copy_up(from, true);
  copy_up(parent_of(to), false);
  if (::link(upper(from).c_str(), upper(to).c_str()) != 0) {
    fail_errno(errno, "Cannot link rootfs/" + to);
  }
  update([&](cache::RootfsChanges& c) {
    c.whiteouts.erase(to);
    if (auto meta = c.entries.find(from); meta != c.entries.end()) c.entries[to] = meta->second;
  });
}

void RootfsOverlay::unlink(const std::string& path) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  auto found = type(path);
  if (!found) fail(ErrorKind::kNotFound, "No rootfs/" + path);
  if (*found == S_IFDIR) fail(ErrorKind::kIsDirectory, "Cannot unlink directory rootfs/" + path);
  bool whiteout = lower_has(path);
  if (in_upper(path) && ::unlink(upper(path).c_str()) != 0) {
    fail_errno(errno, "Cannot remove rootfs/" + path);
  }
  if (whiteout) copy_up(parent_of(path), false);  // the layer has the whiteout's directory
  update([&](cache::RootfsChanges& c) {
    c.entries.erase(path);
    if (whiteout) c.whiteouts.insert(path);
  });
  touch(parent_of(path));
}

void RootfsOverlay::rmdir(const std::string& path) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (path.empty()) fail(ErrorKind::kBusy, "Cannot remove rootfs/");
  auto found = type(path);
  if (!found) fail(ErrorKind::kNotFound, "No rootfs/" + path);
  if (*found != S_IFDIR)
    fail(ErrorKind::kNotDirectory, "Cannot remove rootfs/" + path + ": not a directory");
  if (!list(path).empty())
    fail(ErrorKind::kNotEmpty, "Cannot remove rootfs/" + path + ": not empty");
  bool whiteout = lower_has(path);
  if (in_upper(path) && ::rmdir(upper(path).c_str()) != 0) {
    fail_errno(errno, "Cannot remove rootfs/" + path);
  }
  if (whiteout) copy_up(parent_of(path), false);
  update([&](cache::RootfsChanges& c) {
    // One whiteout stands for the directory and all it held.
    erase_under(c.entries, path);
    erase_under(c.whiteouts, path);
    erase_under(c.opaque, path);
    if (whiteout) c.whiteouts.insert(path);
  });
  touch(parent_of(path));
}

void RootfsOverlay::rename(const std::string& from, const std::string& to) {
  std::lock_guard lock(*changing_);
  check_writable(to);
  if (from == to) return;
  if (under(to, from)) fail(ErrorKind::kInvalid, "Cannot move rootfs/" + from + " into itself");
  auto state = changes();
  auto source = find(from, state);
  if (!source) fail(ErrorKind::kNotFound, "No rootfs/" + from);
  auto target = find(to, state);
  bool from_lower = lower_at(from, state).has_value();
  bool to_lower = lower_at(to, state).has_value();
  if (source->type == S_IFDIR) {
    // Its entries in the base would have to move too (overlayfs's
    // redirect_dir): EXDEV, and mv copies and deletes instead.
    if (from_lower && !state.opaque.count(from)) {
      fail(ErrorKind::kCrossDevice, "Cannot rename rootfs/" + from + ": a directory of the base");
    }
    if (target && target->type != S_IFDIR)
      fail(ErrorKind::kNotDirectory, "Cannot rename over rootfs/" + to);
    if (target && !list(to).empty()) fail(ErrorKind::kNotEmpty, "Cannot rename over rootfs/" + to);
  } else {
    if (target && target->type == S_IFDIR)
      fail(ErrorKind::kIsDirectory, "Cannot rename over rootfs/" + to);
    copy_up(from, true);
  }
  copy_up(parent_of(to), false);
  if (::rename(upper(from).c_str(), upper(to).c_str()) != 0) {
    fail_errno(errno, "Cannot rename rootfs/" + from);
  }
  update([&](cache::RootfsChanges& c) {
    erase_under(c.entries, to);
    erase_under(c.whiteouts, to);
    erase_under(c.opaque, to);
    move_under(c.entries, from, to);
    move_under(c.whiteouts, from, to);
    move_under(c.opaque, from, to);
    if (from_lower) c.whiteouts.insert(from);
    if (source->type == S_IFDIR && to_lower) c.opaque.insert(to);
  });
  touch(parent_of(from));
  touch(parent_of(to));
}

void RootfsOverlay::chmod(const std::string& path, mode_t mode) {
  std::lock_guard lock(*changing_);
  copy_up(path, true);
  update_path(path, [&](cache::RootfsChanges& c) { c.entries[path].mode = mode & 07777; });
  share_with_links(path);
}

void RootfsOverlay::chown(const std::string& path, std::optional<uint32_t> uid,
                          std::optional<uint32_t> gid) {
  std::lock_guard lock(*changing_);
  copy_up(path, true);
  update_path(path, [&](cache::RootfsChanges& c) {
    auto& meta = c.entries[path];
    if (uid) meta.uid = *uid;
    if (gid) meta.gid = *gid;
  });
  share_with_links(path);
}

void RootfsOverlay::truncate(const std::string& path, uint64_t size) {
  std::lock_guard lock(*changing_);
  copy_up(path, size > 0);
  if (::truncate(upper(path).c_str(), static_cast<off_t>(size)) != 0) {
    fail_errno(errno, "Cannot truncate rootfs/" + path);
  }
  update_path(path, [](cache::RootfsChanges&) {});
}

void RootfsOverlay::set_times(const std::string& path, std::optional<timespec> atime,
                              std::optional<timespec> mtime) {
  std::lock_guard lock(*changing_);
  copy_up(path, true);
  timespec times[2] = {atime.value_or(timespec{0, UTIME_OMIT}),
                       mtime.value_or(timespec{0, UTIME_OMIT})};
  if (::utimensat(AT_FDCWD, upper(path).c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    fail_errno(errno, "Cannot set times of rootfs/" + path);
  }
  update_path(path, [](cache::RootfsChanges&) {});
}

void RootfsOverlay::setxattr(const std::string& path, const std::string& name,
                             const std::string& value, int flags) {
  std::lock_guard lock(*changing_);
  if (name.starts_with("user.regfs.")) return;  // the mount's own: accepted, not stored
  auto present = xattr(path, name).has_value();
  if ((flags & XATTR_CREATE) && present)
    fail(ErrorKind::kExists, "Cannot set " + name + ": it is set");
  if ((flags & XATTR_REPLACE) && !present)
    fail(ErrorKind::kNoAttribute, "Cannot replace " + name + ": not set");
  copy_up(path, true);
  update_path(path, [&](cache::RootfsChanges& c) { c.entries[path].xattrs[name] = value; });
  share_with_links(path);
}

void RootfsOverlay::removexattr(const std::string& path, const std::string& name) {
  std::lock_guard lock(*changing_);
  if (!xattr(path, name))
    fail(ErrorKind::kNoAttribute, "Cannot remove " + name + " of rootfs/" + path);
  copy_up(path, true);
  update_path(path, [&](cache::RootfsChanges& c) { c.entries[path].xattrs.erase(name); });
  share_with_links(path);
}

void RootfsOverlay::share_with_links(const std::string& path) {
  auto names = staged::other_names_of(upper(""), path);
  if (names.empty()) return;
  update([&](cache::RootfsChanges& c) {
    auto meta = c.entries[path];
    for (const auto& name : names) c.entries[name] = meta;
  });
}

bool RootfsOverlay::has_changes() const {
  auto state = changes();
  if (!state.whiteouts.empty() || !state.opaque.empty()) return true;
  std::error_code ec;
  return fsys::exists(upper(""), ec) && !fsys::is_empty(upper(""), ec);
}

}  // namespace regfs::fs

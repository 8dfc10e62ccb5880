#include "fs/push/rootfs_overlay.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <system_error>

#include "cache/unique_fd.h"
#include "fs/tree/path.h"
#include "fs/tree/rootfs.h"

namespace regfs::fs {

namespace fsys = std::filesystem;

namespace {

[[noreturn]] void fail(int error, const std::string& message) {
  throw std::system_error(error, std::generic_category(), message);
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

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

// The lower tree's view of `path` as RootfsView reads it.
Node lower_node(const std::string& path) {
  Node node;
  node.kind = NodeKind::kRootfs;
  node.rootfs_path = path;
  return node;
}

void copy_bytes(const OpenedFile& from, const fsys::path& to, const std::string& what) {
  cache::UniqueFd in(::open(from.file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) fail(errno, "Cannot read " + what + " of the base");
  cache::UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) fail(errno, "Cannot copy up " + what);
  std::string buffer(1 << 20, '\0');
  uint64_t done = 0;
  try {
    while (done < from.length) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), from.length - done));
      ssize_t n = ::pread(in.get(), buffer.data(), want, static_cast<off_t>(from.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(n < 0 ? errno : EIO, "Cannot read " + what + " of the base");
      for (ssize_t written = 0; written < n;) {
        ssize_t w = ::write(out.get(), buffer.data() + written, static_cast<size_t>(n - written));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) fail(errno, "Cannot copy up " + what);
        written += w;
      }
      done += static_cast<uint64_t>(n);
    }
  } catch (...) {
    ::unlink(to.c_str());
    throw;
  }
}

}  // namespace

RootfsOverlay::RootfsOverlay(cache::StagingArea& area, cache::StagedTag tag,
                             std::shared_ptr<const MergedTree> lower, bool read_only,
                             std::shared_ptr<std::recursive_mutex> changing)
    : area_(area),
      tag_(std::move(tag)),
      lower_(std::move(lower)),
      read_only_(read_only),
      changing_(changing ? std::move(changing) : std::make_shared<std::recursive_mutex>()) {}

cache::RootfsChanges RootfsOverlay::changes() const { return area_.state(tag_).rootfs; }

void RootfsOverlay::update(const std::function<void(cache::RootfsChanges&)>& change) {
  area_.update_state(tag_, [&](cache::StagedTagState& s) {
    change(s.rootfs);
    s.pushed_digest.clear();  // what is staged now was not pushed yet
  });
}

fsys::path RootfsOverlay::upper(const std::string& path) const {
  auto dir = area_.upper_dir(tag_);
  return path.empty() ? dir : dir / path;
}

bool RootfsOverlay::in_upper(const std::string& path) const {
  struct stat st;
  return ::lstat(upper(path).c_str(), &st) == 0;
}

std::optional<uint32_t> RootfsOverlay::lower_at(const std::string& path,
                                                const cache::RootfsChanges& changes) const {
  if (!lower_ || changes.whiteouts.count(path)) return std::nullopt;
  if (!path.empty()) {
    for (std::string dir = parent_of(path);; dir = parent_of(dir)) {
      if (changes.opaque.count(dir) || changes.whiteouts.count(dir)) return std::nullopt;
      if (dir.empty()) break;
    }
  }
  return lower_->find(path);
}

bool RootfsOverlay::lower_has(const std::string& path) const {
  return lower_at(path, changes()).has_value();
}

std::optional<RootfsOverlay::Found> RootfsOverlay::find(const std::string& path,
                                                        const cache::RootfsChanges& changes) const {
  struct stat st;
  if (::lstat(upper(path).c_str(), &st) == 0) return Found{true, st.st_mode & S_IFMT};
  if (auto index = lower_at(path, changes)) return Found{false, lower_->node(*index).type_bits()};
  if (path.empty()) return Found{false, S_IFDIR};  // an empty base
  return std::nullopt;
}

std::optional<mode_t> RootfsOverlay::type(const std::string& path) const {
  auto found = find(path, changes());
  if (!found) return std::nullopt;
  return found->type;
}

std::vector<std::pair<std::string, mode_t>> RootfsOverlay::list(const std::string& dir) const {
  auto state = changes();
  std::map<std::string, mode_t> names;
  std::error_code ec;
  if (in_upper(dir)) {
    for (auto& entry : fsys::directory_iterator(upper(dir), ec)) {
      struct stat st;
      if (::lstat(entry.path().c_str(), &st) == 0) {
        names.emplace(entry.path().filename(), st.st_mode & S_IFMT);
      }
    }
    if (ec) fail(ec.value(), "Cannot list rootfs/" + dir);
  }
  if (auto index = lower_at(dir, state); index && !state.opaque.count(dir)) {
    for (const auto& [name, child] : lower_->node(*index).children) {
      if (!state.whiteouts.count(join(dir, name))) {
        names.emplace(name, lower_->node(child).type_bits());
      }
    }
  }
  return {names.begin(), names.end()};
}

Attr RootfsOverlay::attr(const std::string& path) const {
  auto state = changes();
  auto found = find(path, state);
  if (!found) fail(ENOENT, "No rootfs/" + path);
  if (!found->upper) {
    if (!lower_) {
      Attr attr;
      attr.mode = S_IFDIR | 0755;
      attr.nlink = 2;
      attr.own_metadata = true;
      return attr;
    }
    return RootfsView::attr(lower_node(path), *lower_);
  }
  struct stat st;
  if (::lstat(upper(path).c_str(), &st) != 0) fail(errno, "Cannot stat rootfs/" + path);
  Attr attr;
  attr.own_metadata = true;
  mode_t perms = S_ISDIR(st.st_mode) ? 0755 : S_ISLNK(st.st_mode) ? 0777 : 0644;
  if (auto meta = state.entries.find(path); meta != state.entries.end()) {
    if (!S_ISLNK(st.st_mode)) perms = meta->second.mode;
    attr.uid = meta->second.uid;
    attr.gid = meta->second.gid;
  }
  attr.mode = (st.st_mode & S_IFMT) | perms;
  attr.size = static_cast<uint64_t>(st.st_size);
  attr.nlink = S_ISDIR(st.st_mode) ? 2 : static_cast<uint32_t>(st.st_nlink);
  attr.mtime = st.st_mtim.tv_sec;
  attr.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  return attr;
}

OpenedFile RootfsOverlay::open_lower(const std::string& path) const {
  if (!lower_) fail(ENOENT, "No rootfs/" + path);
  return RootfsView::open(lower_node(path), *lower_);
}

std::string RootfsOverlay::readlink(const std::string& path) const {
  if (in_upper(path)) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(upper(path).c_str(), target.data(), target.size());
    if (n < 0) fail(errno, "Cannot read link rootfs/" + path);
    target.resize(static_cast<size_t>(n));
    return target;
  }
  if (!lower_has(path)) fail(ENOENT, "No rootfs/" + path);
  return RootfsView::readlink(lower_node(path), *lower_);
}

std::optional<std::string> RootfsOverlay::xattr(const std::string& path,
                                                const std::string& name) const {
  auto state = changes();
  auto found = find(path, state);
  if (!found) fail(ENOENT, "No rootfs/" + path);
  if (!found->upper) {
    if (!lower_) return std::nullopt;
    return RootfsView::xattr(lower_node(path), *lower_, name);
  }
  auto meta = state.entries.find(path);
  if (meta == state.entries.end()) return std::nullopt;
  auto value = meta->second.xattrs.find(name);
  if (value == meta->second.xattrs.end()) return std::nullopt;
  return value->second;
}

std::vector<std::string> RootfsOverlay::xattr_names(const std::string& path) const {
  auto state = changes();
  auto found = find(path, state);
  if (!found) fail(ENOENT, "No rootfs/" + path);
  if (!found->upper) {
    if (!lower_) return {};
    return RootfsView::xattr_names(lower_node(path), *lower_);
  }
  std::vector<std::string> names;
  if (auto meta = state.entries.find(path); meta != state.entries.end()) {
    for (const auto& [name, _] : meta->second.xattrs) names.push_back(name);
  }
  return names;
}

void RootfsOverlay::check_writable(const std::string& path) const {
  if (read_only_) {
    fail(EOPNOTSUPP,
         "Cannot change rootfs/" + path + ": changes to a multi-platform image are not supported");
  }
  // In a layer such a name is a whiteout (OCI image-spec layer changesets):
  // it would delete, not add. Refused rather than changed in meaning.
  std::string name = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  if (name.starts_with(".wh.")) {
    fail(EINVAL, "Cannot make rootfs/" + path +
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
  if (!found) fail(ENOENT, "No rootfs/" + path);
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
    default:
      fail(EOPNOTSUPP, "Cannot change rootfs/" + path + ": a device of the base");
  }
  if (rc != 0) fail(errno, "Cannot copy up rootfs/" + path);
  timespec times[2] = {{attr.mtime, static_cast<long>(attr.mtime_nsec)},
                       {attr.mtime, static_cast<long>(attr.mtime_nsec)}};
  ::utimensat(AT_FDCWD, target.c_str(), times, AT_SYMLINK_NOFOLLOW);
  update([&](cache::RootfsChanges& c) { c.entries[path] = meta; });
}

fsys::path RootfsOverlay::create(const std::string& path, mode_t mode) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  copy_up(parent_of(path), false);
  update([&](cache::RootfsChanges& c) {
    c.whiteouts.erase(path);
    c.entries[path] = cache::RootfsEntryMeta{static_cast<uint32_t>(mode & 07777), 0, 0, {}};
  });
  return upper(path);
}

void RootfsOverlay::mkdir(const std::string& path, mode_t mode) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (type(path)) fail(EEXIST, "Cannot make rootfs/" + path + ": it exists");
  copy_up(parent_of(path), false);
  if (::mkdir(upper(path).c_str(), 0700) != 0) fail(errno, "Cannot make rootfs/" + path);
  update([&](cache::RootfsChanges& c) {
    // Where the base had a directory that was removed: a new one, opaque.
    if (c.whiteouts.erase(path)) c.opaque.insert(path);
    c.entries[path] = cache::RootfsEntryMeta{static_cast<uint32_t>(mode & 07777), 0, 0, {}};
  });
}

void RootfsOverlay::symlink(const std::string& path, const std::string& target) {
  std::lock_guard lock(*changing_);
  check_writable(path);
  if (type(path)) fail(EEXIST, "Cannot make rootfs/" + path + ": it exists");
  copy_up(parent_of(path), false);
  if (::symlink(target.c_str(), upper(path).c_str()) != 0) {
    fail(errno, "Cannot make link rootfs/" + path);
  }
  update([&](cache::RootfsChanges& c) {
    c.whiteouts.erase(path);
    c.entries[path] = cache::RootfsEntryMeta{0777, 0, 0, {}};
  });
}

void RootfsOverlay::link(const std::string& from, const std::string& to) {
  std::lock_guard lock(*changing_);
  check_writable(to);
  auto source = type(from);
  if (!source) fail(ENOENT, "No rootfs/" + from);
  if (*source == S_IFDIR) fail(EPERM, "Cannot link directory rootfs/" + from);
  if (type(to)) fail(EEXIST, "Cannot link rootfs/" + to + ": it exists");
  copy_up(from, true);
  copy_up(parent_of(to), false);
  if (::link(upper(from).c_str(), upper(to).c_str()) != 0) {
    fail(errno, "Cannot link rootfs/" + to);
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
  if (!found) fail(ENOENT, "No rootfs/" + path);
  if (*found == S_IFDIR) fail(EISDIR, "Cannot unlink directory rootfs/" + path);
  bool whiteout = lower_has(path);
  if (in_upper(path) && ::unlink(upper(path).c_str()) != 0) {
    fail(errno, "Cannot remove rootfs/" + path);
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
  if (path.empty()) fail(EBUSY, "Cannot remove rootfs/");
  auto found = type(path);
  if (!found) fail(ENOENT, "No rootfs/" + path);
  if (*found != S_IFDIR) fail(ENOTDIR, "Cannot remove rootfs/" + path + ": not a directory");
  if (!list(path).empty()) fail(ENOTEMPTY, "Cannot remove rootfs/" + path + ": not empty");
  bool whiteout = lower_has(path);
  if (in_upper(path) && ::rmdir(upper(path).c_str()) != 0) {
    fail(errno, "Cannot remove rootfs/" + path);
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
  if (under(to, from)) fail(EINVAL, "Cannot move rootfs/" + from + " into itself");
  auto state = changes();
  auto source = find(from, state);
  if (!source) fail(ENOENT, "No rootfs/" + from);
  auto target = find(to, state);
  bool from_lower = lower_at(from, state).has_value();
  bool to_lower = lower_at(to, state).has_value();
  if (source->type == S_IFDIR) {
    // Its entries in the base would have to move too (overlayfs's
    // redirect_dir): EXDEV, and mv copies and deletes instead.
    if (from_lower && !state.opaque.count(from)) {
      fail(EXDEV, "Cannot rename rootfs/" + from + ": a directory of the base");
    }
    if (target && target->type != S_IFDIR) fail(ENOTDIR, "Cannot rename over rootfs/" + to);
    if (target && !list(to).empty()) fail(ENOTEMPTY, "Cannot rename over rootfs/" + to);
  } else {
    if (target && target->type == S_IFDIR) fail(EISDIR, "Cannot rename over rootfs/" + to);
    copy_up(from, true);
  }
  copy_up(parent_of(to), false);
  if (::rename(upper(from).c_str(), upper(to).c_str()) != 0) {
    fail(errno, "Cannot rename rootfs/" + from);
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
  update([&](cache::RootfsChanges& c) { c.entries[path].mode = mode & 07777; });
}

void RootfsOverlay::chown(const std::string& path, std::optional<uint32_t> uid,
                          std::optional<uint32_t> gid) {
  std::lock_guard lock(*changing_);
  copy_up(path, true);
  update([&](cache::RootfsChanges& c) {
    auto& meta = c.entries[path];
    if (uid) meta.uid = *uid;
    if (gid) meta.gid = *gid;
  });
}

void RootfsOverlay::truncate(const std::string& path, uint64_t size) {
  std::lock_guard lock(*changing_);
  copy_up(path, size > 0);
  if (::truncate(upper(path).c_str(), static_cast<off_t>(size)) != 0) {
    fail(errno, "Cannot truncate rootfs/" + path);
  }
  update([](cache::RootfsChanges&) {});
}

void RootfsOverlay::set_times(const std::string& path, std::optional<timespec> atime,
                              std::optional<timespec> mtime) {
  std::lock_guard lock(*changing_);
  copy_up(path, true);
  timespec times[2] = {atime.value_or(timespec{0, UTIME_OMIT}),
                       mtime.value_or(timespec{0, UTIME_OMIT})};
  if (::utimensat(AT_FDCWD, upper(path).c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    fail(errno, "Cannot set times of rootfs/" + path);
  }
  update([](cache::RootfsChanges&) {});
}

void RootfsOverlay::setxattr(const std::string& path, const std::string& name,
                             const std::string& value, int flags) {
  std::lock_guard lock(*changing_);
  if (name.starts_with("user.regfs.")) return;  // the mount's own: accepted, not stored
  auto present = xattr(path, name).has_value();
  if ((flags & XATTR_CREATE) && present) fail(EEXIST, "Cannot set " + name + ": it is set");
  if ((flags & XATTR_REPLACE) && !present) fail(ENODATA, "Cannot replace " + name + ": not set");
  copy_up(path, true);
  update([&](cache::RootfsChanges& c) { c.entries[path].xattrs[name] = value; });
}

void RootfsOverlay::removexattr(const std::string& path, const std::string& name) {
  std::lock_guard lock(*changing_);
  if (!xattr(path, name)) fail(ENODATA, "Cannot remove " + name + " of rootfs/" + path);
  copy_up(path, true);
  update([&](cache::RootfsChanges& c) { c.entries[path].xattrs.erase(name); });
}

bool RootfsOverlay::has_changes() const {
  auto state = changes();
  if (!state.whiteouts.empty() || !state.opaque.empty()) return true;
  std::error_code ec;
  return fsys::exists(upper(""), ec) && !fsys::is_empty(upper(""), ec);
}

}  // namespace regfs::fs

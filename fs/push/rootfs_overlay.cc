#include "fs/push/rootfs_overlay.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "cache/unique_fd.h"
#include "fs/push/rootfs_overlay_paths.h"
#include "fs/tree/path.h"
#include "fs/tree/rootfs.h"

namespace regfs::fs {

namespace fsys = std::filesystem;

using namespace overlay;  // NOLINT: fs/push/rootfs_overlay_paths.h
using registry::ErrorKind;

RootfsOverlay::RootfsOverlay(cache::StagingArea& area, cache::StagedTag tag,
                             std::shared_ptr<const MergedTree> lower,
                             std::shared_ptr<std::recursive_mutex> changing)
    : area_(area),
      tag_(std::move(tag)),
      lower_(std::move(lower)),
      changing_(changing ? std::move(changing) : std::make_shared<std::recursive_mutex>()) {}

cache::RootfsChanges RootfsOverlay::changes() const { return area_.state(tag_).rootfs; }

void RootfsOverlay::update(const std::function<void(cache::RootfsChanges&)>& change) {
  area_.update_state(tag_, [&](cache::StagedTagState& s) {
    change(s.rootfs);
    s.pushed_digest.clear();  // what is staged now was not pushed yet
  });
}

void RootfsOverlay::update_path(const std::string& path,
                                const std::function<void(cache::RootfsChanges&)>& change) {
  area_.update_path_state_if(tag_, path, [&](cache::StagedTagState& s) {
    change(s.rootfs);
    s.pushed_digest.clear();  // what is staged now was not pushed yet
    return true;
  });
}

cache::RootfsChanges RootfsOverlay::changes_of(const std::string& path) const {
  cache::RootfsChanges out;
  area_.read_state(tag_, [&](const cache::StagedTagState& s) {
    const auto& c = s.rootfs;
    for (std::string p = path;; p = parent_of(p)) {
      if (c.whiteouts.count(p)) out.whiteouts.insert(p);
      if (c.opaque.count(p)) out.opaque.insert(p);
      if (p.empty()) break;
    }
    if (auto it = c.entries.find(path); it != c.entries.end()) out.entries.insert(*it);
  });
  return out;
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
  return lower_at(path, changes_of(path)).has_value();
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
  auto found = find(path, changes_of(path));
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
    if (ec) fail_errno(ec.value(), "Cannot list rootfs/" + dir);
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
  auto state = changes_of(path);
  auto found = find(path, state);
  if (!found) fail(ErrorKind::kNotFound, "No rootfs/" + path);
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
  if (::lstat(upper(path).c_str(), &st) != 0) fail_errno(errno, "Cannot stat rootfs/" + path);
  Attr attr;
  attr.own_metadata = true;
  mode_t perms = S_ISDIR(st.st_mode) ? 0755 : S_ISLNK(st.st_mode) ? 0777 : 0644;
  if (auto meta = state.entries.find(path); meta != state.entries.end()) {
    if (!S_ISLNK(st.st_mode)) perms = meta->second.mode;
    attr.uid = meta->second.uid;
    attr.gid = meta->second.gid;
  }
  attr.mode = (st.st_mode & S_IFMT) | perms;
  attr.rdev = st.st_rdev;
  attr.size = static_cast<uint64_t>(st.st_size);
  attr.nlink = S_ISDIR(st.st_mode) ? 2 : static_cast<uint32_t>(st.st_nlink);
  attr.mtime = st.st_mtim.tv_sec;
  attr.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  return attr;
}

OpenedFile RootfsOverlay::open_lower(const std::string& path) const {
  if (!lower_) fail(ErrorKind::kNotFound, "No rootfs/" + path);
  return RootfsView::open(lower_node(path), *lower_);
}

std::string RootfsOverlay::readlink(const std::string& path) const {
  if (in_upper(path)) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(upper(path).c_str(), target.data(), target.size());
    if (n < 0) fail_errno(errno, "Cannot read link rootfs/" + path);
    target.resize(static_cast<size_t>(n));
    return target;
  }
  if (!lower_has(path)) fail(ErrorKind::kNotFound, "No rootfs/" + path);
  return RootfsView::readlink(lower_node(path), *lower_);
}

std::optional<std::string> RootfsOverlay::xattr(const std::string& path,
                                                const std::string& name) const {
  auto state = changes_of(path);
  auto found = find(path, state);
  if (!found) fail(ErrorKind::kNotFound, "No rootfs/" + path);
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
  auto state = changes_of(path);
  auto found = find(path, state);
  if (!found) fail(ErrorKind::kNotFound, "No rootfs/" + path);
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

}  // namespace regfs::fs

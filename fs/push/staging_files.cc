// StagingTree's POSIX file operations (fs/push/staging_tree.h): mkdir,
// create, open, read, write, setattr, readlink, unlink, rename, and
// copy_file_range of a blob as a reference (links and special files:
// fs/push/staging_links.cc).
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

NodePtr StagingTree::mkdir(const Node& parent, std::string_view name, mode_t mode, bool by_copy) {
  if (auto ns = promoted_namespace(area_, parent)) return mkdir(*ns, name, mode, by_copy);
  if (!is_name(name))
    fail(ErrorKind::kInvalid, "Cannot make directory \"" + std::string(name) + "\"");
  check_stageable_name(name);
  std::string sname(name);
  if (parent.kind == NodeKind::kNamespace && !parent.registry.empty()) {
    if (tree_.lookup(parent, name))
      fail(ErrorKind::kExists, "Cannot make " + sname + ": it exists");
    if (parent.path.empty()) {
      if (!registry::is_valid_path_component(name)) {
        throw Error(ErrorKind::kInvalid, "Cannot make namespace \"" + sname +
                                             "\": not a valid repository name (" +
                                             std::string(registry::kRepositoryGrammar) + ")");
      }
      area_.make_namespace(parent.registry, sname);
      return namespace_node(parent, name);
    }
    if (!registry::is_valid_tag(name)) {
      std::string limit = registry::name_limit_problem(parent.path, name);
      throw Error(
          ErrorKind::kInvalid,
          "Cannot make \"" + sname + "\" in " + parent.path + ": " +
              (limit.empty() ? "not a valid tag (" + std::string(registry::kTagGrammar) + ")"
                             : limit));
    }
    // In a namespace that is no repository, a new directory is most likely a
    // repository to be (mkdir -p ns/app): its name must be one.
    if (!registry::is_valid_path_component(name) &&
        area_.tags(parent.registry, parent.path).empty() &&
        !tree_.is_known_repository(parent.registry, parent.path)) {
      throw Error(ErrorKind::kInvalid, "Cannot make \"" + sname + "\" in " + parent.path +
                                           ": not a valid repository name (" +
                                           std::string(registry::kRepositoryGrammar) + "), and " +
                                           parent.path + " is no repository");
    }
    cache::StagedTag tag{parent.registry, parent.path, sname};
    area_.make_tag(tag);
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      s.modes[""] = mode & 07777;
      s.made_by_copy = by_copy;
    });
    return make_node(tag, "", parent.key + "/" + sname, name);
  }
  if (parent.kind != NodeKind::kStaged)
    fail(ErrorKind::kReadOnly, "Cannot make " + sname + ": read-only");
  auto tag = tag_of(parent);
  if (parent.is_overlay()) {
    std::string path = join(rootfs_path_of(parent), name);
    auto overlay = overlay_for(parent);
    overlay->mkdir(path, mode);
    changed(tag);
    return rootfs_node(parent, name, path, S_IFDIR);
  }
  std::string path = join(parent.staged().path, name);
  fsys::path dir = area_.file(tag, path);
  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0)
    fail(ErrorKind::kExists, "Cannot make " + path + ": it exists");
  if (by_copy && parent.staged().path.empty()) refuse_image_part(tag, name, /*is_dir=*/true);
  // mkdir -p ns/repo made `repo` a tag of ns: a directory in it that an
  // image layout or a docker save directory never has says it is a namespace
  // (a repository) after all, unless ns is a repository itself: then `repo`
  // is its tag and the directory part of what is copied in (a build).
  std::error_code ec;
  if (parent.staged().path.empty() && name != "blobs" && !is_hex64(name) &&
      fsys::is_empty(area_.tag_dir(tag), ec) && !area_.state(tag).made_by_copy &&
      !repository_of_tags(tag)) {
    // Refused rather than staged as a subdirectory that would never be
    // pushed (nothing staged is silently ignored).
    if (!registry::is_valid_path_component(tag.tag)) {
      throw Error(ErrorKind::kInvalid, "Cannot make " + tag.repository + "/" + tag.tag + "/" +
                                           sname + ": \"" + tag.tag +
                                           "\" is not a valid repository name (" +
                                           std::string(registry::kRepositoryGrammar) + ")");
    }
    if (!registry::is_valid_tag(name)) {
      throw Error(ErrorKind::kInvalid, "Cannot make tag \"" + sname + "\" of " + tag.repository +
                                           "/" + tag.tag + ": not a valid tag (" +
                                           std::string(registry::kTagGrammar) + ")");
    }
    std::string limit = registry::name_limit_problem(join(tag.repository, tag.tag), name);
    if (!limit.empty()) {
      throw Error(ErrorKind::kInvalid,
                  "Cannot make " + tag.repository + "/" + tag.tag + ":" + sname + ": " + limit);
    }
    area_.tag_to_namespace(tag);
    cache::StagedTag child{tag.registry, join(tag.repository, tag.tag), sname};
    area_.make_tag(child);
    area_.update_state(child, [&](cache::StagedTagState& s) {
      s.modes[""] = mode & 07777;
      s.made_by_copy = by_copy;
    });
    LOG(kDebug) << "Staged tag " << tag.repository << ":" << tag.tag << " became a namespace";
    return make_node(child, "", parent.key + "/" + sname, name);
  }
  if (::mkdir(dir.c_str(), 0700) != 0) fail_errno(errno, "Cannot make staged " + path);
  area_.update_state_if(tag, [&](cache::StagedTagState& s) {
    return set_mode(s.modes, path, mode & 07777, kDefaultDirMode);
  });
  changed(tag);
  return make_node(tag, path, parent.key + "/" + sname, name);
}

std::shared_ptr<StagedFile::PathState> StagingTree::path_state(const fsys::path& file) {
  std::lock_guard lock(mutex_);
  auto& slot = open_paths_[file.string()];
  auto state = slot.lock();
  if (!state) {
    state = std::make_shared<StagedFile::PathState>();
    slot = state;
  }
  return state;
}

std::shared_ptr<StagedFile> StagingTree::open_file(const cache::StagedTag& tag,
                                                   const std::string& path, int flags,
                                                   mode_t create_mode, const fsys::path& backing) {
  auto handle = std::make_shared<StagedFile>();
  handle->tag = tag;
  handle->path = path;
  handle->file = backing.empty() ? area_.file(tag, path) : backing;
  handle->writable = (flags & O_ACCMODE) != O_RDONLY;
  int open_flags =
      (handle->writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (flags & (O_CREAT | O_EXCL | O_TRUNC));
  handle->fd.reset(::open(handle->file.c_str(), open_flags, 0600));
  if (!handle->fd) fail_errno(errno, "Cannot open staged " + path);
  handle->state = path_state(handle->file);
  bool truncated = handle->writable && (flags & O_TRUNC);
  if (backing.empty() && (flags & O_CREAT || truncated)) {
    area_.update_path_state_if(tag, path, [&](cache::StagedTagState& s) {
      bool changed = false;
      if (flags & O_CREAT) changed = set_mode(s.modes, path, create_mode & 07777, kDefaultFileMode);
      if (truncated) changed = s.references.erase(path) > 0 || changed;
      return changed;
    });
  }
  if (truncated) {
    std::lock_guard lock(handle->state->mutex);
    handle->state->hasher.truncated(0);
    handle->state->dirty = true;
  }
  if (!handle->writable) {
    std::optional<cache::BlobReference> ref;
    area_.read_state(tag, [&](const cache::StagedTagState& state) {
      if (auto it = state.references.find(path); it != state.references.end()) ref = it->second;
    });
    if (ref) {
      handle->reader =
          content_.registry(ref->registry).open_blob(ref->repository, ref->digest, ref->size);
    }
  }
  return handle;
}

std::shared_ptr<StagedFile> StagingTree::create(const Node& parent, std::string_view name,
                                                mode_t mode, int flags, NodePtr* node) {
  if (!is_name(name)) fail(ErrorKind::kInvalid, "Cannot create \"" + std::string(name) + "\"");
  check_stageable_name(name);
  if (parent.kind == NodeKind::kNamespace && !parent.registry.empty()) {
    refuse_in_namespace(parent, "create " + std::string(name));
  }
  if (auto ns = promoted_namespace(area_, parent))
    refuse_in_namespace(*ns, "create " + std::string(name));
  if (parent.kind != NodeKind::kStaged) {
    fail(ErrorKind::kReadOnly, "Cannot create " + std::string(name) + ": read-only");
  }
  if (parent.is_overlay()) return rootfs_create(parent, name, mode, flags, node);
  auto tag = tag_of(parent);
  std::string path = join(parent.staged().path, name);
  if (path == name) refuse_image_part(tag, name, /*is_dir=*/false);
  auto handle = open_file(tag, path, flags | O_CREAT, mode);
  *node = make_node(tag, path, parent.key + "/" + std::string(name), name);
  return handle;
}

std::shared_ptr<StagedFile> StagingTree::open(const Node& node, int flags) {
  if (node.kind != NodeKind::kStaged)
    fail(ErrorKind::kReadOnly, "Cannot open " + node.key + " for writing");
  if (node.is_overlay()) return rootfs_open(node, flags);
  return open_file(tag_of(node), node.staged().path, flags & ~(O_CREAT | O_EXCL), 0);
}

void StagingTree::write(StagedFile& file, const char* data, size_t size, uint64_t offset) {
  {
    std::lock_guard lock(file.state->mutex);
    file.state->dirty = true;
  }
  size_t done = 0;
  while (done < size) {
    ssize_t n =
        ::pwrite(file.fd.get(), data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == ENOSPC) throw Error(ErrorKind::kNoSpace, "Cannot stage " + file.path);
      fail_errno(errno, "Cannot write staged " + file.path);
    }
    done += static_cast<size_t>(n);
  }
  {
    std::lock_guard lock(file.state->mutex);
    file.state->hasher.wrote(offset, data, size);
  }
  {
    std::lock_guard lock(builds_mutex_);
    if (auto it = pending_.find(file.tag); it != pending_.end()) {
      it->second = std::chrono::steady_clock::now() + push_delay_;
    }
  }
  // A written file is no reference to a blob any more (no copy of the
  // state per WRITE: cp writes every file).
  area_.update_path_state_if(file.tag, file.path, [&](cache::StagedTagState& s) {
    return s.references.erase(file.path) > 0;
  });
}

size_t StagingTree::read(StagedFile& file, char* buffer, size_t size, uint64_t offset) {
  if (file.lower_bytes) {  // a file of rootfs/'s base in a lazily read layer
    if (offset >= file.lower_bytes->size()) return 0;
    size = static_cast<size_t>(std::min<uint64_t>(size, file.lower_bytes->size() - offset));
    std::memcpy(buffer, file.lower_bytes->data() + offset, size);
    return size;
  }
  if (file.lower) return file.lower->read_entry(*file.lower_entry, offset, buffer, size);
  if (file.reader) {
    if (offset >= file.reader->size()) return 0;
    auto lease = file.reader->read(offset, size);
    ssize_t n = ::pread(lease.fd(), buffer, lease.length(), static_cast<off_t>(lease.offset()));
    if (n < 0) fail_errno(errno, "Cannot read cached blob for " + file.path);
    return static_cast<size_t>(n);
  }
  ssize_t n = ::pread(file.fd.get(), buffer, size, static_cast<off_t>(offset));
  if (n < 0) fail_errno(errno, "Cannot read staged " + file.path);
  return static_cast<size_t>(n);
}

Attr StagingTree::setattr(const Node& node, StagedFile* file, const SetAttr& change) {
  if (auto attr = namespace_setattr(node, change)) return *attr;
  if (node.kind != NodeKind::kStaged || promoted_namespace(area_, node)) {
    fail(ErrorKind::kReadOnly, "Cannot change " + node.key + ": read-only");
  }
  if (node.is_overlay()) return rootfs_setattr(node, change);
  auto tag = tag_of(node);
  fsys::path path = area_.file(tag, node.staged().path);
  if (change.size) {
    int rc = file ? ::ftruncate(file->fd.get(), static_cast<off_t>(*change.size))
                  : ::truncate(path.c_str(), static_cast<off_t>(*change.size));
    if (rc != 0) fail_errno(errno, "Cannot truncate staged " + node.staged().path);
    auto state = path_state(path);
    {
      std::lock_guard lock(state->mutex);
      state->hasher.truncated(*change.size);
      state->dirty = true;
    }
    area_.update_path_state_if(tag, node.staged().path, [&](cache::StagedTagState& s) {
      auto ref = s.references.find(node.staged().path);
      if (ref == s.references.end() || static_cast<uint64_t>(ref->second.size) == *change.size) {
        return false;
      }
      s.references.erase(ref);
      return true;
    });
  }
  if (change.mode) {
    // A default mode is not recorded (cp -a chmods every file it makes).
    uint32_t default_mode = S_ISDIR(node.type_bits()) ? kDefaultDirMode : kDefaultFileMode;
    area_.update_path_state_if(tag, node.staged().path, [&](cache::StagedTagState& s) {
      return set_mode(s.modes, node.staged().path, *change.mode & 07777, default_mode);
    });
    share_with_links(tag, node.staged().path);
  }
  if (change.atime || change.mtime) {
    timespec times[2] = {change.atime.value_or(timespec{0, UTIME_OMIT}),
                         change.mtime.value_or(timespec{0, UTIME_OMIT})};
    if (::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      fail_errno(errno, "Cannot set times of staged " + node.staged().path);
    }
  }
  changed(tag);
  return attr(node);
}

void StagingTree::share_with_links(const cache::StagedTag& tag, const std::string& path) {
  auto names = other_names_of(area_.tag_dir(tag), path);
  if (names.empty()) return;
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    auto mode = s.modes.find(path);
    auto xattrs = s.xattrs.find(path);
    for (const auto& name : names) {
      if (mode != s.modes.end()) {
        s.modes[name] = mode->second;
      } else {
        s.modes.erase(name);
      }
      if (xattrs != s.xattrs.end()) {
        s.xattrs[name] = xattrs->second;
      } else {
        s.xattrs.erase(name);
      }
    }
  });
}

void StagingTree::forget_paths(const cache::StagedTag& tag, const std::string& path) {
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    std::erase_if(s.modes, [&](auto& e) { return under(e.first, path); });
    std::erase_if(s.references, [&](auto& e) { return under(e.first, path); });
    std::erase_if(s.xattrs, [&](auto& e) { return under(e.first, path); });
  });
  std::string file = area_.file(tag, path).string();
  std::lock_guard lock(mutex_);
  std::erase_if(hashed_, [&](auto& e) { return under(e.first, file); });
}

std::string StagingTree::readlink(const Node& node) {
  if (node.is_overlay()) return overlay_for(node)->readlink(rootfs_path_of(node));
  std::string target(4096, '\0');
  ssize_t n = ::readlink(area_.file(tag_of(node), node.staged().path).c_str(), target.data(),
                         target.size());
  if (n < 0) fail_errno(errno, "Cannot read link " + node.key);
  target.resize(static_cast<size_t>(n));
  return target;
}

void StagingTree::unlink(const Node& parent, std::string_view name) {
  if (parent.is_overlay()) {
    overlay_for(parent)->unlink(join(rootfs_path_of(parent), name));
    changed(tag_of(parent));
    return;
  }
  if (parent.kind == NodeKind::kStaged && !promoted_namespace(area_, parent)) {
    auto tag = tag_of(parent);
    std::string path = join(parent.staged().path, name);
    refuse_removal_if_pushed(tag, "remove " + path);
    if (::unlink(area_.file(tag, path).c_str()) != 0)
      fail_errno(errno, "Cannot remove staged " + path);
    forget_paths(tag, path);
    changed(tag);
    return;
  }
  // rm -r of a remote tag with --allow-delete: its files go with the tag
  // (rmdir of the tag directory deletes it); alone they cannot be removed.
  if (allow_delete_ && is_remote_image_dir(parent) && parent.is_tag_image()) return;
  fail(ErrorKind::kReadOnly,
       "Cannot remove " + std::string(name) + ": read-only (see --allow-delete)");
}

void StagingTree::rename(const Node& parent, std::string_view name, const Node& new_parent,
                         std::string_view new_name) {
  if (parent.kind != NodeKind::kStaged || new_parent.kind != NodeKind::kStaged) {
    fail(parent.kind == NodeKind::kStaged ? ErrorKind::kCrossDevice : ErrorKind::kReadOnly,
         "Cannot rename " + std::string(name) +
             (parent.kind == NodeKind::kStaged
                  ? ": only within a staged tag (mv copies and removes)"
                  : ": what is in the registry is read-only (copy it to a new tag)"));
  }
  check_stageable_name(new_name);
  auto tag = tag_of(parent);
  if (!is_name(new_name) || tag_of(new_parent).tag != tag.tag ||
      tag_of(new_parent).repository != tag.repository || new_parent.registry != parent.registry) {
    fail(ErrorKind::kCrossDevice, "Cannot rename " + std::string(name) + " out of its staged tag");
  }
  if (parent.is_overlay() != new_parent.is_overlay()) {
    fail(ErrorKind::kCrossDevice, "Cannot rename " + std::string(name) + " into or out of rootfs/");
  }
  if (parent.is_overlay()) {
    overlay_for(parent)->rename(join(rootfs_path_of(parent), name),
                                join(rootfs_path_of(new_parent), new_name));
    changed(tag);
    return;
  }
  std::string from = join(parent.staged().path, name);
  std::string to = join(new_parent.staged().path, new_name);
  if (::rename(area_.file(tag, from).c_str(), area_.file(tag, to).c_str()) != 0) {
    fail_errno(errno, "Cannot rename staged " + from);
  }
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    auto move = [&](auto& map) {
      std::erase_if(map, [&](auto& e) { return under(e.first, to); });
      std::vector<std::pair<std::string, typename std::decay_t<decltype(map)>::mapped_type>> moved;
      for (auto& [key, value] : map) {
        if (under(key, from)) moved.emplace_back(to + key.substr(from.size()), value);
      }
      std::erase_if(map, [&](auto& e) { return under(e.first, from); });
      for (auto& [key, value] : moved) map[key] = value;
    };
    move(s.modes);
    move(s.references);
    move(s.xattrs);
  });
  {
    std::lock_guard lock(mutex_);
    hashed_.clear();
  }
  changed(tag);
  // Written under another name and renamed into place (sed -i, editors):
  // the same checks and push as at the close() of a file written in place.
  if (!is_build(area_.tag_dir(tag))) {
    if (to == "config.json") check_written_config(tag);
    push_and_wait(tag);
  }
}

std::optional<uint64_t> StagingTree::copy_reference(const Node& source, uint64_t source_size,
                                                    uint64_t offset_in, StagedFile& out,
                                                    uint64_t offset_out, uint64_t length) {
  if (source.kind != NodeKind::kBlob || offset_in != 0 || offset_out != 0 || length < source_size ||
      !out.writable || blob_digest_of(out.path) != source.blob().digest) {
    return std::nullopt;
  }
  if (::ftruncate(out.fd.get(), static_cast<off_t>(source_size)) != 0) {
    fail_errno(errno, "Cannot stage " + out.path);
  }
  area_.update_state(out.tag, [&](cache::StagedTagState& s) {
    s.references[out.path] = cache::BlobReference{
        source.registry, source.path, source.blob().digest, static_cast<int64_t>(source_size)};
  });
  std::lock_guard lock(out.state->mutex);
  out.state->dirty = false;
  out.state->hasher.truncated(source_size);
  LOG(kDebug) << "Staged " << out.path << " as a reference to " << source.registry << "/"
              << source.path << "@" << source.blob().digest;
  return source_size;
}

}  // namespace regfs::fs

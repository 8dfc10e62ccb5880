// A layer on a base (SPEC §4 "Building by copying"): rootfs/ of a staged
// copy of an image is writable, as overlayfs makes a directory writable.
//
//   lower   the merged tree of the base image (fs/tree/merged_tree.h), read-only
//   upper   <staging>/<registry>/<repository>/%<tag>.upper/ (cache/staging.h):
//           files, directories and symlinks made or changed, kept on local
//           disk until pushed, never evicted, surviving unmount and crash
//   state   the tag's StagedTagState::rootfs: whiteouts (paths removed from
//           the base), opaque directories (made where the base had one that
//           was removed, hiding all of its entries) and, by path, the mode,
//           owner and xattrs of each upper entry (the backing files stay the
//           daemon's own and writable)
//
// An upper entry hides the lower one at its path; a whiteout or an opaque
// ancestor hides the lower one. Changing a lower entry copies it up first
// (its bytes, its metadata; a hardlink group of the base is split, as
// overlayfs does without an index), with its parent directories. Renaming
// a directory the base has is EXDEV, as overlayfs without redirect_dir, so
// `mv` falls back to copying and deleting. A device of the base cannot be
// copied up (EOPNOTSUPP). A partial copy-up left by a crash is kept as it is.
//
// At push the changes become one layer (layer_entries(): upper entries with
// their metadata, `.wh.<name>` for whiteouts and `.wh..wh..opq` in opaque
// directories, as the OCI image spec's changeset rules say) added on top of
// the base's layers (append_layer(); both in fs/push/rootfs_layer.cc). FUSE-free
// and network-free.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/layer_writer.h"
#include "cache/staging.h"
#include "fs/push/push_plan.h"
#include "fs/tree/merged_tree.h"
#include "fs/tree/tree.h"

namespace regfs::fs {

// The name of the unlisted rootfs/ directory of an image directory.
inline constexpr std::string_view kRootfsName = "rootfs";

class RootfsOverlay {
 public:
  // `lower`: the merged tree of the base (nullptr: an empty base).
  // `changing`: held over each change, shared by the overlays of one tag so
  // that two of them never copy up one entry at once.
  RootfsOverlay(cache::StagingArea& area, cache::StagedTag tag,
                std::shared_ptr<const MergedTree> lower,
                std::shared_ptr<std::recursive_mutex> changing = nullptr);

  // Paths are inside the rootfs: "" is its root, "etc/passwd" an entry.

  // S_IFMT bits of the merged entry at `path`, nullopt if there is none.
  std::optional<mode_t> type(const std::string& path) const;
  // Names and S_IFMT bits of the merged directory `dir`, sorted.
  std::vector<std::pair<std::string, mode_t>> list(const std::string& dir) const;
  Attr attr(const std::string& path) const;
  // Whether `path` is an entry of the upper directory, and its backing path.
  bool in_upper(const std::string& path) const;
  std::filesystem::path upper(const std::string& path) const;
  // A lower regular file's bytes: a range of its layer's uncompressed tar.
  OpenedFile open_lower(const std::string& path) const;
  std::string readlink(const std::string& path) const;
  std::optional<std::string> xattr(const std::string& path, const std::string& name) const;
  std::vector<std::string> xattr_names(const std::string& path) const;

  // Changes; errors are registry::Error, or std::system_error for an errno the
  // upper tree's disk gave.
  // Makes `path` (and its parents) an upper entry; a file with its bytes
  // unless `data` is false (it is about to be truncated).
  void copy_up(const std::string& path, bool data = true);
  // Readies a new regular file at `path` (made by the caller, O_CREAT) with
  // `mode`; returns its backing path.
  std::filesystem::path create(const std::string& path, mode_t mode);
  void mkdir(const std::string& path, mode_t mode);
  void symlink(const std::string& path, const std::string& target);
  // A fifo or a character or block device (`mode`: S_IFMT and permission
  // bits; `rdev`: the device number) at `path`.
  void mknod(const std::string& path, mode_t mode, dev_t rdev);
  void link(const std::string& from, const std::string& to);
  void unlink(const std::string& path);
  void rmdir(const std::string& path);
  void rename(const std::string& from, const std::string& to);
  void chmod(const std::string& path, mode_t mode);
  void chown(const std::string& path, std::optional<uint32_t> uid, std::optional<uint32_t> gid);
  void truncate(const std::string& path, uint64_t size);
  void set_times(const std::string& path, std::optional<timespec> atime,
                 std::optional<timespec> mtime);
  // `flags`: XATTR_CREATE or XATTR_REPLACE, as setxattr(2).
  void setxattr(const std::string& path, const std::string& name, const std::string& value,
                int flags);
  void removexattr(const std::string& path, const std::string& name);

  // Whether anything differs from the base.
  bool has_changes() const;
  // The entries of the layer the changes make, sorted by path; `newest`
  // (if given) gets the newest mtime among them.
  std::vector<cache::LayerEntry> layer_entries(int64_t* newest = nullptr) const;

 private:
  struct Found {
    bool upper = false;
    mode_t type = 0;
  };
  std::optional<Found> find(const std::string& path, const cache::RootfsChanges& changes) const;
  // The base's node at `path` if no whiteout or opaque directory hides it.
  std::optional<uint32_t> lower_at(const std::string& path,
                                   const cache::RootfsChanges& changes) const;
  bool lower_has(const std::string& path) const;
  void check_writable(const std::string& path) const;
  // Changes the state: any change makes the tag differ from what was pushed.
  void update(const std::function<void(cache::RootfsChanges&)>& change);
  // As update, for a change of `path`'s own entry and marks alone: in place,
  // one journal line (cache::StagingArea::update_path_state_if).
  void update_path(const std::string& path,
                   const std::function<void(cache::RootfsChanges&)>& change);
  // What the changes say of `path` and its ancestors alone (their whiteout
  // and opaque marks, `path`'s entry): enough for find() and attr(), without
  // a copy of every change.
  cache::RootfsChanges changes_of(const std::string& path) const;
  cache::RootfsChanges changes() const;
  // Marks `dir`'s upper copy changed (its listing changed): mtime now.
  void touch(const std::string& dir);
  // Gives the hardlinks of `path` in the upper directory its metadata (mode,
  // owner, xattrs): one inode, one set (fs/push/staged_helpers.h).
  void share_with_links(const std::string& path);

  cache::StagingArea& area_;
  const cache::StagedTag tag_;
  const std::shared_ptr<const MergedTree> lower_;
  const std::shared_ptr<std::recursive_mutex> changing_;  // held over each change
};

// Puts `layer` (written to `file`) on top of the image `plan` pushes: its
// descriptor after the manifest's layers (a Docker media type in a Docker
// manifest), its diff_id after the config's rootfs.diff_ids and one history
// entry created at `created` (seconds). `config` is the plan's config's
// bytes. `plan` is of one image (narrow_to_platform); Error(kInvalid) if not.
void append_layer(PushPlan& plan, const std::string& config, const cache::WrittenLayer& layer,
                  const std::filesystem::path& file, int64_t created);

}  // namespace regfs::fs

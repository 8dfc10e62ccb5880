// The writable part of the tree (SPEC §4): namespaces, repositories and tags
// made with mkdir, and the files written under a new tag, kept in the
// cache's StagingArea until pushed. FUSE-free: the glue calls these and
// replies; errors are registry::Error, or std::system_error for an errno the
// disk of a staged file gave (fs/push/push_errors.h).
//
//   mkdir in a registry root           a namespace (local until pushed to)
//   mkdir in a namespace               a staged tag of that repository
//   mkdir in an empty staged tag       (not blobs/, not a docker save layer
//                                      directory): the tag was a namespace
//                                      after all (mkdir -p ns/repo), so it
//                                      becomes one and the new directory its
//                                      staged tag
//   files and directories in a tag     staged; blobs/sha256/<hex> are hashed
//                                      as written and checked at close()
//
// Every flush of a file opened for writing checks whether its tag is
// complete (fs/push/push_plan.h) and, if so, pushes it (fs/push/pusher.h).
// Pushes run on the push queue (fs/push/push_queue.h), one at a time per
// tag, never on a FUSE thread; the close() that completes the tag waits for
// its push and returns the push's result. A pushed tag keeps accepting files
// (cp -r writes manifest.json and oci-layout after index.json): it is pushed
// again only if what it would push changes. A failed push keeps the tag,
// records why (xattr user.regfs.error, the log) and is retried at the next
// flush of a file in it. A push records its digest in the tag's state before
// it starts and clears it when it ends, so one the daemon never finished
// (kill -9, a crash) is known at the next mount; there resume_pushes() pushes
// again, in the background, every complete tag not pushed as it is (a
// failed or an interrupted push, or one never started): blobs the registry
// got before are skipped (HEAD), a chunked upload goes on from where the
// registry holds its session (kept in the tag's state; a new session if the
// registry kept none), and the tag's manifest goes last, so no tag is half
// pushed. The same is done again for the failed pushes to a registry each
// time it comes back up (registry/health.h).
// Background work (builds waiting for --push-delay, resumed pushes) is tasks
// of WorkerPools (`build_timers_`, `resumes_`), which queue pushes like any
// other.
// Tags pushed without error are dropped at the next mount; rm -r discards a
// staged tag not pushed. A pushed one is the registry's tag (SPEC §4:
// deleting a tag needs --allow-delete): without it, unlink and rmdir in it
// and of it fail with EROFS and change nothing; with it, rm -r deletes the
// tag from the registry too.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cache/staging.h"
#include "cache/unique_fd.h"
#include "fs/push/build_plan.h"
#include "fs/push/config_edit.h"
#include "fs/push/push_queue.h"
#include "fs/push/pusher.h"
#include "fs/push/rootfs_overlay.h"
#include "fs/tree/tree.h"

namespace regfs::fs {

// One open staged file. Handles of one path share its write state.
struct StagedFile {
  struct PathState {
    std::mutex mutex;  // guards the members below
    cache::WriteHasher hasher;
    bool dirty = false;  // written since last checked
  };
  cache::StagedTag tag;
  std::string path;  // inside the tag
  std::filesystem::path file;
  cache::UniqueFd fd;
  bool writable = false;
  std::shared_ptr<PathState> state;
  std::shared_ptr<BlobReader> reader;  // a reference being read
  // A file of the base under rootfs/, not copied up: read through its layer
  // (no fd), or its bytes when its layer is read lazily (fs/tree/lazy_layers.h).
  std::shared_ptr<const cache::LayerData> lower;
  std::shared_ptr<const cache::TarEntry> lower_entry;
  std::shared_ptr<const std::string> lower_bytes;
};

struct SetAttr {
  std::optional<uint64_t> size;
  std::optional<mode_t> mode;
  std::optional<timespec> atime;  // tv_nsec may be UTIME_NOW
  std::optional<timespec> mtime;
  std::optional<uint32_t> uid;  // chown: kept only under rootfs/ (fs/push/rootfs_overlay.h)
  std::optional<uint32_t> gid;
};

struct StagingOptions {
  std::filesystem::path root;  // the staging area (cache/staging.h)
  bool allow_delete = false;   // --allow-delete
  // A build (fs/push/build_plan.h) is pushed after this long without a change.
  std::chrono::milliseconds push_delay{2000};
  BuildOptions build;  // work_dir: where builds make their layer and config
  // No other mount used the cache directory when this one started
  // (cache::CacheUse::alone()): only then are pushed tags dropped and every
  // staged tag's push resumed at start. A mount that joins a cache in use
  // leaves the tags other mounts staged to them (one may be a build still
  // being copied in, or a pushed tag another mount shows).
  bool alone_on_cache = true;
};

class StagingTree : public StagedNames {
 public:
  // `remote`: the names the mount shows (Tree), which must outlive this.
  StagingTree(RemoteNames& remote, Content& content, StagingOptions options);
  // Stops the background work (the resumed push in flight ends, no other
  // starts), pushes the builds still pending, and drains the push queue.
  ~StagingTree() override;
  StagingTree(const StagingTree&) = delete;
  StagingTree& operator=(const StagingTree&) = delete;

  // Once the mount is up: pushes, in the background, every staged tag of
  // `registry` (every registry if empty) that is complete and not pushed as
  // it is (its push failed, was interrupted or never ran), one attempt each,
  // in turn; nothing if the mount is not alone on its cache. Returns at
  // once. Also run, for the tags whose push this mount ran and which
  // failed, each time a registry comes back up (registry/health.h).
  void resume_pushes(const std::string& registry, bool only_failed = false);

  // Hooks of Tree for namespaces: a staged tag or namespace `name` of the
  // namespace `dir` (nullptr if none), and its staged entries.
  NodePtr lookup_in_namespace(const Node& dir, std::string_view name) override;
  void add_to_listing(const Node& dir, std::vector<NodePtr>* entries) override;
  // A namespace made by mkdir (or holding staged repositories) that is not
  // itself a repository with staged tags.
  bool is_staged_namespace(const std::string& registry, const std::string& path) const override;
  // For kStaged nodes.
  NodePtr lookup(const Node& dir, std::string_view name) override;
  std::vector<NodePtr> list(const Node& dir) override;
  Attr attr(const Node& node) override;
  std::optional<std::string> xattr(const Node& node, std::string_view name) override;
  std::vector<std::string> xattr_names(const Node& node) override;
  // Extended attributes of staged entries, kept in the tag's state and put
  // in the layer of a build (user.regfs.* is the mount's own: accepted and
  // not stored, so cp -a of an image directory works). `flags`: XATTR_CREATE
  // (EEXIST if set) or XATTR_REPLACE (ENODATA if not).
  void setxattr(const Node& node, const std::string& name, const std::string& value, int flags);
  void removexattr(const Node& node, const std::string& name);
  // Where a staged tag stands (SPEC §4; xattr user.regfs.state): "incomplete:
  // no index.json or manifest.json", "waiting for blob sha256:…", "pending
  // build", "building", "pushing sha256:…", "pushed sha256:…" or "error: …".
  std::string state_of(const cache::StagedTag& tag);
  // Every staged tag ("registry/repository:tag") with its state, for status.
  std::vector<std::pair<std::string, std::string>> states() override;

  // fsync of a directory (`regfs push PATH`, `sync -f`, `regfs umount`): a
  // staged tag's directory is pushed now (a build without waiting for
  // --push-delay); the mount's root pushes every pending build. Waits, within
  // the request deadline (then Error(kTimeout); the push goes on); throws
  // the push's error, or Error(kInvalid) if the tag is incomplete.
  void push_now(const Node& dir);

  // Changes; `parent` may be any node (remote ones answer EROFS).
  // `by_copy`: the caller copies a tree (cp, rsync, tar): a tag it makes is
  // a tag, whatever is made in it (see StagedTagState::made_by_copy).
  NodePtr mkdir(const Node& parent, std::string_view name, mode_t mode, bool by_copy = false);
  std::shared_ptr<StagedFile> create(const Node& parent, std::string_view name, mode_t mode,
                                     int flags, NodePtr* node);
  std::shared_ptr<StagedFile> open(const Node& node, int flags);
  void write(StagedFile& file, const char* data, size_t size, uint64_t offset);
  size_t read(StagedFile& file, char* buffer, size_t size, uint64_t offset);
  // Checks a written blob, then the tag's completeness on the push queue;
  // pushes when complete, and waits for it (no deadline: close() returns the
  // push's result).
  void flush(StagedFile& file);
  Attr setattr(const Node& node, StagedFile* file, const SetAttr& change);
  // A symlink `name` -> `target` (kept unchanged) in a staged tag.
  NodePtr symlink(const Node& parent, std::string_view name, const std::string& target);
  // A fifo or a character or block device `name` (`mode`: S_IFMT and
  // permission bits, `rdev`: the device number) in a staged tag; a socket
  // or a regular file is EPERM (files are made by create()).
  NodePtr mknod(const Node& parent, std::string_view name, mode_t mode, dev_t rdev);
  // A hardlink `new_name` in `new_parent` to the staged file `node` (same tag).
  NodePtr link(const Node& node, const Node& new_parent, std::string_view new_name);
  std::string readlink(const Node& node) override;
  void unlink(const Node& parent, std::string_view name);
  void rmdir(const Node& parent, std::string_view name);
  void rename(const Node& parent, std::string_view name, const Node& new_parent,
              std::string_view new_name);
  // copy_file_range from `source` (`source_size` bytes) into `out`: records a
  // reference when `out` is blobs/sha256/<hex> of the same digest and the
  // whole blob is copied; returns the bytes "copied", or nullopt (copy them).
  std::optional<uint64_t> copy_reference(const Node& source, uint64_t source_size,
                                         uint64_t offset_in, StagedFile& out, uint64_t offset_out,
                                         uint64_t length);

 private:
  class Layout;
  friend class Layout;

  NodePtr make_node(const cache::StagedTag& tag, std::string path, std::string key,
                    std::string_view name);
  NodePtr namespace_node(const Node& dir, std::string_view name);
  bool repository_of_tags(const cache::StagedTag& tag);
  static cache::StagedTag tag_of(const Node& node);
  std::shared_ptr<StagedFile::PathState> path_state(const std::filesystem::path& file);
  // `backing`: the file if not the tag's own `path` (rootfs/: the upper
  // file, whose mode the overlay keeps).
  std::shared_ptr<StagedFile> open_file(const cache::StagedTag& tag, const std::string& path,
                                        int flags, mode_t create_mode,
                                        const std::filesystem::path& backing = {});
  void check_blob(StagedFile& file);
  void check_written_config(const cache::StagedTag& tag);
  void apply_edited_config(StagedLayout& layout, PushPlan& plan);
  // Runs on the push queue only (one at a time per tag): pushes `tag` if
  // complete and not pushed as it is. Throws the push's error after
  // recording it. `resuming` is for the log. A build is pushed only when
  // `build_now` (its quiet time passed, or a push was asked for); otherwise
  // it is (re)scheduled.
  void push_if_complete(const cache::StagedTag& tag, bool resuming = false, bool build_now = false);
  // Queues push_if_complete(tag, ...) on the push queue; the ticket gives
  // its result.
  PushTicket queue_push(const cache::StagedTag& tag, bool resuming = false, bool build_now = false);
  // Queues the push of `tag` and waits for it (within the calling thread's
  // request deadline, if any: Error(kTimeout), the push goes on); throws its
  // error.
  void push_and_wait(const cache::StagedTag& tag, bool build_now = false);
  // Runs `work` with `tag` marked building (its state says so meanwhile).
  void while_building(const cache::StagedTag& tag, const std::function<void()>& work);
  // A change in `tag`: a build waits --push-delay from now.
  void changed(const cache::StagedTag& tag);
  // Whether a file of `tag` is open for writing with unchecked changes.
  bool being_written(const cache::StagedTag& tag);
  // A task of build_timers_, at the end of `tag`'s quiet time: queues its
  // build, or waits again if it changed meanwhile.
  void build_when_due(const cache::StagedTag& tag);
  std::filesystem::path build_dir(const cache::StagedTag& tag) const;
  // fs/push/staging_places.cc: what a place refuses. Throws Error(kInvalid):
  // `what` ("create x") in the namespace `dir`, which holds only namespaces
  // and repositories (an image goes to NAMESPACE/REPO/TAG).
  [[noreturn]] static void refuse_in_namespace(const Node& dir, const std::string& what);
  // Throws Error(kInvalid), and discards `tag`, if `name` made by a copy at
  // the top of the empty staged `tag` shows an image's part copied where a
  // tag goes (a layout's blobs/sha256, a docker save layer's files).
  void refuse_image_part(const cache::StagedTag& tag, std::string_view name, bool is_dir);
  // Throws Error(kReadOnly) for `what` ("remove x"), a removal in or of the
  // staged `tag`, if the tag is pushed (as it is, without error) and the
  // mount has no --allow-delete.
  void refuse_removal_if_pushed(const cache::StagedTag& tag, const std::string& what);
  // The attributes of a staged namespace after a chmod or utimes it does not
  // keep; nullopt if `node` is no staged namespace or `change` truncates.
  std::optional<Attr> namespace_setattr(const Node& node, const SetAttr& change);
  void resume_all(const std::string& registry, bool only_failed);
  // The digest of a complete staged file, cached by size and mtime.
  std::string file_digest(const std::filesystem::path& file, const struct stat& st);
  void forget_paths(const cache::StagedTag& tag, const std::string& path);
  // Gives the hardlinks of `path` its mode and xattrs (staged_helpers.h's
  // other_names_of): after a change of them.
  void share_with_links(const cache::StagedTag& tag, const std::string& path);

  // rootfs/ of a staged copy of an image (fs/push/staging_rootfs.cc): the
  // overlay on its base, nullptr where there is none (a build, no config).
  std::shared_ptr<RootfsOverlay> overlay_of(const cache::StagedTag& tag);
  // The overlay of an overlay node (Node::overlay), and the node's path in it.
  std::shared_ptr<RootfsOverlay> overlay_for(const Node& node);
  static std::string rootfs_path_of(const Node& node);
  NodePtr rootfs_node(const Node& parent, std::string_view name, const std::string& path,
                      mode_t type);
  NodePtr rootfs_lookup(const Node& dir, std::string_view name);
  std::vector<NodePtr> rootfs_list(const Node& dir);
  std::shared_ptr<StagedFile> rootfs_open(const Node& node, int flags);
  std::shared_ptr<StagedFile> rootfs_create(const Node& parent, std::string_view name, mode_t mode,
                                            int flags, NodePtr* node);
  Attr rootfs_setattr(const Node& node, const SetAttr& change);
  // Changes to rootfs/ not pushed yet, without loading the base.
  bool has_rootfs_changes(const cache::StagedTag& tag);
  // Adds the layer of rootfs/'s changes to `plan` (one image manifest).
  void add_rootfs_layer(const cache::StagedTag& tag, StagedLayout& layout, PushPlan& plan);

  RemoteNames& tree_;  // the names the mount shows (fs/tree/names.h)
  Content& content_;
  cache::StagingArea area_;
  Pusher pusher_;
  const bool allow_delete_;
  const bool alone_on_cache_;
  const std::chrono::milliseconds push_delay_;
  const BuildOptions build_;

  std::mutex mutex_;  // guards the maps below; never held over I/O
  std::map<std::string, std::weak_ptr<StagedFile::PathState>> open_paths_;
  struct Hashed {
    int64_t size;
    int64_t mtime_ns;
    std::string digest;
  };
  std::map<std::string, Hashed> hashed_;  // by backing path
  // Held over each change of a tag's rootfs/ (fs/push/rootfs_overlay.h).
  std::map<cache::StagedTag, std::shared_ptr<std::recursive_mutex>> rootfs_locks_;
  // What each incomplete tag waited for at its last check (plan_push).
  std::map<cache::StagedTag, std::string> waiting_;
  // Tags whose push this mount ran or tried (guarded by mutex_): the only
  // ones it retries when a registry comes back up.
  std::set<cache::StagedTag> mine_;

  // Lock order: builds_mutex_ before mutex_; neither is held over a push.
  std::mutex builds_mutex_;  // guards pending_, building_ and stopping_'s setting
  // Builds waiting for their quiet time: when it ends. Each has one
  // build_when_due task waiting on build_timers_.
  std::map<cache::StagedTag, std::chrono::steady_clock::time_point> pending_;
  std::set<cache::StagedTag> building_;  // making their layer now
  // Set under builds_mutex_ by the destructor: nothing more goes to
  // build_timers_ or resumes_, no resumed push starts.
  std::atomic<bool> stopping_{false};

  // Last, so they stop first; the destructor stops resumes_ and
  // build_timers_, then drains pushes_.
  PushQueue pushes_;  // every push (push_if_complete), one at a time per tag
  // One thread each: the ends of builds' quiet times (delayed tasks that
  // queue the build), and resumed pushes in turn (waiting for each), apart
  // so that a long resumed push does not hold a build back.
  std::unique_ptr<WorkerPool> build_timers_;
  std::unique_ptr<WorkerPool> resumes_;
};

}  // namespace regfs::fs

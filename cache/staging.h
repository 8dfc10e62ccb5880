// The staging area of pushes (SPEC §4): what users write under a new tag is
// kept on local disk, never only in memory, until it is pushed:
//   <root>/<registry>/<namespace path>/            namespaces made by mkdir
//   <root>/<registry>/<repository>/@<tag>/...      a staged tag: the files
//                                                  and directories written
//   <root>/<registry>/<repository>/%<tag>.json     its state (below)
//   <root>/<registry>/<repository>/%<tag>.upper/   the upper directory of
//                                                  its writable rootfs/
// ('@' and '%' cannot start a repository component, so tags, states and
// namespaces never collide.) Staged files are real files of the sizes and
// times users see; the modes users set are kept in the state, so that the
// backing files stay writable by the daemon. A blob copied from the mount
// with copy_file_range is kept as a reference (registry, repository,
// digest) over a sparse file of the blob's size: no bytes are stored.
// Everything is rebuilt from disk at mount, so staged tags survive unmount,
// crash and remount. The area lies outside the LRU cache: staged content is
// never evicted. States are written to a temporary name and renamed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "cache/unique_fd.h"
#include "registry/core/digest.h"

namespace regfs::cache {

// Bytes that are blob `digest` of registry/repository, not stored locally.
struct BlobReference {
  std::string registry;
  std::string repository;
  std::string digest;
  int64_t size = 0;
  bool operator==(const BlobReference&) const = default;
};

// Metadata of an entry in the upper directory of a staged tag's rootfs/
// (the backing files stay the daemon's, owned by it and writable).
struct RootfsEntryMeta {
  uint32_t mode = 0;  // permission bits, setuid/setgid/sticky included
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::map<std::string, std::string> xattrs;  // name -> value
  bool operator==(const RootfsEntryMeta&) const = default;
};

// Changes to a staged copy of an image's rootfs/ besides the upper files
// (fs/push/rootfs_overlay.h), by path inside the rootfs.
struct RootfsChanges {
  std::set<std::string> whiteouts;                 // removed from the base
  std::set<std::string> opaque;                    // upper directories hiding the base's entries
  std::map<std::string, RootfsEntryMeta> entries;  // upper entries' metadata
};

// A chunked blob upload in flight, so that the next process resumes it
// (registry::UploadProgress): the registry's session URL for the next step,
// the bytes the session holds, and the blob's size.
struct UploadSession {
  std::string url;
  uint64_t offset = 0;
  uint64_t size = 0;
};

// What is remembered of a staged tag besides its files.
struct StagedTagState {
  std::map<std::string, uint32_t> modes;            // path in the tag -> permission bits
  std::map<std::string, BlobReference> references;  // path in the tag -> blob
  // path in the tag -> extended attributes set on it (name -> value)
  std::map<std::string, std::map<std::string, std::string>> xattrs;
  std::string error;          // why the last push failed; empty if it did not
  std::string pushed_digest;  // manifest digest last pushed; empty if none
  // The manifest digest of a push begun and not finished: set only while a
  // push runs, so a non-empty one at mount says the daemon died mid-push.
  std::string pushing;
  // Made by a program that copies trees (cp, rsync, tar): a tag, and the
  // directories made in it its content. A tag made otherwise (mkdir -p
  // ns/repo) may be a repository to be: a directory made in it while it is
  // empty makes it one.
  bool made_by_copy = false;
  RootfsChanges rootfs;                          // edits of rootfs/ (a staged copy of an image)
  std::map<std::string, UploadSession> uploads;  // blob digest -> its upload in flight
};

// Coordinates of a staged tag.
struct StagedTag {
  std::string registry;
  std::string repository;
  std::string tag;
  bool operator<(const StagedTag& o) const {
    return std::tie(registry, repository, tag) < std::tie(o.registry, o.repository, o.tag);
  }
};

class StagingArea {
 public:
  // Creates `root` (mode 0700) if needed.
  explicit StagingArea(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path namespace_dir(std::string_view registry, std::string_view path) const;
  std::filesystem::path tag_dir(const StagedTag& tag) const;
  // The upper directory of the tag's writable rootfs/ (may not exist).
  std::filesystem::path upper_dir(const StagedTag& tag) const;
  // `relative` ("" for the tag directory) inside the staged tag.
  std::filesystem::path file(const StagedTag& tag, std::string_view relative) const;

  bool has_namespace(std::string_view registry, std::string_view path) const;
  void make_namespace(std::string_view registry, std::string_view path);
  // Removes an empty staged namespace; false if it holds anything.
  bool remove_namespace(std::string_view registry, std::string_view path);
  // Child namespace names and staged tags directly under `path`, sorted.
  std::vector<std::string> child_namespaces(std::string_view registry, std::string_view path) const;
  std::vector<std::string> tags(std::string_view registry, std::string_view repository) const;
  bool has_tag(const StagedTag& tag) const;
  void make_tag(const StagedTag& tag);
  // Removes the tag's files, its rootfs/ upper directory and state.
  void discard_tag(const StagedTag& tag);
  // Makes the (file-less) staged tag `tag` the namespace of the same name,
  // marked as a repository (a tag was made in it: mkdir -p ns/repo).
  void tag_to_namespace(const StagedTag& tag);
  // A namespace made by tag_to_namespace: a repository, whose new
  // directories are tags and whose tags' directories stay directories.
  bool is_staged_repository(std::string_view registry, std::string_view path) const;
  // Every staged tag, for the start-up scan.
  std::vector<StagedTag> all_tags() const;

  // Waits for, and holds until the result goes, the tag's push lock: an
  // flock on the tag's directory, so mounts sharing this cache directory
  // push a tag one at a time. Once it is held the tag's state is read
  // again from disk, where another mount may have recorded a push. An
  // empty result: the tag is not staged (any more).
  UniqueFd lock_push(const StagedTag& tag);

  StagedTagState state(const StagedTag& tag) const;
  // Changes the state under the area's lock and writes it; does nothing for
  // a tag that is not staged (discarded meanwhile), so none is left behind.
  void update_state(const StagedTag& tag, const std::function<void(StagedTagState&)>& change);
  // As update_state, but writes only if `change` returns true (it changed
  // something): a cp -r of thousands of files rewrites the state per file
  // only for what it records.
  void update_state_if(const StagedTag& tag, const std::function<bool(StagedTagState&)>& change);

 private:
  std::filesystem::path state_path(const StagedTag& tag) const;
  StagedTagState read_state(const StagedTag& tag) const;
  void write_state(const StagedTag& tag, const StagedTagState& state);

  std::filesystem::path root_;
  mutable std::mutex mutex_;                            // guards states_; serialises state changes
  mutable std::map<StagedTag, StagedTagState> states_;  // read so far
};

// The SHA-256 of a staged file as it is written: writes in order extend the
// hash; anything else (a seek back, a hole, a truncate) makes it unknown, and
// the file is hashed from disk when it is checked.
class WriteHasher {
 public:
  void wrote(uint64_t offset, const char* data, size_t size);
  void truncated(uint64_t size);
  // The digest if exactly `file_size` bytes were hashed in order.
  std::optional<std::string> digest(uint64_t file_size);

 private:
  registry::Sha256 hash_;
  uint64_t hashed_ = 0;
  bool in_order_ = true;
};

// "sha256:<hex>" of a file read from disk. Throws Error(kIo).
std::string hash_file(const std::filesystem::path& path);

}  // namespace regfs::cache

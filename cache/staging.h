// The staging area of pushes (SPEC §4): what users write under a new tag is
// kept on local disk, never only in memory, until it is pushed:
//   <root>/<registry>/<namespace path>/            namespaces made by mkdir
//   <root>/<registry>/<repository>/@<tag>/...      a staged tag: the files
//                                                  and directories written
//   <root>/<registry>/<repository>/%<tag>.json     its state (below)
//   <root>/<registry>/<repository>/%<tag>.journal  changes since the state
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
// never evicted. States are written to a temporary name and renamed; changes
// of per-path metadata are appended to a journal beside the state
// (`%<tag>.journal`, cache/staged_state.h) until it outgrows the state.
#pragma once

#include <sys/types.h>

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

#include "cache/staged_state.h"
#include "cache/unique_fd.h"
#include "registry/core/digest.h"

namespace regfs::cache {

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
  // again from disk if another mount changed it (recorded a push). An
  // empty result: the tag is not staged (any more).
  UniqueFd lock_push(const StagedTag& tag);

  StagedTagState state(const StagedTag& tag) const;
  // As state(), read again first if another process (a mount sharing this
  // cache directory) changed the tag's state files since: for what is shown
  // (user.regfs.state, regfs status). Two stat(2)s more.
  StagedTagState current_state(const StagedTag& tag) const;
  // Changes the state under the area's lock and writes it; does nothing for
  // a tag that is not staged (discarded meanwhile), so none is left behind.
  void update_state(const StagedTag& tag, const std::function<void(StagedTagState&)>& change);
  // As update_state, but writes only if `change` returns true (it changed
  // something): a cp -r of thousands of files rewrites the state per file
  // only for what it records.
  void update_state_if(const StagedTag& tag, const std::function<bool(StagedTagState&)>& change);
  // As update_state_if, for a change of what the state keeps for `path`
  // alone (its mode, reference, xattrs, rootfs entry, whiteout and opaque
  // marks; tag-wide fields only set to what they are): made in place, with
  // a journal line of that path's entries, so n changes cost O(n log n),
  // not a copy of the whole state each (a cp -a of many files).
  void update_path_state_if(const StagedTag& tag, const std::string& path,
                            const std::function<bool(StagedTagState&)>& change);
  // Calls `read` with the state, under the area's lock and without a copy
  // (for lookups on every request); `read` must not call the area.
  void read_state(const StagedTag& tag,
                  const std::function<void(const StagedTagState&)>& read) const;

 private:
  // What a state's files on disk were when last read or written by this
  // area: another mount of the cache directory changes them.
  struct StateFiles {
    ino_t document_ino = 0;       // of %<tag>.json (a rewrite is a rename)
    uint64_t document_bytes = 0;  // of %<tag>.json
    int64_t document_mtime_ns = 0;
    uint64_t journal_bytes = 0;  // of %<tag>.journal
    bool operator==(const StateFiles&) const = default;
  };
  // A state as read or last written.
  struct HeldState {
    StagedTagState state;
    uint64_t generation = 0;  // of the document (cache/staged_state.h)
    StateFiles on_disk;
  };
  static constexpr uint64_t kMinJournal = 64 << 10;

  std::filesystem::path state_path(const StagedTag& tag) const;
  std::filesystem::path journal_path(const StagedTag& tag) const;
  StateFiles files_of(const StagedTag& tag) const;
  // The state of `tag` (the document and its journal, read once); mutex_ held.
  HeldState& held_state(const StagedTag& tag) const;
  // Drops the held state of `tag` if another process (a mount sharing the
  // cache directory) changed its files since it was read; mutex_ held.
  void forget_if_changed(const StagedTag& tag) const;
  // Appends `text` (journal lines) to the tag's journal. Throws Error.
  void append_journal(const StagedTag& tag, const std::string& text);
  // Rewrites the document of `held` as `state`, a generation on, and drops
  // the journal. Throws Error.
  void write_document(const StagedTag& tag, const StagedTagState& state, HeldState& held);

  std::filesystem::path root_;
  mutable std::mutex mutex_;                       // guards states_; serialises state changes
  mutable std::map<StagedTag, HeldState> states_;  // read so far
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

// What is remembered of a staged tag besides its files (cache/staging.h),
// and its form on disk: one JSON document (`%<tag>.json`), and a journal of
// changes since (`%<tag>.journal`), one JSON line each. A line holds only the
// per-path entries a change set or removed (null) in the maps that grow with
// the tag's files (modes, references, xattrs, rootfs entries), so copying n
// files in writes O(n) bytes, not O(n^2); any other change rewrites the
// document. A line names the document's generation it applies to, so lines
// left behind by a crash after a rewrite are ignored, as is a torn last line.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

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
  bool operator==(const RootfsChanges&) const = default;
};

// A chunked blob upload in flight, so that the next process resumes it
// (registry::UploadProgress): the registry's session URL for the next step,
// the bytes the session holds, and the blob's size.
struct UploadSession {
  std::string url;
  uint64_t offset = 0;
  uint64_t size = 0;
  bool operator==(const UploadSession&) const = default;
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

// The state document; `generation` numbers the rewrites, for the journal.
nlohmann::json state_to_json(const StagedTagState& state, uint64_t generation);
// The state of a document (fields that are missing or malformed are left
// empty), and its generation (0 if none) in `generation`.
StagedTagState state_from_json(const nlohmann::json& doc, uint64_t* generation);

// The journal line taking `before` to `after` for a document of
// `generation`, or nullopt if they differ in more than per-path entries (the
// document must then be rewritten). An empty object if they are equal.
std::optional<nlohmann::json> state_change(const StagedTagState& before,
                                           const StagedTagState& after, uint64_t generation);
// Applies a journal line to `state` if it is of `generation`; false if it is
// not (left behind by a rewrite) or malformed.
bool apply_state_change(StagedTagState& state, const nlohmann::json& line, uint64_t generation);

}  // namespace regfs::cache

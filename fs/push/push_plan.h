// What a staged tag pushes (SPEC §4), decided without FUSE or network: the
// planner asks a StagedLayout for files, blobs and manifests and answers
// with a plan once the tag is complete, nothing while it is not, or throws
// Error(kInvalid) for content that can never be pushed.
//
// A staged tag is complete when it has
//   index.json     an OCI layout: the descriptor whose
//                  org.opencontainers.image.ref.name is the tag, else the
//                  only one (several and none named: kInvalid);
//   manifest.json  an image manifest or index (a thin retag), or docker
//                  save's legacy array (below);
// and every blob reached, recursively through indexes, is staged and
// verified, a reference, or already in the target repository.
//
// A `docker save` directory (manifest.json = [{"Config","RepoTags",
// "Layers"}]) is pushed with an OCI manifest built for it: the config file
// as an OCI config (docker's config is a superset) and each layer tarball
// uploaded as it is, uncompressed (application/vnd.oci.image.layer.v1.tar).
// Uncompressed, a layer's digest is its diff_id, so the config stays valid
// and the pushed image is the saved one byte for byte; gzip would save
// registry space but cost CPU and a second copy on disk at push time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cache/staging.h"
#include "registry/manifest.h"

namespace regfs::fs {

// The largest manifest or image config registries take (distribution's
// limit, which the OCI distribution spec asks registries to accept at least).
inline constexpr int64_t kMaxManifestBytes = 4 << 20;
// "Cannot push <what>: it is N bytes; registries take manifests and
// configs up to 4 MiB", thrown as Error(kInvalid) when `size` is over it.
void check_manifest_size(const std::string& what, int64_t size);

struct PlanBlob {
  enum class Source {
    kStaged,     // a verified staged file
    kReference,  // a blob of a registry (copied with copy_file_range)
    kTarget,     // already in the target repository
    kInline,     // `bytes` below (an edited config)
  };
  std::string digest;
  int64_t size = 0;
  Source source = Source::kTarget;
  std::filesystem::path file = {};      // kStaged
  cache::BlobReference reference = {};  // kReference
  std::string bytes = {};               // kInline
};

struct PlanManifest {
  std::string digest;
  std::string media_type;
  std::string bytes;
};

struct PushPlan {
  std::vector<PlanBlob> blobs;  // configs and layers, each digest once
  // Manifests in push order: children before their index; the last one is
  // the tag's and is pushed by tag, the others by digest.
  std::vector<PlanManifest> manifests;
  const std::string& digest() const { return manifests.back().digest; }
};

// Questions the planner asks about one staged tag.
class StagedLayout {
 public:
  virtual ~StagedLayout() = default;
  // A small complete file of the tag ("index.json"), nullopt if absent or
  // still open for writing.
  virtual std::optional<std::string> read_file(const std::string& path) = 0;
  // A complete file's path, size and digest (docker-save layers, configs).
  struct FileInfo {
    std::filesystem::path path;
    int64_t size = 0;
    std::string digest;
  };
  virtual std::optional<FileInfo> file_info(const std::string& path) = 0;
  // blobs/sha256/<hex> staged and verified, or a reference; else nullopt.
  virtual std::optional<PlanBlob> staged_blob(const std::string& digest) = 0;
  // The bytes of a manifest blob from wherever `blob` says (verified).
  virtual std::string manifest_bytes(const PlanBlob& blob) = 0;
  // The bytes of a small blob (a config) from wherever `blob` says.
  virtual std::string config_bytes(const PlanBlob& blob) = 0;
  // Whether the target repository has the blob (HEAD); for a manifest, its
  // bytes from the target when it has it.
  virtual bool in_target(const std::string& digest) = 0;
  virtual std::optional<std::string> target_manifest(const std::string& digest) = 0;
};

// The plan for pushing the staged tag `tag`, or nullopt while incomplete;
// then `waiting_for` (if given) says what is missing: "no index.json or
// manifest.json", "blob sha256:…", "manifest sha256:…" or a file's path.
std::optional<PushPlan> plan_push(StagedLayout& layout, const std::string& tag,
                                  std::string* waiting_for = nullptr);

// Narrows a plan whose tag is an index to the image of `platform` alone (the
// child it chooses as the mount does: fs/image.h; nested indexes searched),
// dropping the other manifests and the blobs only they reach: what
// `docker build` makes FROM a multi-platform base. A plan of one image is
// left as it is. Returns the platform's "os/arch[/variant]" narrowed to, or
// "" if nothing changed; throws Error(kInvalid) if no child matches.
std::string narrow_to_platform(PushPlan& plan, const registry::Platform& platform);

// The OCI manifest (and its config and layer files) for docker save's
// manifest.json entry matching `tag`. Exposed for tests.
std::optional<PushPlan> plan_docker_save(StagedLayout& layout, const std::string& manifest_json,
                                         const std::string& tag,
                                         std::string* waiting_for = nullptr);

}  // namespace regfs::fs

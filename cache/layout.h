// The cache directory's layout: the one place that names its folders and
// files. Everything else (the stores of cache/, `regfs cache`, `regfs
// mount`) asks a CacheLayout for a path instead of spelling it.
//   blobs/sha256/<hex>              complete, verified blobs (BlobStore)
//   partial/sha256/<hex>            a blob read in part: a sparse file
//   partial/sha256/<hex>.chunks     its chunk log (CachedBlob)
//   layers/sha256/<diff_id>.index   layer indexes: entries and access points
//   layers/sha256/<diff_id>.tar     uncompressed copies of the layers that
//                                   have no access points (LayerStore)
//   layers/tmp/                     layers being indexed
//   refs/<registry>/...             tag answers, tag lists, catalogs (TagStore)
//   staging/<registry>/...          staged tags (StagingArea)
//   builds/                         work files of builds of staged tags
//   tmp/                            blobs being written, renamed into blobs/
//   regfs.log                       the log of a daemon in the background
//   regfs.lock                      every mount holds a shared flock on it
//                                   (cache/cache_use.h)
//   mounts/<pid>                    the mount point of the mount of that pid
// No I/O here.
#pragma once

#include <filesystem>
#include <string_view>
#include <vector>

namespace regfs::cache {

class CacheLayout {
 public:
  using path = std::filesystem::path;
  // The extension of a chunk log beside its partial file.
  static constexpr std::string_view kChunkLogExtension = ".chunks";

  // `root` is the cache directory (--cache-dir).
  explicit CacheLayout(path root) : root_(std::move(root)) {}

  const path& root() const { return root_; }

  path blobs() const { return root_ / "blobs" / "sha256"; }
  // The complete blob of digest "sha256:<hex>" (the hex of a valid digest).
  path blob(std::string_view digest) const;
  path partials() const { return root_ / "partial" / "sha256"; }
  // The sparse file of a blob read in part, and its chunk log.
  path partial(std::string_view digest) const;
  path chunk_log(std::string_view digest) const;
  // LayerStore's root: sha256/ and tmp/ under it (see layer_tar).
  path layers() const { return root_ / "layers"; }
  // Under a LayerStore root `layers`: the uncompressed tar of diff_id
  // "sha256:<hex>", its index, and the folder of layers being indexed.
  static path layer_tar(const path& layers, std::string_view diff_id);
  static path layer_index(const path& layers, std::string_view diff_id);
  static path layer_digests(const path& layers) { return layers / "sha256"; }
  static path layer_tmp(const path& layers) { return layers / "tmp"; }
  path refs() const { return root_ / "refs"; }
  // What TagStore keeps of one registry (its presence: the cache knows it).
  path refs_of(std::string_view registry) const { return refs() / registry; }
  path staging() const { return root_ / "staging"; }
  path builds() const { return root_ / "builds"; }
  path tmp() const { return root_ / "tmp"; }
  path log_file() const { return root_ / "regfs.log"; }
  // The file mounts lock to say they use this cache, and where each names
  // itself (cache/cache_use.h).
  path lock_file() const { return root_ / "regfs.lock"; }
  path mounts() const { return root_ / "mounts"; }

  // The folders of cached content, which `regfs cache clear` removes
  // (staged pushes and builds are not cache).
  std::vector<path> content_dirs() const;

 private:
  path root_;
};

}  // namespace regfs::cache

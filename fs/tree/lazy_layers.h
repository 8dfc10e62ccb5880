// Layers read lazily through their tables of contents (SPEC §5): an eStargz
// layer (descriptor annotation containerd.io/snapshot/stargz/toc.digest) or a
// zstd:chunked one (io.github.containers.zstd-chunked.manifest-checksum) is
// not downloaded whole. Its footer is fetched by HTTP range (eStargz's 51
// bytes, or the legacy stargz 47-byte footer in their tail), then the table
// it points at (or the one the manifest-position annotation names); the
// table is checked against the annotation's digest (which the manifest
// digest covers), and its entries become the layer's LayerIndex. The table
// is kept in the cache (`layers/<hex of its digest>.toc`, bounded with the
// rest, checked again when read), so a later mount reads a layer whose
// chunks are cached with no registry at all. A READ of
// a file fetches by range only the chunks it covers (cache/lazy_layer.h),
// on the blob fetch pool (RegistrySource::submit) while the FUSE thread waits
// within its deadline, each chunk verified against its chunk digest before
// it is served and kept in the blob cache as a small blob keyed by that
// digest (bounded with the rest, shared by every layer holding that chunk);
// a file with a chunk lacking a digest is fetched and verified whole at its
// first READ. A corrupt chunk is EIO for the reads that need it, nothing
// else. A legacy stargz layer is read lazily only if it carries the toc.digest
// annotation too (the table must be verifiable); otherwise it is read whole.
//
// A layer without a table, or whose table is missing, unparsable or does
// not match its digest, is read whole as before; that is logged once per
// layer. The diff_id of a lazy layer is not checked (no whole tar is ever
// read): the table's digest and every chunk's stand for it.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "cache/blob_cache.h"
#include "cache/layer_index.h"
#include "fs/source/source.h"
#include "registry/manifest.h"

namespace regfs::fs {

class LazyLayers {
 public:
  // Chunks of lazy layers are kept in `chunks` as small blobs.
  explicit LazyLayers(cache::BlobCache& chunks) : chunks_(chunks) {}
  // The index of `layer` (of image `repository`, uncompressed digest
  // `diff_id`) read through its table, or nullptr if it is to be read whole
  // (no table annotation; a table missing or wrong, logged once). Throws
  // what fetching the footer and table throws when the registry fails.
  std::shared_ptr<const cache::LayerIndex> open(RegistrySource& content,
                                                const std::string& repository,
                                                const registry::Descriptor& layer,
                                                const std::string& diff_id);

 private:
  void fall_back(const registry::Descriptor& layer, const std::string& why);

  cache::BlobCache& chunks_;
  std::mutex mutex_;              // guards warned_
  std::set<std::string> warned_;  // layer digests whose fallback was logged
};

}  // namespace regfs::fs

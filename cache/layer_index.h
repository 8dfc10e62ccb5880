// What regfs knows about one layer once it has read it: every entry of its
// tar (paths cleaned, in archive order; offsets into the uncompressed tar),
// the access points of its compressed blob (cache/decompress.h), and, once
// loaded, the LayerData its files are read through. Kept on disk in a
// compact binary form (host byte order: the cache is local); a file that does
// not parse is treated as absent and the layer re-indexed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/decompress.h"
#include "cache/layer_data.h"
#include "cache/tar_reader.h"

namespace regfs::cache {

class LazyLayer;

struct LayerIndex {
  std::string diff_id;    // sha256 of the uncompressed tar
  uint64_t tar_size = 0;  // bytes of the uncompressed tar
  std::string blob;       // file name of the compressed blob indexed (its digest's hex)
  Compression compression = Compression::kNone;
  // The access points of the blob, first at 0; none if the layer is read from
  // a tar (uncompressed blob, or `tar_copy`).
  std::vector<AccessPoint> points;
  bool tar_copy = false;  // a decompressed copy is kept: points too far apart
  std::vector<TarEntry> entries;
  // Set for a layer read through its table of contents (no tar kept): where
  // its files' chunks lie, by entry index (cache/lazy_layer.h).
  std::shared_ptr<const LazyLayer> lazy;
  std::shared_ptr<const LayerData> data;  // set once loaded (not stored)
};

// The on-disk form of `index` (without its `data`).
std::string serialize_index(const LayerIndex& index);
// Whether `head` (a file's first bytes) starts an index of this version.
bool is_current_index(std::string_view head);
// Parses serialize_index()'s output; nullopt if it is not that (or another
// version of it), or if an entry's data lies outside the tar.
std::optional<LayerIndex> parse_index(std::string_view bytes);

}  // namespace regfs::cache

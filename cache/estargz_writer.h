// Writes a layer as eStargz (stargz-snapshotter docs/estargz.md), for
// `--layer-compression estargz`: a gzip layer that every gzip reader takes as
// it is, whose regular files start new gzip members (one per 4 MiB chunk),
// with the table of contents `stargz.index.json` (every entry, each chunk's
// offset and sha256) as the tar's last entry in its own member and a 51-byte
// footer member giving the table's offset. The layer descriptor's
// annotation containerd.io/snapshot/stargz/toc.digest (the table's sha256)
// lets regfs and stargz-snapshotter read it lazily (fs/tree/lazy_layers.h).
// Times are whole seconds (the table's RFC 3339 times and the tar agree).
#pragma once

#include <filesystem>
#include <vector>

#include "cache/layer_writer.h"

namespace regfs::cache {

// Uncompressed bytes of one chunk of a file in the layers regfs writes.
inline constexpr size_t kEstargzChunkSize = 4 << 20;

// Writes `entries` as an eStargz layer to `target` (through a temp file
// beside it); the result carries the table's annotations. Throws as
// write_layer.
WrittenLayer write_estargz_layer(const std::vector<LayerEntry>& entries,
                                 const std::filesystem::path& target);

}  // namespace regfs::cache

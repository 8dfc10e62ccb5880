// What regfs knows about one layer once it has read it: every entry of its
// tar (paths cleaned, in archive order) and where the uncompressed tar is kept,
// so that a file's bytes are one pread at entry.offset (a sparse file's: one
// per data segment). Kept on disk in a
// compact binary form (host byte order: the cache is local) next to the tar;
// a file that does not parse is treated as absent and the layer re-indexed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/tar_reader.h"

namespace regfs::cache {

class LazyLayer;

struct LayerIndex {
  std::string diff_id;        // sha256 of the uncompressed tar
  uint64_t tar_size = 0;      // bytes of the uncompressed tar
  std::filesystem::path tar;  // the uncompressed tar in the cache
  std::vector<TarEntry> entries;
  // Set for a layer read through its table of contents (no tar kept): where
  // its files' chunks lie, by entry index (cache/lazy_layer.h).
  std::shared_ptr<const LazyLayer> lazy;
};

// The on-disk form of `index` (without its `tar` path).
std::string serialize_index(const LayerIndex& index);
// Parses serialize_index()'s output; nullopt if it is not that (or another
// version of it), or if an entry's data lies outside the tar.
std::optional<LayerIndex> parse_index(std::string_view bytes);

// Reads up to `size` bytes of file `entry` at `offset` from its layer's tar
// open as `fd` (holes of a sparse file as zeros); returns how many (0 at the
// end). Throws std::system_error.
size_t read_entry_data(int fd, const TarEntry& entry, uint64_t offset, char* out, size_t size);

}  // namespace regfs::cache

// A layer read through its table of contents (cache/toc.h) instead of whole:
// its entries come from the table, and a regular file's bytes are the
// decompressed chunks of the compressed ranges the table gives, fetched when
// the file is read (by the caller's ReadRange: HTTP ranges, consecutive
// chunks in one). Every chunk is checked against its chunk digest and the
// file against its digest before a byte of it is served; verified chunks are
// kept by the caller's ChunkStore keyed by their digest (the blob cache), so
// a chunk is fetched once whichever file or layer it is in.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/toc.h"

namespace regfs::cache {

class LazyLayer {
 public:
  // `length` bytes of the layer blob at `offset`; throws Error.
  using ReadRange = std::function<std::string(uint64_t offset, uint64_t length)>;
  // Verified uncompressed chunks by their sha256: get (nullopt if absent)
  // and put; unset functions keep nothing.
  struct ChunkStore {
    std::function<std::optional<std::string>(const std::string& digest)> get;
    std::function<void(const std::string& digest, std::string_view bytes)> put;
  };
  // Chunks larger than this are not kept (fetched again when read again).
  static constexpr uint64_t kMaxKeptChunk = 16 << 20;

  // `files` is parallel to the entries of the layer's LayerIndex.
  LazyLayer(std::string blob_digest, TocFormat format, std::vector<TocFile> files, ReadRange read,
            ChunkStore chunks = {});

  const std::string& blob_digest() const { return blob_digest_; }
  TocFormat format() const { return format_; }
  // The bytes of regular file `index` (of the LayerIndex's entries), of size
  // `size`. Throws Error(kIntegrity) for a chunk or file digest mismatch,
  // kInvalid for compressed data that does not decompress, what read throws.
  std::string read_file(size_t index, uint64_t size) const;

 private:
  std::string blob_digest_;
  TocFormat format_;
  std::vector<TocFile> files_;
  ReadRange read_;
  ChunkStore chunks_;
};

}  // namespace regfs::cache

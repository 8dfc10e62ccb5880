// Decompressing readers for layer blobs: gzip (every member of a multi-member
// file, as Go's gzip reader does), zstd (every frame) or none. Each owns its
// library context (RAII) and gives the decompressed bytes in order with a
// small fixed buffer, whatever the layer's size.
//
// Access points make a stream readable from the middle (as zlib's zran.c,
// SOCI's zTOC and ratarmount do): while decompressing from the start a reader
// records, about every `spacing` bytes of output, where it can resume. For
// gzip that is a deflate block boundary: the compressed byte and bit, and the
// 32 KiB of output before it (the window later blocks refer to), kept
// deflate-compressed. For zstd it is the start of a frame (no window: frames
// are independent); a single-frame stream has only the one at its start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace regfs::cache {

enum class Compression { kNone, kGzip, kZstd };

// Where decompression can start again: `in` bytes into the compressed blob
// (gzip: `bits` bits of the byte before it still unread), `out` bytes into the
// uncompressed stream; `window`: the gzip dictionary, deflate-compressed
// (empty for zstd and for the start of a gzip member).
struct AccessPoint {
  uint64_t in = 0;
  uint64_t out = 0;
  uint8_t bits = 0;
  std::string window;
  bool operator==(const AccessPoint&) const = default;
};

class Decompressor {
 public:
  virtual ~Decompressor() = default;
  // Fills up to `size` bytes and returns how many; 0 only at the end.
  // Throws Error(kInvalid) for corrupt or truncated data, kIo for read errors.
  virtual size_t read(char* data, size_t size) = 0;
  // The access points recorded so far (open_decompressor with a spacing),
  // in order of `out`; the first is at out 0.
  virtual std::vector<AccessPoint> take_points() { return {}; }
};

// Opens `file` for reading through `compression`; with `spacing` > 0 records
// access points about that many uncompressed bytes apart. Throws Error(kIo).
std::unique_ptr<Decompressor> open_decompressor(const std::filesystem::path& file,
                                                Compression compression, uint64_t spacing = 0);

// Decompresses the blob open as `fd` (named `name` in errors; not owned, read
// with pread) from `point`, one that open_decompressor recorded for it.
// Throws Error(kInvalid) if the data there does not decompress, kIo.
std::unique_ptr<Decompressor> resume_decompressor(int fd, const std::string& name,
                                                  Compression compression,
                                                  const AccessPoint& point);

}  // namespace regfs::cache

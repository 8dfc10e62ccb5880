// Decompressing readers for layer blobs: gzip (every member of a multi-member
// file, as Go's gzip reader does), zstd (every frame) or none. Each owns its
// file descriptor and library context (RAII) and gives the decompressed bytes
// in order with a small fixed buffer, whatever the layer's size.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>

namespace regfs::cache {

enum class Compression { kNone, kGzip, kZstd };

class Decompressor {
 public:
  virtual ~Decompressor() = default;
  // Fills up to `size` bytes and returns how many; 0 only at the end.
  // Throws Error(kInvalid) for corrupt or truncated data, kIo for read errors.
  virtual size_t read(char* data, size_t size) = 0;
};

// Opens `file` for reading through `compression`. Throws Error(kIo).
std::unique_ptr<Decompressor> open_decompressor(const std::filesystem::path& file,
                                                Compression compression);

}  // namespace regfs::cache

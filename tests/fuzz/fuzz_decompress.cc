// libFuzzer target: gzip and zstd layer blobs (the first byte picks the
// compression). Corrupt or truncated input throws registry::Error; output is
// read in bounded pieces and capped, as a decompression bomb would need.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cache/decompress.h"
#include "registry/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace cache = regfs::cache;
  if (size == 0) return 0;
  auto compression = data[0] % 3 == 0   ? cache::Compression::kGzip
                     : data[0] % 3 == 1 ? cache::Compression::kZstd
                                        : cache::Compression::kNone;
  int fd = ::memfd_create("fuzz-layer", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (::write(fd, data + 1, size - 1) == static_cast<ssize_t>(size - 1)) {
    try {
      auto in = cache::open_decompressor("/proc/self/fd/" + std::to_string(fd), compression);
      std::vector<char> buffer(1 << 16);
      size_t total = 0;
      while (total < (64u << 20)) {
        size_t n = in->read(buffer.data(), buffer.size());
        if (n == 0) break;
        total += n;
      }
    } catch (const regfs::registry::Error&) {
    }
  }
  ::close(fd);
  return 0;
}

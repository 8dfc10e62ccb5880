// libFuzzer target: a layer's tar stream, read entry by entry as the rootfs
// view does (libarchive underneath), every path cleaned so it cannot leave
// the root and every file's data (a sparse file's runs) within the stream;
// and the cache's own layer index format, which a damaged cache file may
// hold. Only registry::Error may be thrown.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "cache/layer_index.h"
#include "cache/tar_reader.h"
#include "registry/core/error.h"

namespace {

void check_clean(const std::string& path) {
  std::string clean = regfs::cache::clean_path(path);
  if (clean.starts_with('/') || clean == ".." || clean.starts_with("../") ||
      clean.find("/../") != std::string::npos || clean.ends_with("/..")) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace cache = regfs::cache;
  size_t consumed = 0;
  // Small, uneven reads, as a decompressor gives them.
  cache::TarReader reader([&](char* out, size_t want) {
    size_t n = std::min({want, size - consumed, size_t{4099}});
    std::memcpy(out, data + consumed, n);
    consumed += n;
    return n;
  });
  try {
    for (int i = 0; i < 100000; ++i) {
      auto entry = reader.next();
      if (!entry) break;
      check_clean(entry->path);
      if (entry->type == cache::EntryType::kHardlink) check_clean(entry->link);
      if (entry->offset > size) std::abort();  // data starts within the stream
      if (!entry->sparse && entry->size > size - entry->offset) std::abort();
      uint64_t end = 0;
      for (const auto& s : entry->segments) {  // a sparse file's runs: in order, in the stream
        if (s.offset < end || s.data > size || s.length > size - s.data) std::abort();
        if (s.offset + s.length > entry->size) std::abort();
        end = s.offset + s.length;
      }
    }
  } catch (const regfs::registry::Error&) {
  }
  cache::parse_index(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}

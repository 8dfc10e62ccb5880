// A test helper: `data` as one zstd frame (level 3), for the tests that
// build zstd:chunked-like blobs by hand (toc_test.cc, lazy_layer_test.cc).
#pragma once

#include <zstd.h>

#include <string>

namespace regfs::cache::testing {

inline std::string zstd_frame(const std::string& data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3));
  return out;
}

}  // namespace regfs::cache::testing

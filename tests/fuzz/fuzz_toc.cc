// libFuzzer target: tables of contents of lazy layers (cache/toc.h). The
// first byte picks eStargz or zstd:chunked and what the rest is: a table's
// JSON, a compressed table member, a footer, or a compressed chunk range.
// Anything malformed throws registry::Error; nothing crashes or reads out
// of bounds, and a chunk's output is capped by its claimed size.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cache/toc.h"
#include "registry/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace cache = regfs::cache;
  if (size == 0) return 0;
  auto format = data[0] & 1 ? cache::TocFormat::kZstdChunked : cache::TocFormat::kEstargz;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    switch ((data[0] >> 1) % 4) {
      case 0: {
        auto toc = cache::parse_toc(format, rest, rest.size());
        for (size_t i = 0; i < toc.files.size(); ++i) {
          for (const auto& c : toc.files[i].chunks) {
            if (c.size < (1u << 20) && c.end <= rest.size() && c.offset <= c.end) {
              cache::decompress_chunk(format, c, rest.substr(c.offset, c.end - c.offset));
            }
          }
        }
        break;
      }
      case 1:
        cache::extract_toc(format, rest);
        break;
      case 2:
        cache::estargz_toc_range(rest, size);
        cache::zstd_chunked_footer_range(rest);
        cache::zstd_chunked_annotation_range(rest);
        cache::parse_rfc3339(rest);
        break;
      default: {
        cache::TocChunk chunk{0,  rest.size(), static_cast<uint64_t>(data[0] % 7), 0, 4096,
                              {}, false};
        cache::decompress_chunk(format, chunk, rest);
      }
    }
  } catch (const regfs::registry::Error&) {
  }
  return 0;
}

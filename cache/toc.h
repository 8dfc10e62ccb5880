// Tables of contents of lazily readable layers: eStargz (a gzip layer whose
// files start new gzip members, with a JSON table `stargz.index.json` in its
// last member and a 51-byte footer holding the table's offset; the original
// stargz format of CRFS has a 47-byte footer instead) and
// zstd:chunked (a zstd layer whose files are frames of their own, with a
// zstd-compressed JSON table in a skippable frame and a 72-byte footer).
// Both tables list every tar entry (type, name, mode, owner, mtime, link,
// device, xattrs) and, for regular files, the compressed ranges of their
// chunks with each chunk's sha256, so that a layer's tree is known from the
// table alone and a file is read by fetching only its chunks.
//
// Formats: stargz-snapshotter docs/estargz.md and containers/storage
// pkg/chunked (docs/zstd-chunked-format). This file only parses and
// decompresses bytes it is given; fetching them is the caller's (no HTTP).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/tar_reader.h"

namespace regfs::cache {

enum class TocFormat { kEstargz, kZstdChunked };

// Layer descriptor annotations naming a table's digest (and position).
inline constexpr std::string_view kEstargzTocDigest = "containerd.io/snapshot/stargz/toc.digest";
inline constexpr std::string_view kZstdChunkedChecksum =
    "io.github.containers.zstd-chunked.manifest-checksum";
inline constexpr std::string_view kZstdChunkedPosition =
    "io.github.containers.zstd-chunked.manifest-position";

inline constexpr size_t kEstargzFooterSize = 51;
inline constexpr size_t kLegacyStargzFooterSize = 47;
inline constexpr size_t kZstdChunkedFooterSize = 72;

// One chunk of a regular file: `size` uncompressed bytes at `file_offset` in
// the file, the first bytes after skipping `inner_offset` of what the
// compressed range [offset, end) of the layer blob decompresses to.
struct TocChunk {
  uint64_t offset = 0;
  uint64_t end = 0;
  uint64_t inner_offset = 0;
  uint64_t file_offset = 0;
  uint64_t size = 0;
  std::string digest;  // sha256 of the uncompressed chunk; empty: none given
  bool zeros = false;  // a hole (zstd:chunked chunkType "zeros"): no bytes to fetch
};

// How a regular file's bytes are had: its chunks in file order, or bytes the
// table already holds (eStargz's own stargz.index.json entry).
struct TocFile {
  std::string digest;  // sha256 of the whole file; empty: none given
  std::vector<TocChunk> chunks;
  std::optional<std::string> inline_data;
};

struct Toc {
  TocFormat format = TocFormat::kEstargz;
  std::vector<TarEntry> entries;  // paths cleaned (clean_path), in table order
  std::vector<TocFile> files;     // parallel to entries (empty for non-files)
};

// Where a table lies in the layer blob: compressed bytes [offset, offset+length).
struct TocRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// The table's range from the last 51 bytes of an eStargz blob of `blob_size`
// bytes: the footer member's extra subfield 'S','G' holding "%016x" offset +
// "STARGZ"; or, in the last 47 of them, the legacy stargz footer (CRFS: an
// empty gzip member whose whole extra field is "%016x" + "STARGZ"). The table
// runs up to the footer. nullopt if `footer` ends with neither footer.
std::optional<TocRange> estargz_toc_range(std::string_view footer, uint64_t blob_size);
// The table's range from the last 72 bytes of a zstd:chunked blob (a
// skippable frame: offset, compressed and uncompressed lengths, type 1,
// tar-split position, magic "GNUlInUx"), or from the manifest-position
// annotation "offset:length:uncompressed:type". nullopt if neither is one.
std::optional<TocRange> zstd_chunked_footer_range(std::string_view footer);
std::optional<TocRange> zstd_chunked_annotation_range(std::string_view annotation);

// The table JSON inside the bytes of `range`: an eStargz table member
// gunzipped to the tar entry stargz.index.json (whose header is also
// returned, for the entry the layer's tar holds), a zstd:chunked one
// decompressed. Throws Error(kInvalid) if they are not that.
struct TocBytes {
  std::string json;
  std::optional<TarEntry> toc_entry;  // eStargz: stargz.index.json as the tar has it
};
TocBytes extract_toc(TocFormat format, std::string_view compressed);

// Parses the table JSON `json` of `format`; `toc_offset` (eStargz) ends the
// last chunk's compressed range. Throws Error(kInvalid) for anything that is
// not a table regfs can serve (unknown types, chunks out of order or range).
Toc parse_toc(TocFormat format, std::string_view json, uint64_t toc_offset);

// The uncompressed bytes of `chunk` from its compressed range `compressed`
// (gzip members or zstd frames), checked against chunk.digest. Throws
// Error(kInvalid) for bad compressed data, kIntegrity for a digest mismatch.
std::string decompress_chunk(TocFormat format, const TocChunk& chunk, std::string_view compressed);

// Seconds and nanoseconds since the epoch of an RFC 3339 time
// ("2024-01-01T00:00:00.5Z", "...+02:00"); nullopt if it is not one.
std::optional<std::pair<int64_t, uint32_t>> parse_rfc3339(std::string_view text);

}  // namespace regfs::cache

#include "cache/toc.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>

#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr uint64_t kMaxTocSize = 256ull << 20;  // a table larger than this is refused
constexpr uint32_t kSkippableMagic = 0x184D2A50;
constexpr std::string_view kZstdChunkedMagic = "GNUlInUx";
constexpr std::string_view kTocName = "stargz.index.json";

uint64_t le64(std::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

uint32_t le32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

[[noreturn]] void invalid(const std::string& what) {
  throw Error(ErrorKind::kInvalid, "Cannot read the table of contents: " + what);
}

// Decompresses gzip members (one after another) from `in` until `want`
// bytes are out or the input ends; returns what came out.
std::string gunzip(std::string_view in, uint64_t want) {
  std::string out;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) invalid("zlib init");
  std::unique_ptr<z_stream, void (*)(z_stream*)> guard(&zs, [](z_stream* s) { inflateEnd(s); });
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  char buffer[64 * 1024];
  while (out.size() < want) {
    zs.next_out = reinterpret_cast<Bytef*>(buffer);
    zs.avail_out = sizeof buffer;
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buffer, sizeof buffer - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);  // the next member
    } else if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
      break;  // the range ends inside a member: what came out is all there is
    } else if (rc != Z_OK) {
      invalid(std::string("bad gzip data: ") + (zs.msg ? zs.msg : "inflate error"));
    }
  }
  return out;
}

// Decompresses zstd frames (skippable ones skipped) from `in` until `want`
// bytes are out or the input ends.
std::string unzstd(std::string_view in, uint64_t want) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!ctx) invalid("zstd init");
  std::string out;
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  char buffer[64 * 1024];
  while (out.size() < want && input.pos < input.size) {
    ZSTD_outBuffer output{buffer, sizeof buffer, 0};
    size_t rc = ZSTD_decompressStream(ctx.get(), &output, &input);
    if (ZSTD_isError(rc)) invalid(std::string("bad zstd data: ") + ZSTD_getErrorName(rc));
    out.append(buffer, output.pos);
    if (output.pos == 0 && rc != 0 && input.pos == input.size) break;
  }
  return out;
}

uint64_t tar_number(std::string_view field) {
  uint64_t v = 0;
  for (char c : field) {
    if (c == '\0' || c == ' ') {
      if (v) break;
      continue;
    }
    if (c < '0' || c > '7') invalid("bad tar number in the table's header");
    v = v * 8 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::string base64_decode(std::string_view in) {
  static const std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    auto pos = kAlphabet.find(c);
    if (pos == std::string_view::npos) invalid("bad base64 in an xattr");
    acc = (acc << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

EntryType entry_type(const std::string& type) {
  static const std::map<std::string, EntryType> kTypes = {
      {"reg", EntryType::kFile},        {"dir", EntryType::kDir},
      {"symlink", EntryType::kSymlink}, {"hardlink", EntryType::kHardlink},
      {"char", EntryType::kChar},       {"block", EntryType::kBlock},
      {"fifo", EntryType::kFifo}};
  auto it = kTypes.find(type);
  if (it == kTypes.end()) invalid("unknown entry type \"" + type + "\"");
  return it->second;
}

// `key` of `j` as a T, `fallback` if absent or null. An integer field must
// hold a JSON integer T can represent (nlohmann would convert a float or
// wrap an out-of-range value): otherwise the table is invalid.
template <typename T>
T get_or(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) invalid(std::string(key) + " is not an integer");
    if (it->is_number_unsigned()) {
      auto value = it->get<uint64_t>();
      if (value > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        invalid(std::string(key) + " is out of range");
      }
      return static_cast<T>(value);
    }
    auto value = it->get<int64_t>();
    if (value < 0 && std::is_unsigned_v<T>) invalid(std::string(key) + " is negative");
    return static_cast<T>(value);
  } else {
    return it->get<T>();
  }
}

TarEntry entry_of(const nlohmann::json& j) {
  TarEntry e;
  e.path = clean_path(j.at("name").get<std::string>());
  e.type = entry_type(j.at("type").get<std::string>());
  e.mode = get_or<uint32_t>(j, "mode", 0) & 07777;
  e.uid = get_or<uint32_t>(j, "uid", 0);
  e.gid = get_or<uint32_t>(j, "gid", 0);
  if (auto t = parse_rfc3339(get_or<std::string>(j, "modtime", ""))) {
    e.mtime = t->first;
    e.mtime_nsec = t->second;
  }
  if (e.type == EntryType::kFile) e.size = get_or<uint64_t>(j, "size", 0);
  e.link = get_or<std::string>(j, "linkName", "");
  if (e.type == EntryType::kHardlink) e.link = clean_path(e.link);
  e.dev_major = get_or<uint32_t>(j, "devMajor", 0);
  e.dev_minor = get_or<uint32_t>(j, "devMinor", 0);
  if (auto x = j.find("xattrs"); x != j.end() && x->is_object()) {
    for (const auto& [k, v] : x->items())
      e.xattrs.emplace_back(k, base64_decode(v.get<std::string>()));
    std::sort(e.xattrs.begin(), e.xattrs.end());
  }
  return e;
}

// A chunk of the entry or "chunk" entry `j`; its compressed end is filled later.
TocChunk chunk_of(const nlohmann::json& j, uint64_t file_size, bool first) {
  TocChunk c;
  c.offset = get_or<uint64_t>(j, "offset", 0);
  c.end = get_or<uint64_t>(j, "endOffset", 0);
  c.inner_offset = get_or<uint64_t>(j, "innerOffset", 0);
  c.file_offset = get_or<uint64_t>(j, "chunkOffset", 0);
  c.size = get_or<uint64_t>(j, "chunkSize", 0);
  if (c.size == 0 && first) c.size = file_size - std::min(file_size, c.file_offset);
  c.digest = get_or<std::string>(j, "chunkDigest", "");
  c.zeros = get_or<std::string>(j, "chunkType", "") == "zeros";
  if (!c.digest.empty() && !registry::is_valid_digest(c.digest)) invalid("bad chunkDigest");
  return c;
}

// Fills each chunk's compressed end: the next larger offset any chunk starts
// at (eStargz, where the table ends the last), or the next chunk's offset or
// the entry's endOffset (zstd:chunked).
void fill_ends(Toc& toc, uint64_t toc_offset) {
  std::set<uint64_t> starts;
  for (const auto& f : toc.files) {
    for (const auto& c : f.chunks) starts.insert(c.offset);
  }
  if (toc.format == TocFormat::kEstargz) starts.insert(toc_offset);
  for (auto& f : toc.files) {
    for (size_t i = 0; i < f.chunks.size(); ++i) {
      auto& c = f.chunks[i];
      if (c.zeros) continue;
      if (toc.format == TocFormat::kZstdChunked && c.end > c.offset) {
        if (i + 1 < f.chunks.size() && f.chunks[i + 1].offset > c.offset) {
          c.end = std::min(c.end, f.chunks[i + 1].offset);
        }
        continue;
      }
      auto next = starts.upper_bound(c.offset);
      if (next == starts.end()) invalid("a chunk past the table");
      c.end = *next;
    }
  }
}

void check_file(const TarEntry& e, const TocFile& f) {
  uint64_t at = 0;
  for (const auto& c : f.chunks) {
    if (c.file_offset != at || (!c.zeros && c.end <= c.offset)) {
      invalid("chunks of " + e.path + " out of order");
    }
    at += c.size;
  }
  if (at != e.size) invalid("chunks of " + e.path + " do not cover its size");
  if (!f.digest.empty() && !registry::is_valid_digest(f.digest)) invalid("bad digest");
}

}  // namespace

namespace {

// The offset in the 16 hex digits at `hex`, then "STARGZ"; nullopt if not.
std::optional<uint64_t> stargz_offset(std::string_view hex_then_magic) {
  if (hex_then_magic.substr(16, 6) != "STARGZ") return std::nullopt;
  uint64_t offset = 0;
  for (char c : hex_then_magic.substr(0, 16)) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    offset = offset * 16 + static_cast<uint64_t>(d);
  }
  return offset;
}

// A gzip header with only FEXTRA (RFC 1952) whose XLEN is `xlen`.
bool gzip_extra_header(std::string_view f, unsigned xlen) {
  return static_cast<unsigned char>(f[0]) == 0x1f && static_cast<unsigned char>(f[1]) == 0x8b &&
         f[2] == 8 && (f[3] & 4) && static_cast<unsigned char>(f[10]) == xlen && f[11] == 0;
}

}  // namespace

std::optional<TocRange> estargz_toc_range(std::string_view f, uint64_t blob_size) {
  if (f.size() != kEstargzFooterSize || blob_size < kEstargzFooterSize) return std::nullopt;
  std::optional<uint64_t> offset;
  uint64_t end = 0;
  if (gzip_extra_header(f, 26) && f[12] == 'S' && f[13] == 'G' && f[14] == 22 && f[15] == 0) {
    offset = stargz_offset(f.substr(16, 22));
    end = blob_size - kEstargzFooterSize;
  }
  auto legacy = f.substr(kEstargzFooterSize - kLegacyStargzFooterSize);
  if (!offset && gzip_extra_header(legacy, 22)) {
    offset = stargz_offset(legacy.substr(12, 22));
    end = blob_size - kLegacyStargzFooterSize;
  }
  if (!offset || *offset >= end || end - *offset > kMaxTocSize) return std::nullopt;
  return TocRange{*offset, end - *offset};
}

std::optional<TocRange> zstd_chunked_footer_range(std::string_view f) {
  if (f.size() != kZstdChunkedFooterSize || le32(f, 0) != kSkippableMagic || le32(f, 4) != 64 ||
      f.substr(64) != kZstdChunkedMagic || le64(f, 32) != 1) {
    return std::nullopt;
  }
  TocRange range{le64(f, 8), le64(f, 16)};
  if (range.length == 0 || range.length > kMaxTocSize) return std::nullopt;
  return range;
}

std::optional<TocRange> zstd_chunked_annotation_range(std::string_view annotation) {
  std::vector<uint64_t> fields;
  size_t start = 0;
  while (start <= annotation.size()) {
    size_t colon = std::min(annotation.find(':', start), annotation.size());
    auto part = annotation.substr(start, colon - start);
    if (part.empty() || part.size() > 19 ||
        part.find_first_not_of("0123456789") != std::string_view::npos) {
      return std::nullopt;
    }
    fields.push_back(std::stoull(std::string(part)));
    start = colon + 1;
  }
  if (fields.size() != 4 || fields[3] != 1 || fields[1] == 0 || fields[1] > kMaxTocSize) {
    return std::nullopt;
  }
  return TocRange{fields[0], fields[1]};
}

TocBytes extract_toc(TocFormat format, std::string_view compressed) {
  TocBytes out;
  if (format == TocFormat::kZstdChunked) {
    out.json = unzstd(compressed, kMaxTocSize + 1);
    if (out.json.size() > kMaxTocSize) invalid("table over 256 MiB");
    return out;
  }
  std::string tar = gunzip(compressed, kMaxTocSize + 1);
  size_t at = 0;
  while (at + 512 <= tar.size()) {
    std::string_view header(tar.data() + at, 512);
    uint64_t size = tar_number(header.substr(124, 12));
    char type = header[156];
    if (type == 'x' || type == 'g') {  // PAX records of the entry: not needed here
      at += 512 + (size + 511) / 512 * 512;
      continue;
    }
    std::string name(header.substr(0, 100).data(), strnlen(header.data(), 100));
    if (name != kTocName || (type != '0' && type != '\0') || at + 512 + size > tar.size()) {
      invalid("no " + std::string(kTocName) + " in the last gzip member");
    }
    TarEntry e;
    e.path = name;
    e.mode = static_cast<uint32_t>(tar_number(header.substr(100, 8)) & 07777);
    e.uid = static_cast<uint32_t>(tar_number(header.substr(108, 8)));
    e.gid = static_cast<uint32_t>(tar_number(header.substr(116, 8)));
    e.mtime = static_cast<int64_t>(tar_number(header.substr(136, 12)));
    e.size = size;
    out.json = tar.substr(at + 512, size);
    out.toc_entry = std::move(e);
    return out;
  }
  invalid("no tar header in the last gzip member");
}

Toc parse_toc(TocFormat format, std::string_view json, uint64_t toc_offset) {
  Toc toc;
  toc.format = format;
  try {
    auto doc = nlohmann::json::parse(json);
    for (const auto& j : doc.at("entries")) {
      std::string type = j.at("type").get<std::string>();
      if (type == "chunk") {
        if (toc.entries.empty() || toc.entries.back().type != EntryType::kFile) {
          invalid("a chunk entry after no regular file");
        }
        auto& file = toc.files.back();
        file.chunks.push_back(chunk_of(j, toc.entries.back().size, false));
        continue;
      }
      toc.entries.push_back(entry_of(j));
      TocFile file;
      const auto& e = toc.entries.back();
      if (e.type == EntryType::kFile) {
        file.digest = get_or<std::string>(j, "digest", "");
        if (e.size > 0) file.chunks.push_back(chunk_of(j, e.size, true));
      }
      toc.files.push_back(std::move(file));
    }
  } catch (const nlohmann::json::exception& e) {
    invalid(std::string("bad JSON: ") + e.what());
  }
  fill_ends(toc, toc_offset);
  for (size_t i = 0; i < toc.entries.size(); ++i) {
    if (toc.entries[i].type != EntryType::kFile) continue;
    auto& file = toc.files[i];
    check_file(toc.entries[i], file);
    // One chunk covers the whole file: the file's digest is the chunk's.
    if (file.chunks.size() == 1 && file.chunks[0].digest.empty() && !file.chunks[0].zeros) {
      file.chunks[0].digest = file.digest;
    }
  }
  return toc;
}

std::string decompress_chunk(TocFormat format, const TocChunk& chunk, std::string_view compressed) {
  uint64_t want = chunk.inner_offset + chunk.size;
  std::string out =
      format == TocFormat::kEstargz ? gunzip(compressed, want) : unzstd(compressed, want);
  if (out.size() < want) {
    throw Error(ErrorKind::kIntegrity, "Cannot read a chunk at " + std::to_string(chunk.offset) +
                                           ": it decompresses to too few bytes");
  }
  out = out.substr(chunk.inner_offset, chunk.size);
  if (!chunk.digest.empty()) {
    registry::Sha256 hash;
    hash.update(out);
    auto actual = hash.digest();
    if (actual != chunk.digest) {
      throw Error(ErrorKind::kIntegrity, "Cannot use the chunk at " + std::to_string(chunk.offset) +
                                             ": its digest is " + actual + ", the table says " +
                                             chunk.digest);
    }
  }
  return out;
}

std::optional<std::pair<int64_t, uint32_t>> parse_rfc3339(std::string_view t) {
  if (t.size() < 20 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') ||
      t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  auto num = [&](size_t at, size_t n) -> int {
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return -1;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  if (tm.tm_year < -1900 || tm.tm_mon < 0 || tm.tm_mday < 0 || tm.tm_hour < 0 || tm.tm_min < 0 ||
      tm.tm_sec < 0) {
    return std::nullopt;
  }
  size_t at = 19;
  uint32_t nsec = 0;
  if (at < t.size() && t[at] == '.') {
    uint32_t scale = 100000000;
    for (++at; at < t.size() && t[at] >= '0' && t[at] <= '9'; ++at) {
      nsec += static_cast<uint32_t>(t[at] - '0') * scale;
      scale /= 10;
    }
  }
  int64_t zone = 0;
  if (at < t.size() && (t[at] == 'Z' || t[at] == 'z')) {
    ++at;
  } else if (at + 6 == t.size() && (t[at] == '+' || t[at] == '-') && t[at + 3] == ':') {
    int h = num(at + 1, 2), m = num(at + 4, 2);
    if (h < 0 || m < 0) return std::nullopt;
    zone = (t[at] == '+' ? 1 : -1) * (h * 3600 + m * 60);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != t.size()) return std::nullopt;
  return std::make_pair(static_cast<int64_t>(timegm(&tm)) - zone, nsec);
}

}  // namespace regfs::cache

#include "cache/tar_reader.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>

#include "registry/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kBlock = 512;
constexpr size_t kBufferSize = 64 * 1024;
// Go's archive/tar refuses PAX and GNU long name headers larger than this.
constexpr uint64_t kMaxExtensionSize = 1 << 20;
constexpr std::string_view kXattrPrefix = "SCHILY.xattr.";

// Offsets and lengths of the ustar header fields.
struct Field {
  size_t offset;
  size_t size;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12},
    kMtime{136, 12}, kChecksum{148, 8}, kLinkName{157, 100}, kMagic{257, 6}, kVersion{263, 2},
    kDevMajor{329, 8}, kDevMinor{337, 8}, kPrefix{345, 155};
constexpr size_t kTypeFlag = 156;

Error bad(const std::string& why) { return Error(ErrorKind::kInvalid, "Cannot read tar: " + why); }

uint64_t padded(uint64_t size) { return (size + kBlock - 1) / kBlock * kBlock; }

std::string_view field(const char* block, Field f) { return {block + f.offset, f.size}; }

// A NUL-terminated string field.
std::string text(const char* block, Field f) {
  auto s = field(block, f);
  return std::string(s.substr(0, s.find('\0')));
}

// A numeric field: octal (space or NUL padded), or GNU base-256 when the
// first byte has its high bit set. Empty is 0.
int64_t number(const char* block, Field f, const char* name) {
  auto s = field(block, f);
  auto first = static_cast<unsigned char>(s[0]);
  if (first & 0x80) {
    bool negative = first & 0x40;
    uint64_t value = first & 0x3f;
    if (negative) value = ~value & 0x3f;
    for (size_t i = 1; i < s.size(); ++i) {
      auto byte = static_cast<unsigned char>(s[i]);
      if (negative) byte = static_cast<unsigned char>(~byte);
      if (value >> 55) throw bad(std::string(name) + " field out of range");
      value = value << 8 | byte;
    }
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw bad(std::string(name) + " field out of range");
    }
    return negative ? -static_cast<int64_t>(value) - 1 : static_cast<int64_t>(value);
  }
  size_t b = s.find_first_not_of(std::string_view(" \0", 2));
  if (b == std::string_view::npos) return 0;
  size_t e = s.find_last_not_of(std::string_view(" \0", 2));
  s = s.substr(b, e - b + 1);
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value, 8);
  if (ec != std::errc() || ptr != s.data() + s.size() ||
      value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw bad("malformed " + std::string(name) + " field");
  }
  return static_cast<int64_t>(value);
}

bool is_zero_block(const char* block) {
  return std::all_of(block, block + kBlock, [](char c) { return c == 0; });
}

// The checksum counts the checksum field as spaces; old tars summed signed bytes.
bool checksum_ok(const char* block) {
  int64_t stored = number(block, kChecksum, "checksum");
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    bool in_field = i >= kChecksum.offset && i < kChecksum.offset + kChecksum.size;
    char c = in_field ? ' ' : block[i];
    unsigned_sum += static_cast<unsigned char>(c);
    signed_sum += static_cast<signed char>(c);
  }
  return stored == unsigned_sum || stored == signed_sum;
}

int64_t parse_decimal(std::string_view s, const char* what) {
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) {
    throw bad(std::string("malformed PAX ") + what);
  }
  return value;
}

// "sec[.frac]" with an optional sign, as PAX writes times.
std::pair<int64_t, uint32_t> parse_pax_time(std::string_view s) {
  auto dot = s.find('.');
  int64_t sec = parse_decimal(s.substr(0, dot), "mtime");
  uint32_t nsec = 0;
  if (dot != std::string_view::npos) {
    auto frac = s.substr(dot + 1);
    if (frac.empty() || frac.find_first_not_of("0123456789") != std::string_view::npos) {
      throw bad("malformed PAX mtime");
    }
    std::string digits(frac.substr(0, 9));
    digits.resize(9, '0');
    nsec = static_cast<uint32_t>(std::stoul(digits));
    bool negative = !s.empty() && s[0] == '-';
    if (negative && nsec != 0) {  // -1.25 is 2 seconds before, plus 0.75
      sec -= 1;
      nsec = 1000000000 - nsec;
    }
  }
  return {sec, nsec};
}

// PAX records: "<length> <key>=<value>\n", the length counting the whole record.
std::map<std::string, std::string> parse_pax(std::string_view data) {
  std::map<std::string, std::string> records;
  while (!data.empty()) {
    auto space = data.find(' ');
    if (space == std::string_view::npos) throw bad("malformed PAX record");
    int64_t length = parse_decimal(data.substr(0, space), "record length");
    if (length <= static_cast<int64_t>(space) + 1 || static_cast<uint64_t>(length) > data.size() ||
        data[static_cast<size_t>(length) - 1] != '\n') {
      throw bad("malformed PAX record");
    }
    auto record = data.substr(space + 1, static_cast<size_t>(length) - space - 2);
    data.remove_prefix(static_cast<size_t>(length));
    auto eq = record.find('=');
    if (eq == std::string_view::npos || eq == 0) throw bad("malformed PAX record");
    std::string key(record.substr(0, eq));
    std::string value(record.substr(eq + 1));
    bool textual = key == "path" || key == "linkpath" || key == "uname" || key == "gname";
    if (textual && value.find('\0') != std::string::npos) throw bad("NUL in PAX " + key);
    records[key] = std::move(value);
  }
  return records;
}

uint32_t id_value(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<uint32_t>::max()) {
    throw bad(std::string(what) + " out of range");
  }
  return static_cast<uint32_t>(v);
}

void apply_pax(TarEntry& entry, int64_t& size, const std::map<std::string, std::string>& pax) {
  for (const auto& [key, value] : pax) {
    if (key == "path") {
      entry.path = value;
    } else if (key == "linkpath") {
      entry.link = value;
    } else if (key == "size") {
      size = parse_decimal(value, "size");
    } else if (key == "uid") {
      entry.uid = id_value(parse_decimal(value, "uid"), "uid");
    } else if (key == "gid") {
      entry.gid = id_value(parse_decimal(value, "gid"), "gid");
    } else if (key == "mtime") {
      std::tie(entry.mtime, entry.mtime_nsec) = parse_pax_time(value);
    } else if (key.compare(0, kXattrPrefix.size(), kXattrPrefix) == 0) {
      entry.xattrs.emplace_back(key.substr(kXattrPrefix.size()), value);
    }
  }
}

}  // namespace

TarReader::TarReader(Source source) : source_(std::move(source)), buffer_(kBufferSize) {}

bool TarReader::fill(size_t size) {
  if (end_ - begin_ >= size) return true;
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (end_ < size && !done_) {
    size_t n = source_(buffer_.data() + end_, buffer_.size() - end_);
    if (n == 0) done_ = true;
    end_ += n;
  }
  return end_ - begin_ >= size;
}

void TarReader::skip(uint64_t size) {
  while (size > 0) {
    if (begin_ == end_ && !fill(1)) throw bad("archive truncated in an entry's data");
    auto n = static_cast<size_t>(std::min<uint64_t>(size, end_ - begin_));
    begin_ += n;
    position_ += n;
    size -= n;
  }
}

std::string TarReader::read_extension(uint64_t size, const char* what) {
  if (size > kMaxExtensionSize) throw bad(std::string(what) + " header larger than 1 MiB");
  std::string data;
  data.reserve(static_cast<size_t>(size));
  while (data.size() < size) {
    if (begin_ == end_ && !fill(1)) throw bad(std::string("archive truncated in a ") + what);
    size_t n = std::min<size_t>(static_cast<size_t>(size) - data.size(), end_ - begin_);
    data.append(buffer_.data() + begin_, n);
    begin_ += n;
    position_ += n;
  }
  skip(padded(size) - size);
  return data;
}

// Points `block` at the next header; false at the end of the archive.
bool TarReader::read_header(const char** block) {
  if (!fill(kBlock)) {
    if (end_ == begin_) return false;
    throw bad("archive truncated in a header");
  }
  const char* b = buffer_.data() + begin_;
  if (is_zero_block(b)) {
    begin_ += kBlock;
    position_ += kBlock;
    if (!fill(kBlock)) {
      if (end_ == begin_) return false;
      throw bad("archive truncated after a zero block");
    }
    if (is_zero_block(buffer_.data() + begin_)) {
      begin_ += kBlock;
      position_ += kBlock;
      return false;
    }
    throw bad("a zero block followed by a header");
  }
  if (!checksum_ok(b)) throw bad("header checksum mismatch at offset " + std::to_string(position_));
  *block = b;
  return true;
}

std::optional<TarEntry> TarReader::next() {
  std::map<std::string, std::string> pax;
  std::optional<std::string> long_name, long_link;
  for (;;) {
    skip(pending_);
    pending_ = 0;
    const char* b = nullptr;
    if (!read_header(&b)) return std::nullopt;
    char type = b[kTypeFlag];
    int64_t size = number(b, kSize, "size");
    if (size < 0) throw bad("negative size");
    auto magic = field(b, kMagic);
    bool ustar = magic == std::string_view("ustar\0", 6);
    bool gnu = magic == "ustar " && field(b, kVersion) == std::string_view(" \0", 2);

    TarEntry entry;
    entry.path = text(b, kName);
    if (ustar) {
      auto prefix = text(b, kPrefix);
      if (!prefix.empty()) entry.path = prefix + "/" + entry.path;
    }
    entry.link = text(b, kLinkName);
    entry.mode = static_cast<uint32_t>(number(b, kMode, "mode") & 07777);
    entry.uid = id_value(number(b, kUid, "uid"), "uid");
    entry.gid = id_value(number(b, kGid, "gid"), "gid");
    entry.mtime = number(b, kMtime, "mtime");
    if (ustar || gnu) {
      entry.dev_major = static_cast<uint32_t>(number(b, kDevMajor, "devmajor"));
      entry.dev_minor = static_cast<uint32_t>(number(b, kDevMinor, "devminor"));
    }
    begin_ += kBlock;
    position_ += kBlock;

    switch (type) {
      case 'x':
        pax = parse_pax(read_extension(static_cast<uint64_t>(size), "PAX"));
        continue;
      case 'L':
      case 'K': {
        auto name = read_extension(static_cast<uint64_t>(size), "GNU long name");
        name.resize(std::min(name.size(), name.find('\0')));
        (type == 'L' ? long_name : long_link) = std::move(name);
        continue;
      }
      default:
        break;
    }
    apply_pax(entry, size, pax);
    if (size < 0) throw bad("negative size");
    if (long_name) entry.path = *long_name;
    if (long_link) entry.link = *long_link;
    std::sort(entry.xattrs.begin(), entry.xattrs.end());
    bool header_only = true;
    switch (type) {
      case '0':
      case '7':
        entry.type = EntryType::kFile;
        header_only = false;
        break;
      case '\0':
        header_only = !entry.path.empty() && entry.path.back() == '/';
        entry.type = header_only ? EntryType::kDir : EntryType::kFile;
        break;
      case '1':
        entry.type = EntryType::kHardlink;
        break;
      case '2':
        entry.type = EntryType::kSymlink;
        break;
      case '3':
        entry.type = EntryType::kChar;
        break;
      case '4':
        entry.type = EntryType::kBlock;
        break;
      case '5':
        entry.type = EntryType::kDir;
        break;
      case '6':
        entry.type = EntryType::kFifo;
        break;
      default:  // 'g', GNU sparse 'S', volume 'V', vendor types: not shown
        pending_ = padded(static_cast<uint64_t>(size));
        pax.clear();
        long_name.reset();
        long_link.reset();
        continue;
    }
    if (header_only) size = 0;
    if (static_cast<uint64_t>(size) > std::numeric_limits<uint64_t>::max() / 2 - position_) {
      throw bad("entry size out of range");
    }
    entry.size = static_cast<uint64_t>(size);
    entry.offset = position_;
    pending_ = padded(entry.size);
    return entry;
  }
}

std::string clean_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (auto part : parts) {
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

}  // namespace regfs::cache

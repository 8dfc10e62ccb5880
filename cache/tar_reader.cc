#include "cache/tar_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <locale.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

static_assert(std::is_same_v<la_ssize_t, long>, "read_callback's return type");

namespace {

constexpr size_t kBufferSize = 64 * 1024;

Error bad(const std::string& why) { return Error(ErrorKind::kInvalid, "Cannot read tar: " + why); }

// Makes libarchive's "current locale" UTF-8 on this thread while it lives, so
// that PAX names (UTF-8) are taken as they are; the process stays in "C".
class Utf8Locale {
 public:
  Utf8Locale() {
    static locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
    if (utf8) previous_ = uselocale(utf8);
  }
  ~Utf8Locale() {
    if (previous_) uselocale(previous_);
  }
  Utf8Locale(const Utf8Locale&) = delete;
  Utf8Locale& operator=(const Utf8Locale&) = delete;

 private:
  locale_t previous_ = static_cast<locale_t>(0);
};

std::string error_of(archive* a) {
  const char* message = archive_error_string(a);
  return message ? message : "unknown libarchive error";
}

// libarchive's warning for a name it could not convert from UTF-8; it then
// keeps the name's bytes as they are.
bool is_conversion_warning(archive* a) {
  const char* message = archive_error_string(a);
  return message && std::strstr(message, "can't be converted from") != nullptr;
}

std::optional<uint32_t> id_of(la_int64_t value) {
  if (value < 0 || value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
  return static_cast<uint32_t>(value);
}

}  // namespace

void TarReader::ArchiveFree::operator()(archive* a) const { archive_read_free(a); }

TarReader::TarReader(Source source) : source_(std::move(source)) {
  buffers_[0].resize(kBufferSize);
  buffers_[1].resize(kBufferSize);
}

TarReader::~TarReader() = default;

long TarReader::read_callback(archive* a, void* self, const void** buffer) {
  auto* reader = static_cast<TarReader*>(self);
  // libarchive is done with the buffer it had: fill the other one.
  int next = reader->current_ ^ 1;
  auto& out = reader->buffers_[next];
  *buffer = out.data();
  if (reader->source_done_) return 0;
  try {
    size_t n = reader->source_(out.data(), out.size());
    if (n == 0) reader->source_done_ = true;
    reader->current_ = next;
    reader->buffer_start_[next] = reader->pulled_;
    reader->buffer_size_[next] = n;
    reader->pulled_ += n;
    return static_cast<long>(n);
  } catch (...) {  // never through libarchive's C frames; rethrown by fail()
    reader->source_error_ = std::current_exception();
    reader->source_done_ = true;
    archive_set_error(a, EIO, "the layer's stream failed");
    return -1;
  }
}

void TarReader::fail(const char* what) {
  if (source_error_) std::rethrow_exception(source_error_);
  throw bad(std::string(what) + ": " + error_of(archive_.get()));
}

void TarReader::open() {
  opened_ = true;
  archive_.reset(archive_read_new());
  if (!archive_) throw Error(ErrorKind::kIo, "Cannot read tar: out of memory");
  archive_read_support_format_tar(archive_.get());
  archive_read_support_format_empty(archive_.get());  // a zero-byte layer
  if (archive_read_open(archive_.get(), this, nullptr, &TarReader::read_callback, nullptr) !=
      ARCHIVE_OK) {
    fail("not a tar archive");
  }
}

std::optional<TarEntry> TarReader::next() {
  if (done_) return std::nullopt;
  Utf8Locale locale;
  if (!opened_) open();
  for (;;) {
    if (entry_pending_ && archive_read_data_skip(archive_.get()) != ARCHIVE_OK) {
      fail("bad entry data");
    }
    entry_pending_ = false;
    auto header = static_cast<uint64_t>(archive_filter_bytes(archive_.get(), 0));
    archive_entry* ae = nullptr;
    int r = archive_read_next_header(archive_.get(), &ae);
    if (source_error_) std::rethrow_exception(source_error_);
    if (r == ARCHIVE_EOF) {
      auto end = static_cast<uint64_t>(archive_filter_bytes(archive_.get(), 0));
      if (end > header) check_second_zero_block(header + 512);  // ended at a zero block
      done_ = true;
      return std::nullopt;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) fail("bad header");
    const char* name = archive_entry_pathname(ae);
    // A PAX name that is not UTF-8 (Go's archive/tar writes names raw)
    // is kept as its bytes, as Go reads it: only the warning is dropped.
    if (r == ARCHIVE_WARN && is_conversion_warning(archive_.get())) r = ARCHIVE_OK;
    if (r == ARCHIVE_WARN) {
      LOG(kWarning) << "Cannot read tar entry " << (name ? name : "?") << ": "
                    << error_of(archive_.get()) << "; skipped";
      continue;
    }
    entry_pending_ = true;
    if (auto entry = convert(ae)) return entry;
  }
}

void TarReader::check_second_zero_block(uint64_t at) {
  auto check = [&](int b) {
    uint64_t from = std::max(at, buffer_start_[b]);
    uint64_t to = std::min(at + 512, buffer_start_[b] + buffer_size_[b]);
    for (uint64_t i = from; i < to; ++i) {
      if (buffers_[b][static_cast<size_t>(i - buffer_start_[b])] != 0) {
        throw bad("a lone zero block followed by a header at offset " + std::to_string(at - 512));
      }
    }
  };
  check(0);
  check(1);
  // libarchive stops at the first zero block: pull what follows it (the
  // source still hashes and keeps every byte) until the block is seen.
  while (pulled_ < at + 512 && !source_done_) {
    int next = current_ ^ 1;
    size_t n = source_(buffers_[next].data(), buffers_[next].size());
    if (n == 0) source_done_ = true;
    current_ = next;
    buffer_start_[next] = pulled_;
    buffer_size_[next] = n;
    pulled_ += n;
    check(next);
  }
}

std::optional<TarEntry> TarReader::convert(archive_entry* ae) {
  TarEntry entry;
  const char* name = archive_entry_pathname(ae);
  entry.path = name ? name : "";
  auto skip = [&](const std::string& why) {
    LOG(kWarning) << "Cannot show tar entry " << entry.path << ": " << why << "; skipped";
    return std::nullopt;
  };
  auto uid = id_of(archive_entry_uid(ae));
  auto gid = id_of(archive_entry_gid(ae));
  if (!uid || !gid) return skip("its uid or gid is not a 32-bit id");
  entry.uid = *uid;
  entry.gid = *gid;
  entry.mode = archive_entry_perm(ae) & 07777;
  if (archive_entry_mtime_is_set(ae)) {
    entry.mtime = archive_entry_mtime(ae);
    entry.mtime_nsec = static_cast<uint32_t>(archive_entry_mtime_nsec(ae));
    // libarchive reads PAX "-1.25" as -1 s and 0.25 s (sign and magnitude);
    // it is 0.75 s after -2 s.
    if (entry.mtime < 0 && entry.mtime_nsec > 0) {
      entry.mtime -= 1;
      entry.mtime_nsec = 1000000000 - entry.mtime_nsec;
    }
  }
  const char* hardlink = archive_entry_hardlink(ae);
  if (hardlink) {
    entry.type = EntryType::kHardlink;  // its data, if any (PAX allows it), is its target's
    entry.link = hardlink;
  } else {
    switch (archive_entry_filetype(ae)) {
      case AE_IFREG:
        entry.type = EntryType::kFile;
        break;
      case AE_IFDIR:  // 'D' (GNU dumpdir) too: its data, the name list, is not shown
        entry.type = EntryType::kDir;
        break;
      case AE_IFLNK: {
        entry.type = EntryType::kSymlink;
        const char* target = archive_entry_symlink(ae);
        entry.link = target ? target : "";
        break;
      }
      case AE_IFCHR:
        entry.type = EntryType::kChar;
        break;
      case AE_IFBLK:
        entry.type = EntryType::kBlock;
        break;
      case AE_IFIFO:
        entry.type = EntryType::kFifo;
        break;
      default:
        return skip("no file type regfs can show");
    }
  }
  if (entry.type == EntryType::kChar || entry.type == EntryType::kBlock) {
    entry.dev_major = static_cast<uint32_t>(archive_entry_rdevmajor(ae));
    entry.dev_minor = static_cast<uint32_t>(archive_entry_rdevminor(ae));
  }
  archive_entry_xattr_reset(ae);
  const char* xname = nullptr;
  const void* xvalue = nullptr;
  size_t xsize = 0;
  while (archive_entry_xattr_next(ae, &xname, &xvalue, &xsize) == ARCHIVE_OK) {
    entry.xattrs.emplace_back(xname, std::string(static_cast<const char*>(xvalue), xsize));
  }
  std::stable_sort(entry.xattrs.begin(), entry.xattrs.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // bsdtar writes each xattr twice (LIBARCHIVE.xattr and SCHILY.xattr):
  // one name, the last value read, as a file system holds it.
  for (size_t i = 0; i + 1 < entry.xattrs.size();) {
    if (entry.xattrs[i].first == entry.xattrs[i + 1].first) {
      entry.xattrs.erase(entry.xattrs.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  if (entry.type == EntryType::kFile) {
    la_int64_t size = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : 0;
    if (size < 0) return skip("negative size");
    entry.size = static_cast<uint64_t>(size);
    if (!locate_data(entry)) return skip("its sparse map does not fit its size");
  }
  return entry;
}

bool TarReader::locate_data(TarEntry& entry) {
  archive* a = archive_.get();
  entry.offset = static_cast<uint64_t>(archive_filter_bytes(a, 0));
  std::vector<DataSegment> segments;
  bool fits = true;
  for (;;) {
    const void* block = nullptr;
    size_t length = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(a, &block, &length, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) fail("bad entry data");
    if (length == 0) continue;
    // Until the next call, the block is not consumed: the filter's position
    // is where it starts in the stream.
    auto data = static_cast<uint64_t>(archive_filter_bytes(a, 0));
    auto at = static_cast<uint64_t>(offset);
    uint64_t end = segments.empty() ? 0 : segments.back().offset + segments.back().length;
    if (offset < 0 || at < end || length > entry.size || at > entry.size - length) {
      fits = false;  // read on to stay in step with the stream
      continue;
    }
    if (!segments.empty() && at == end && segments.back().data + segments.back().length == data) {
      segments.back().length += length;
    } else {
      segments.push_back(DataSegment{at, length, data});
    }
  }
  if (!fits) return false;
  if (segments.size() == 1 && segments[0].offset == 0 && segments[0].length == entry.size) {
    entry.offset = segments[0].data;  // stored whole: one pread
  } else if (!segments.empty() || entry.size > 0) {
    entry.sparse = true;
    entry.segments = std::move(segments);
  }
  return true;
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

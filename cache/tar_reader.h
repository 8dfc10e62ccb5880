// A streaming reader of the tar archives container layers are made of, read
// the way Go's archive/tar reads them (what umoci, containerd and docker use):
// POSIX ustar with its name prefix, PAX extended headers (path, linkpath,
// size, uid, gid, mtime with nanoseconds, SCHILY.xattr.*), GNU long names and
// links (L/K) and GNU base-256 numbers. Header-only types (links, devices,
// fifos, directories) have no data whatever their size field says.
//
// It pulls bytes from a Source and reports, for each entry, where its data
// starts in the stream: a caller that keeps the stream (the uncompressed
// layer) reads any file later with one pread. It never reads entry data
// itself, only skips it, so it needs a buffer of a few blocks whatever the
// layer's size. Hostile input never crashes it: a bad checksum, a malformed
// number or PAX record, an extension header over 1 MiB or a truncated archive
// throws Error(kInvalid).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regfs::cache {

enum class EntryType : uint8_t { kFile, kDir, kSymlink, kHardlink, kChar, kBlock, kFifo };

struct TarEntry {
  std::string path;  // as in the archive (TarReader); cleaned in a LayerIndex
  EntryType type = EntryType::kFile;
  uint32_t mode = 0;  // permission bits with setuid, setgid and sticky (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;  // seconds since the epoch
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;    // data bytes: regular files only, 0 for other types
  uint64_t offset = 0;  // where the data starts in the (uncompressed) stream
  std::string link;     // symlink target, or hardlink target
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name

  bool operator==(const TarEntry&) const = default;
};

class TarReader {
 public:
  // Fills up to `size` bytes and returns how many; 0 only at the end.
  using Source = std::function<size_t(char* data, size_t size)>;

  explicit TarReader(Source source);

  // The next entry, or nullopt at the end of the archive (two zero blocks,
  // one zero block and the end of the stream, or the end of the stream at a
  // header boundary). Entries regfs cannot show (PAX globals, GNU sparse
  // files, volume labels, unknown types) are skipped. Throws Error(kInvalid).
  std::optional<TarEntry> next();
  // Bytes of the stream consumed so far.
  uint64_t position() const { return position_; }

 private:
  bool fill(size_t size);  // buffers `size` bytes; false at the end of the stream
  void skip(uint64_t size);
  std::string read_extension(uint64_t size, const char* what);
  bool read_header(const char** block);

  Source source_;
  std::vector<char> buffer_;
  size_t begin_ = 0;  // buffered bytes are buffer_[begin_, end_)
  size_t end_ = 0;
  uint64_t position_ = 0;  // stream offset of buffer_[begin_]
  uint64_t pending_ = 0;   // data and padding of the last entry, not skipped yet
  bool done_ = false;
};

// umoci's CleanPath: `path` made relative to the root, without "." and ".."
// components, so that it cannot leave the root ("../x" and "/x" are "x",
// "a/../../b" is "b"); the root itself is "".
std::string clean_path(std::string_view path);

}  // namespace regfs::cache

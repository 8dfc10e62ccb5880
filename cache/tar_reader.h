// A streaming reader of the tar archives container layers are made of. The
// format itself is libarchive's (ustar, v7, GNU long names and links, base-256
// numbers, PAX records, every GNU and PAX sparse version, GNU dumpdir `D` as a
// directory, volume labels `V` ignored, unknown typeflags as regular files as
// POSIX says); this file only adds what regfs needs on top: for each entry,
// where its data lies in the uncompressed stream, so that a caller that keeps
// the stream reads any file later with a pread (a sparse file: one pread per
// data segment, holes are zeros).
//
// It pulls bytes from a Source and hands them to libarchive as they come, so
// it needs a buffer of a few blocks whatever the layer's size. Hostile input
// never crashes it: anything libarchive calls fatal (a bad checksum, a
// truncated archive, an extension header over 1 MiB) and a lone zero block
// followed by a header (entries hidden from readers that stop there; Go's
// archive/tar, so umoci and containerd, refuses it too) throw Error(kInvalid);
// an entry it reads with a warning (a malformed PAX record, a sparse map that
// does not fit, an id over 32 bits) is skipped with a log line.
//
// Names are taken as the archive holds them: PAX values are UTF-8 (libarchive
// runs in a UTF-8 locale on the reading thread, so they are not mangled into
// the process's "C" locale) or, when they are not, their bytes as Go's
// archive/tar writes and reads them; ustar and GNU names are raw bytes. PAX global
// headers (`g`) are read and ignored, as Go's archive/tar (umoci, containerd,
// docker) does.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct archive;
struct archive_entry;

namespace regfs::cache {

enum class EntryType : uint8_t { kFile, kDir, kSymlink, kHardlink, kChar, kBlock, kFifo };

// A run of a sparse file's data: `length` bytes at `offset` in the file are
// the stream's bytes at `data`. What no segment covers reads as zeros.
struct DataSegment {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t data = 0;

  bool operator==(const DataSegment&) const = default;
};

struct TarEntry {
  std::string path;  // as in the archive (TarReader); cleaned in a LayerIndex
  EntryType type = EntryType::kFile;
  uint32_t mode = 0;  // permission bits with setuid, setgid and sticky (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;  // seconds since the epoch
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;    // the file's size (a sparse file's real size); 0 for other types
  uint64_t offset = 0;  // where the data starts in the (uncompressed) stream
  std::string link;     // symlink target, or hardlink target
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name
  // A sparse file's data is `segments` (in file order, holes between them),
  // not the `size` bytes at `offset`.
  bool sparse = false;
  std::vector<DataSegment> segments;

  bool operator==(const TarEntry&) const = default;
};

class TarReader {
 public:
  // Fills up to `size` bytes and returns how many; 0 only at the end. What
  // it throws is rethrown by next().
  using Source = std::function<size_t(char* data, size_t size)>;

  explicit TarReader(Source source);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // The next entry, or nullopt at the end of the archive (its zero blocks,
  // or the end of the stream at a header boundary). Throws Error(kInvalid).
  std::optional<TarEntry> next();

 private:
  struct ArchiveFree {
    void operator()(archive* a) const;
  };
  static long read_callback(archive* a, void* self, const void** buffer);
  void open();
  [[noreturn]] void fail(const char* what);
  // The entry libarchive read, or nullopt (logged) if regfs cannot show it.
  std::optional<TarEntry> convert(archive_entry* ae);
  // Reads `entry`'s data blocks to learn where they lie in the stream.
  bool locate_data(TarEntry& entry);

  // Throws unless the 512 bytes at stream offset `at`, after the zero block
  // libarchive ended at, are zeros or past the end of the stream.
  void check_second_zero_block(uint64_t at);

  Source source_;
  // The source's bytes alternate between two buffers: libarchive reads the
  // last one filled, and the one before still holds what preceded it (the
  // end of the archive is checked in them).
  std::vector<char> buffers_[2];
  uint64_t buffer_start_[2] = {0, 0};  // stream offset of each buffer's first byte
  size_t buffer_size_[2] = {0, 0};
  int current_ = 0;
  uint64_t pulled_ = 0;         // bytes taken from source_
  bool entry_pending_ = false;  // an entry was returned; its data may be unread
  bool done_ = false;           // the end of the archive was reached
  std::unique_ptr<archive, ArchiveFree> archive_;
  std::exception_ptr source_error_;  // thrown by source_ inside libarchive
  bool source_done_ = false;
  bool opened_ = false;
};

// umoci's CleanPath: `path` made relative to the root, without "." and ".."
// components, so that it cannot leave the root ("../x" and "/x" are "x",
// "a/../../b" is "b"); the root itself is "".
std::string clean_path(std::string_view path);

}  // namespace regfs::cache

// The bytes of a layer's files, wherever they are kept: the one read path of
// rootfs/ (FUSE reads, copy-up, staged reads of the base). LayerData is the
// interface: "bytes [offset, offset + size) of this file of the layer". A
// layer kept as a tar (an uncompressed blob, or a decompressed copy) reads
// them with pread; a compressed blob with access points (cache/decompress.h)
// decompresses from the nearest point at or before them, keeping the last
// few decompressed spans so reads in order decompress each span once. A
// layer fetched lazily by chunks can implement read_entry itself.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cache/decompress.h"
#include "cache/tar_reader.h"
#include "cache/unique_fd.h"

namespace regfs::cache {

// A file's bytes as they lie in a local file: spliceable.
struct FileSpan {
  int fd = -1;
  uint64_t offset = 0;  // of the entry's first byte in fd
};

class LayerData {
 public:
  virtual ~LayerData() = default;
  // Reads up to `size` bytes of regular file `entry` (of this layer) at
  // `offset` into `out`, holes of a sparse file as zeros; returns how many
  // (fewer only at the file's end). Throws Error(kIo), or kInvalid if the
  // stored data does not decompress.
  virtual size_t read_entry(const TarEntry& entry, uint64_t offset, char* out,
                            size_t size) const = 0;
  // Where a non-sparse entry's bytes lie as they are in a local file open for
  // as long as this object lives; nullopt if they do not (compressed).
  virtual std::optional<FileSpan> file_span(const TarEntry&) const { return std::nullopt; }
};

// A layer whose uncompressed tar can be read at any offset.
class TarLayerData : public LayerData {
 public:
  size_t read_entry(const TarEntry& entry, uint64_t offset, char* out, size_t size) const override;

 protected:
  // Reads exactly `size` bytes of the tar at `offset`; throws as read_entry.
  virtual void read_tar(uint64_t offset, char* out, size_t size) const = 0;
};

// A tar in a local file (an uncompressed layer blob or a decompressed copy),
// open as `fd`; `name` for errors.
class TarFileData : public TarLayerData {
 public:
  TarFileData(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  std::optional<FileSpan> file_span(const TarEntry& entry) const override;

 protected:
  void read_tar(uint64_t offset, char* out, size_t size) const override;

 private:
  UniqueFd fd_;
  std::string name_;
};

// A compressed blob open as `fd` with its access points (the first at 0, in
// order) and its uncompressed size. Thread-safe.
class SeekableData : public TarLayerData {
 public:
  SeekableData(UniqueFd fd, std::string name, Compression compression,
               std::vector<AccessPoint> points, uint64_t tar_size);

 protected:
  void read_tar(uint64_t offset, char* out, size_t size) const override;

 private:
  using Span = std::shared_ptr<const std::string>;
  // The uncompressed bytes from points_[i] to the next point (or the end).
  Span span(size_t i) const;

  UniqueFd fd_;
  std::string name_;
  Compression compression_;
  std::vector<AccessPoint> points_;
  uint64_t tar_size_;
  mutable std::mutex mutex_;                          // guards cache_
  mutable std::list<std::pair<size_t, Span>> cache_;  // front: most recent
};

// The same read for a tar open as `fd` (a test's, or a one-off).
size_t read_entry_data(int fd, const TarEntry& entry, uint64_t offset, char* out, size_t size);

}  // namespace regfs::cache

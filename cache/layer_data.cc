#include "cache/layer_data.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

// Decompressed spans kept per layer: a reader in order needs one, a few
// readers at once one each.
constexpr size_t kCachedSpans = 4;

void pread_exactly(int fd, const std::string& name, char* out, size_t size, uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pread(fd, out, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw Error(ErrorKind::kIo, "Cannot read layer " + name + ": " +
                                      (n < 0 ? std::strerror(errno) : "shorter than its index"));
    }
    out += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// read_entry over `read_tar`: a plain file is one range of the tar, a sparse
// one a range per data segment it covers.
template <typename ReadTar>
size_t read_entry_with(const TarEntry& entry, uint64_t offset, char* out, size_t size,
                       ReadTar&& read_tar) {
  if (offset >= entry.size) return 0;
  size = static_cast<size_t>(std::min<uint64_t>(size, entry.size - offset));
  if (!entry.sparse) {
    read_tar(entry.offset + offset, out, size);
    return size;
  }
  std::memset(out, 0, size);  // holes
  uint64_t end = offset + size;
  auto first =
      std::upper_bound(entry.segments.begin(), entry.segments.end(), offset,
                       [](uint64_t at, const DataSegment& s) { return at < s.offset + s.length; });
  for (auto it = first; it != entry.segments.end() && it->offset < end; ++it) {
    uint64_t from = std::max(offset, it->offset);
    uint64_t to = std::min(end, it->offset + it->length);
    read_tar(it->data + (from - it->offset), out + (from - offset), static_cast<size_t>(to - from));
  }
  return size;
}

}  // namespace

size_t TarLayerData::read_entry(const TarEntry& entry, uint64_t offset, char* out,
                                size_t size) const {
  return read_entry_with(entry, offset, out, size,
                         [this](uint64_t at, char* to, size_t n) { read_tar(at, to, n); });
}

std::optional<FileSpan> TarFileData::file_span(const TarEntry& entry) const {
  if (entry.sparse) return std::nullopt;
  return FileSpan{fd_.get(), entry.offset};
}

void TarFileData::read_tar(uint64_t offset, char* out, size_t size) const {
  pread_exactly(fd_.get(), name_, out, size, offset);
}

SeekableData::SeekableData(UniqueFd fd, std::string name, Compression compression,
                           std::vector<AccessPoint> points, uint64_t tar_size)
    : fd_(std::move(fd)),
      name_(std::move(name)),
      compression_(compression),
      points_(std::move(points)),
      tar_size_(tar_size) {
  if (points_.empty() || points_.front().out != 0) {
    throw Error(ErrorKind::kInvalid, "Cannot read layer " + name_ + ": no access point at 0");
  }
}

SeekableData::Span SeekableData::span(size_t i) const {
  {
    std::lock_guard lock(mutex_);
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      if (it->first == i) {
        cache_.splice(cache_.begin(), cache_, it);
        return cache_.front().second;
      }
    }
  }
  // Decompressed outside the lock: readers of other spans go on meanwhile.
  uint64_t end = i + 1 < points_.size() ? points_[i + 1].out : tar_size_;
  auto bytes = std::make_shared<std::string>(end - points_[i].out, '\0');
  auto input = resume_decompressor(fd_.get(), name_, compression_, points_[i]);
  for (size_t done = 0; done < bytes->size();) {
    size_t n = input->read(bytes->data() + done, bytes->size() - done);
    if (n == 0) {
      throw Error(ErrorKind::kInvalid,
                  "Cannot decompress layer " + name_ + ": it ends before its index says");
    }
    done += n;
  }
  std::lock_guard lock(mutex_);
  cache_.remove_if([i](const auto& cached) { return cached.first == i; });  // a racing reader's
  cache_.emplace_front(i, bytes);
  if (cache_.size() > kCachedSpans) cache_.pop_back();
  return bytes;
}

void SeekableData::read_tar(uint64_t offset, char* out, size_t size) const {
  if (offset > tar_size_ || size > tar_size_ - offset) {
    throw Error(ErrorKind::kIo, "Cannot read layer " + name_ + ": past its end");
  }
  while (size > 0) {
    auto next = std::upper_bound(points_.begin(), points_.end(), offset,
                                 [](uint64_t at, const AccessPoint& p) { return at < p.out; });
    size_t i = static_cast<size_t>(next - points_.begin()) - 1;
    auto bytes = span(i);
    uint64_t within = offset - points_[i].out;
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, bytes->size() - within));
    std::memcpy(out, bytes->data() + within, n);
    out += n;
    size -= n;
    offset += n;
  }
}

size_t read_entry_data(int fd, const TarEntry& entry, uint64_t offset, char* out, size_t size) {
  return read_entry_with(entry, offset, out, size, [fd](uint64_t at, char* to, size_t n) {
    pread_exactly(fd, "tar", to, n, at);
  });
}

}  // namespace regfs::cache

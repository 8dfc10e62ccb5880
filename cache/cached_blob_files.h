// File helpers shared by CachedBlob's files (cache/cached_blob*.cc): OFD
// range locks, whole writes, and the per-thread buffer reads of the cache
// file go through. Not for other files.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "cache/temp_file.h"

namespace regfs::cache::blob_files {

// Takes (or, with F_UNLCK, drops) an OFD lock on [start, start+length);
// waits for a conflicting one. False on an error other than EINTR.
inline bool ofd_lock(int fd, short type, uint64_t start, uint64_t length) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = static_cast<off_t>(start);
  lock.l_len = static_cast<off_t>(length);
  while (::fcntl(fd, F_OFD_SETLKW, &lock) != 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

// Writes `size` bytes at `offset`; throws io_error(`what`) (kNoSpace, kIo).
inline void write_all(int fd, const char* data, size_t size, uint64_t offset,
                      const std::string& what) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw io_error(what, errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// A buffer for reading the local file, one per thread and kept: fresh
// memory for every chunk read would cost a page fault per page.
inline std::string& scratch() {
  thread_local std::string buffer(256 << 10, '\0');
  return buffer;
}

}  // namespace regfs::cache::blob_files

#include "cache/temp_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

Error io_error(const std::string& what, int err) {
  return Error(err == ENOSPC || err == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kIo,
               "Cannot " + what + ": " + std::strerror(err));
}

Error write_error(const std::filesystem::path& path, int err) {
  return io_error("write cache file " + path.string(), err);
}

void make_private_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw Error(ErrorKind::kIo,
                "Cannot create cache directory " + dir.string() + ": " + ec.message());
  }
  ::chmod(dir.c_str(), 0700);
}

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return std::to_string(::getpid()) + "." + std::to_string(counter++);
}

std::optional<std::string> read_small_file(const std::filesystem::path& path, size_t max_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  in.seekg(0, std::ios::end);
  auto size = static_cast<size_t>(in.tellg());
  if (size > max_size) return std::nullopt;
  std::string bytes(size, '\0');
  in.seekg(0);
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (!in) return std::nullopt;
  return bytes;
}

TempFile::TempFile(std::filesystem::path path) : path_(std::move(path)) {
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd_) throw write_error(path_, errno);
}

TempFile::TempFile(TempFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::move(other.fd_)) {
  other.path_.clear();
}

void TempFile::write(const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd_.get(), data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw write_error(path_, errno);
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void TempFile::commit(const std::filesystem::path& target) {
  if (::fsync(fd_.get()) != 0 || fd_.close() != 0) {
    int err = errno;
    Error error = write_error(path_, err);
    discard();
    throw error;
  }
  if (::rename(path_.c_str(), target.c_str()) != 0) {
    int err = errno;
    discard();
    throw write_error(target, err);
  }
  path_.clear();
}

void TempFile::discard() {
  fd_.reset();
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace regfs::cache

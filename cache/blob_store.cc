#include "cache/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "registry/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

void make_private_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw Error(ErrorKind::kIo,
                "Cannot create cache directory " + dir.string() + ": " + ec.message());
  }
  ::chmod(dir.c_str(), 0700);
}

Error write_error(const std::filesystem::path& path, int err) {
  return Error(err == ENOSPC || err == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kIo,
               "Cannot write cache file " + path.string() + ": " + std::strerror(err));
}

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return std::to_string(::getpid()) + "." + std::to_string(counter++);
}

}  // namespace

BlobStore::BlobStore(std::filesystem::path root) : root_(std::move(root)) {
  make_private_dir(root_);
  make_private_dir(root_ / "blobs" / "sha256");
  make_private_dir(root_ / "tmp");
}

std::filesystem::path BlobStore::path_of(std::string_view digest) const {
  if (!registry::is_valid_digest(digest)) {
    throw Error(ErrorKind::kInvalid, "Cannot use digest " + std::string(digest) + ": not sha256");
  }
  return root_ / "blobs" / "sha256" / std::string(registry::digest_hex(digest));
}

std::optional<std::filesystem::path> BlobStore::find(std::string_view digest) const {
  auto path = path_of(digest);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return path;
}

std::optional<std::string> BlobStore::read(std::string_view digest, size_t max_size) const {
  auto path = find(digest);
  if (!path) return std::nullopt;
  std::ifstream in(*path, std::ios::binary);
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

std::filesystem::path BlobStore::put(std::string_view digest, std::string_view bytes) {
  Writer writer = begin(digest, static_cast<int64_t>(bytes.size()));
  writer.append(bytes.data(), bytes.size());
  return writer.commit();
}

BlobStore::Writer BlobStore::begin(std::string_view digest, int64_t expected_size) const {
  path_of(digest);  // validates
  return Writer(*this, std::string(digest), expected_size);
}

BlobStore::Writer::Writer(const BlobStore& store, std::string digest, int64_t expected_size)
    : store_(&store), digest_(std::move(digest)), expected_size_(expected_size) {
  tmp_path_ =
      store.root_ / "tmp" / (std::string(registry::digest_hex(digest_)) + "." + unique_suffix());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd_ < 0) throw write_error(tmp_path_, errno);
}

BlobStore::Writer::Writer(Writer&& other) noexcept
    : store_(other.store_),
      digest_(std::move(other.digest_)),
      expected_size_(other.expected_size_),
      tmp_path_(std::move(other.tmp_path_)),
      fd_(other.fd_),
      written_(other.written_),
      hash_(std::move(other.hash_)) {
  other.fd_ = -1;
  other.tmp_path_.clear();
}

BlobStore::Writer::~Writer() { discard(); }

void BlobStore::Writer::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  tmp_path_.clear();
}

void BlobStore::Writer::append(const char* data, size_t size) {
  if (fd_ < 0) throw Error(ErrorKind::kIo, "Cannot write blob " + digest_ + ": writer closed");
  if (expected_size_ >= 0 && written_ + size > static_cast<uint64_t>(expected_size_)) {
    throw Error(ErrorKind::kIntegrity, "Cannot store blob " + digest_ +
                                           ": more bytes than its descriptor's size " +
                                           std::to_string(expected_size_));
  }
  hash_.update(data, size);
  while (size > 0) {
    ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw write_error(tmp_path_, errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
}

std::filesystem::path BlobStore::Writer::commit() {
  if (fd_ < 0) throw Error(ErrorKind::kIo, "Cannot commit blob " + digest_ + ": writer closed");
  if (expected_size_ >= 0 && written_ != static_cast<uint64_t>(expected_size_)) {
    discard();
    throw Error(ErrorKind::kIntegrity, "Cannot store blob " + digest_ + ": got " +
                                           std::to_string(written_) + " bytes, expected " +
                                           std::to_string(expected_size_));
  }
  std::string actual = hash_.digest();
  if (actual != digest_) {
    discard();
    throw Error(ErrorKind::kIntegrity,
                "Cannot store blob " + digest_ + ": content has digest " + actual);
  }
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    int err = errno;
    fd_ = -1;
    discard();
    throw write_error(tmp_path_, err);
  }
  fd_ = -1;
  auto final_path = store_->path_of(digest_);
  if (::rename(tmp_path_.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    discard();
    throw write_error(final_path, err);
  }
  tmp_path_.clear();
  return final_path;
}

}  // namespace regfs::cache

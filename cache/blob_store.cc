#include "cache/blob_store.h"

#include <sys/stat.h>

#include "cache/layout.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

BlobStore::BlobStore(std::filesystem::path root) : root_(std::move(root)) {
  make_private_dir(root_);
  make_private_dir(CacheLayout(root_).blobs());
  make_private_dir(CacheLayout(root_).tmp());
}

std::filesystem::path BlobStore::path_of(std::string_view digest) const {
  if (!registry::is_valid_digest(digest)) {
    throw Error(ErrorKind::kInvalid, "Cannot use digest " + std::string(digest) + ": not sha256");
  }
  return CacheLayout(root_).blob(digest);
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
  return read_small_file(*path, max_size);
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
    : store_(&store),
      digest_(std::move(digest)),
      expected_size_(expected_size),
      tmp_(CacheLayout(store.root_).tmp() /
           (std::string(registry::digest_hex(digest_)) + "." + unique_suffix())) {}

BlobStore::Writer::Writer(Writer&& other) noexcept = default;

BlobStore::Writer::~Writer() = default;

void BlobStore::Writer::discard() { tmp_.discard(); }

void BlobStore::Writer::append(const char* data, size_t size) {
  if (!tmp_.is_open()) {
    throw Error(ErrorKind::kIo, "Cannot write blob " + digest_ + ": writer closed");
  }
  if (expected_size_ >= 0 && written_ + size > static_cast<uint64_t>(expected_size_)) {
    throw Error(ErrorKind::kIntegrity, "Cannot store blob " + digest_ +
                                           ": more bytes than its descriptor's size " +
                                           std::to_string(expected_size_));
  }
  hash_.update(data, size);
  tmp_.write(data, size);
  written_ += size;
}

std::filesystem::path BlobStore::Writer::commit() {
  if (!tmp_.is_open()) {
    throw Error(ErrorKind::kIo, "Cannot commit blob " + digest_ + ": writer closed");
  }
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
  auto final_path = store_->path_of(digest_);
  tmp_.commit(final_path);
  return final_path;
}

}  // namespace regfs::cache

// Content-addressed store of verified blobs (manifests, configs, layers) on
// local disk:
//   <root>/blobs/sha256/<hex>   complete blobs, named by their digest
//   <root>/tmp/                 blobs being written
// Writes are transactions, as in cvmfs: begin() opens a temporary file,
// append() hashes while writing, commit() checks the digest (and size) and
// renames into place; a Writer destroyed without commit() removes its file.
// So a blob under blobs/ is always whole and was verified when written.
// Size bounds, eviction and partial (ranged) blobs come later; callers only
// use find()/read()/Writer, so they can be added behind this interface.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "cache/temp_file.h"
#include "registry/core/digest.h"

namespace regfs::cache {

class BlobStore {
 public:
  // Creates the directories (mode 0700) if needed.
  explicit BlobStore(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }

  // The path of the complete blob, if it is stored.
  std::optional<std::filesystem::path> find(std::string_view digest) const;
  // A small stored blob read into memory (manifests, configs); nullopt if it
  // is not stored or is larger than `max_size`.
  std::optional<std::string> read(std::string_view digest, size_t max_size) const;
  // Stores `bytes` as `digest`; throws Error(kIntegrity) if they do not match.
  std::filesystem::path put(std::string_view digest, std::string_view bytes);

  class Writer {
   public:
    Writer(Writer&&) noexcept;
    Writer& operator=(Writer&&) = delete;
    ~Writer();
    // Appends bytes; throws Error(kNoSpace) when the disk is full, kIo else.
    void append(const char* data, size_t size);
    uint64_t written() const { return written_; }
    // Verifies digest and expected size, renames into place, returns the path.
    // Throws Error(kIntegrity) on mismatch (the bytes are dropped).
    std::filesystem::path commit();

   private:
    friend class BlobStore;
    Writer(const BlobStore& store, std::string digest, int64_t expected_size);
    void discard();

    const BlobStore* store_;
    std::string digest_;
    int64_t expected_size_;
    TempFile tmp_;
    uint64_t written_ = 0;
    registry::Sha256 hash_;
  };

  // Starts writing `digest`; expected_size < 0 means unknown.
  Writer begin(std::string_view digest, int64_t expected_size = -1) const;

 private:
  std::filesystem::path path_of(std::string_view digest) const;

  std::filesystem::path root_;
};

}  // namespace regfs::cache

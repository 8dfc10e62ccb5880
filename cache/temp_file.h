// The files of the on-disk cache, written as transactions (as in cvmfs):
// a TempFile is opened under a store's tmp/, written, then committed (fsync,
// close, rename into its content address) or removed when it goes. Also the
// few helpers every store needs: private directories, unique temp names,
// small whole-file reads, and the one mapping of a write errno to an Error
// (ENOSPC and EDQUOT are kNoSpace, the rest kIo).
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

#include "cache/unique_fd.h"
#include "registry/core/error.h"

namespace regfs::cache {

// The one mapping of a cache file's errno `err` to an Error: kNoSpace for
// ENOSPC/EDQUOT, kIo else; reads "Cannot <what>: <strerror>".
registry::Error io_error(const std::string& what, int err);
// io_error("write cache file <path>", err).
registry::Error write_error(const std::filesystem::path& path, int err);

// Creates `dir` and its parents, mode 0700; throws Error(kIo).
void make_private_dir(const std::filesystem::path& dir);

// "<pid>.<counter>": unique among this host's writers of one store.
std::string unique_suffix();

// The whole file, or nullopt if it cannot be read or is larger than max_size.
std::optional<std::string> read_small_file(const std::filesystem::path& path, size_t max_size);

// A file being written: removed unless commit()ed into place.
class TempFile {
 public:
  // Creates `path` (it must not exist), mode 0600; throws write_error.
  explicit TempFile(std::filesystem::path path);
  TempFile(TempFile&& other) noexcept;
  TempFile& operator=(TempFile&&) = delete;
  ~TempFile() { discard(); }

  // False once committed or discarded.
  bool is_open() const { return static_cast<bool>(fd_); }
  // Writes all of it; throws write_error.
  void write(const char* data, size_t size);
  // Flushes to disk and renames to `target`. On failure the file is removed
  // and write_error thrown.
  void commit(const std::filesystem::path& target);
  // Closes and removes the file.
  void discard();

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

}  // namespace regfs::cache

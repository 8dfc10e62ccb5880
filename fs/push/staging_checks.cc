// StagingTree's checks of what is written (fs/push/staging_tree.h): the
// digest of a staged blob, a config.json written back, and the flush that
// checks them before it asks whether the tag is complete.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "fs/push/push_plan.h"
#include "fs/push/staged_helpers.h"
#include "fs/push/staging_tree.h"
#include "fs/tree/path.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;
using namespace staged;  // NOLINT: fs/push/staged_helpers.h

std::string StagingTree::file_digest(const fsys::path& file, const struct stat& st) {
  {
    std::lock_guard lock(mutex_);
    auto it = hashed_.find(file.string());
    if (it != hashed_.end() && it->second.size == st.st_size &&
        it->second.mtime_ns == mtime_ns(st)) {
      return it->second.digest;
    }
  }
  std::string digest = cache::hash_file(file);
  std::lock_guard lock(mutex_);
  hashed_[file.string()] = Hashed{st.st_size, mtime_ns(st), digest};
  return digest;
}

// config.json written to a staged copy of an image: an invalid one fails
// the close() and the previous one is put back (SPEC §4).
void StagingTree::check_written_config(const cache::StagedTag& tag) {
  auto good = build_dir(tag) / "config.json.good";
  auto file = area_.file(tag, "config.json");
  auto bytes = read_small(file);
  try {
    if (!bytes) throw Error(ErrorKind::kInvalid, "Cannot use config.json: larger than 4 MiB");
    check_config(*bytes);
  } catch (const Error& e) {
    std::error_code ec;
    bool restored = fsys::exists(good, ec) &&
                    fsys::copy_file(good, file, fsys::copy_options::overwrite_existing, ec);
    LOG(kWarning) << e.what() << (restored ? "; the previous config.json is put back" : "");
    throw Error(ErrorKind::kInvalid,
                std::string(e.what()) + (restored ? "; the previous config.json is kept" : ""));
  }
  std::error_code ec;
  fsys::create_directories(good.parent_path(), ec);
  std::ofstream(good, std::ios::binary | std::ios::trunc) << *bytes;
}

void StagingTree::check_blob(StagedFile& file) {
  std::lock_guard lock(file.state->mutex);
  if (!file.state->dirty) return;
  file.state->dirty = false;
  std::string expected = blob_digest_of(file.path);
  if (expected.empty()) return;
  struct stat st;
  if (::fstat(file.fd.get(), &st) != 0) fail_errno(errno, "Cannot stat staged " + file.path);
  auto digest = file.state->hasher.digest(static_cast<uint64_t>(st.st_size));
  if (!digest) digest = cache::hash_file(file.file);
  if (*digest != expected) {
    ::unlink(file.file.c_str());
    forget_paths(file.tag, file.path);
    LOG(kWarning) << "Cannot stage " << file.tag.registry << "/" << file.tag.repository << ":"
                  << file.tag.tag << "/" << file.path << ": its content is " << *digest
                  << "; the file is dropped and will not be pushed";
    throw Error(ErrorKind::kIntegrity, "Cannot stage " + file.path + ": content is " + *digest);
  }
  std::lock_guard hashed_lock(mutex_);
  hashed_[file.file.string()] = Hashed{st.st_size, mtime_ns(st), *digest};
}

void StagingTree::flush(StagedFile& file) {
  if (!file.writable) return;
  check_blob(file);
  if (file.path == "config.json" && !is_build(area_.tag_dir(file.tag))) {
    check_written_config(file.tag);
  }
  // A layout at the close that completes it; a build later. close() waits
  // for the push without a deadline (op_flush): its result is close()'s.
  push_and_wait(file.tag);
}

}  // namespace regfs::fs

// How the push room (fs/push/) throws: a product error is a registry::Error
// kind, whose errno fs/fuse/errno_map.cc chooses (SPEC §7); an errno the
// system gave for a file on the cache's disk (a staged file, the upper tree
// of a rootfs/ overlay) passes on as it is, a std::system_error.
#pragma once

#include <string>
#include <system_error>

#include "registry/core/error.h"

namespace regfs::fs {

// Throws Error(`kind`, `message`).
[[noreturn]] inline void fail(registry::ErrorKind kind, const std::string& message) {
  throw registry::Error(kind, message);
}
// Throws std::system_error(`error`, `message`) for an errno a system call gave.
[[noreturn]] inline void fail_errno(int error, const std::string& message) {
  throw std::system_error(error, std::generic_category(), message);
}

}  // namespace regfs::fs

// The one place where regfs chooses an errno (SPEC §7).
#pragma once

#include "registry/core/error.h"

namespace regfs::fs {

int to_errno(registry::ErrorKind kind);
// Maps the exception in flight (call inside a catch block): registry::Error by
// its kind, std::bad_alloc to ENOMEM, std::system_error by its code, anything
// else EIO. Logs what it maps, once, at a level fitting the error.
int current_exception_to_errno(const char* operation);

}  // namespace regfs::fs

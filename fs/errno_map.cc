#include "fs/errno_map.h"

#include <cerrno>
#include <new>
#include <system_error>

#include "registry/core/log.h"
#include "registry/health.h"

namespace regfs::fs {

using registry::ErrorKind;

int to_errno(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNotFound:
      return ENOENT;
    case ErrorKind::kBlobUnknown:
      return EIO;
    case ErrorKind::kUnauthorized:
      return EACCES;
    case ErrorKind::kTooManyRequests:
      return EIO;
    case ErrorKind::kUnavailable:
      return EIO;
    case ErrorKind::kTimeout:
      return ETIMEDOUT;
    case ErrorKind::kIntegrity:
      return EIO;
    case ErrorKind::kInvalid:
      return EINVAL;
    case ErrorKind::kUnsupported:
      return EOPNOTSUPP;
    case ErrorKind::kReadOnly:
      return EROFS;
    case ErrorKind::kNoSpace:
      return ENOSPC;
    case ErrorKind::kInterrupted:
      return EINTR;
    case ErrorKind::kIo:
      return EIO;
  }
  return EIO;
}

int current_exception_to_errno(const char* operation) {
  try {
    throw;
  } catch (const registry::RegistryDown& e) {
    LOG(kDebug) << operation << ": " << e.what();  // logged once, when it went down
    return to_errno(e.kind());
  } catch (const registry::Error& e) {
    // A miss is an answer, not an event worth a line above debug.
    auto level = e.kind() == ErrorKind::kNotFound ? log::kDebug : log::kWarning;
    LOG_AT(level) << operation << ": " << e.what();
    return to_errno(e.kind());
  } catch (const std::bad_alloc&) {
    LOG(kError) << operation << ": out of memory";
    return ENOMEM;
  } catch (const std::system_error& e) {
    LOG(kWarning) << operation << ": " << e.what();
    return e.code().category() == std::generic_category() ||
                   e.code().category() == std::system_category()
               ? e.code().value()
               : EIO;
  } catch (const std::exception& e) {
    LOG(kError) << operation << ": " << e.what();
    return EIO;
  } catch (...) {
    LOG(kError) << operation << ": unknown exception";
    return EIO;
  }
}

}  // namespace regfs::fs

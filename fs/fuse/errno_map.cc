#include "fs/fuse/errno_map.h"

#include <cerrno>
#include <iterator>
#include <new>
#include <system_error>

#include "registry/core/log.h"
#include "registry/health.h"

namespace regfs::fs {

using registry::ErrorKind;

namespace {

struct KindErrno {
  ErrorKind kind;
  int error;
};

// The table (SPEC §7). The FUSE glue adds only protocol answers (ENOSYS,
// ERANGE, ENODATA, EBADF, EXDEV to make the kernel copy) of its own.
constexpr KindErrno kKindErrnos[] = {
    {ErrorKind::kNotFound, ENOENT},
    {ErrorKind::kBlobUnknown, EIO},
    {ErrorKind::kUnauthorized, EACCES},
    {ErrorKind::kTooManyRequests, EIO},
    {ErrorKind::kUnavailable, EIO},
    {ErrorKind::kTimeout, ETIMEDOUT},
    {ErrorKind::kIntegrity, EIO},
    {ErrorKind::kInvalid, EINVAL},
    {ErrorKind::kUnsupported, EOPNOTSUPP},
    {ErrorKind::kReadOnly, EROFS},
    {ErrorKind::kNoSpace, ENOSPC},
    {ErrorKind::kInterrupted, EINTR},
    {ErrorKind::kExists, EEXIST},
    {ErrorKind::kNotEmpty, ENOTEMPTY},
    {ErrorKind::kBusy, EBUSY},
    {ErrorKind::kNotPermitted, EPERM},
    {ErrorKind::kCrossDevice, EXDEV},
    {ErrorKind::kIsDirectory, EISDIR},
    {ErrorKind::kNotDirectory, ENOTDIR},
    {ErrorKind::kNoAttribute, ENODATA},
    {ErrorKind::kIo, EIO},
};
static_assert(std::size(kKindErrnos) == static_cast<size_t>(ErrorKind::kIo) + 1,
              "every ErrorKind has its errno");

}  // namespace

int to_errno(ErrorKind kind) {
  for (const auto& entry : kKindErrnos) {
    if (entry.kind == kind) return entry.error;
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

// Typed errors shared by every layer. Lower layers throw regfs::registry::Error
// with a kind (what went wrong, as the distribution spec and SPEC §7 see it),
// the HTTP status and OCI error code when there was one, and a message that
// reads "Cannot <verb> <object>: <reason>". fs/fuse/errno_map.cc is the one place
// that turns a kind into an errno (its table is SPEC §7's).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace regfs::registry {

enum class ErrorKind {
  kNotFound,         // NAME_UNKNOWN, MANIFEST_UNKNOWN, 404 at lookup or listing
  kBlobUnknown,      // a blob a valid manifest lists is missing
  kUnauthorized,     // 401/403 after the auth flow (UNAUTHORIZED, DENIED)
  kTooManyRequests,  // 429 after retries
  kUnavailable,      // unreachable, reset, 408/5xx after retries
  kTimeout,          // the request deadline passed
  kIntegrity,        // digest, size or diff_id mismatch
  kInvalid,          // invalid name, malformed manifest, bad argument
  kUnsupported,      // unsupported media type, registry refuses (405)
  kReadOnly,         // write to remote content
  kNoSpace,          // cache disk full
  kInterrupted,      // request interrupted
  kExists,           // a name made again (mkdir, create, link of a staged name)
  kNotEmpty,         // removing a staged directory or tag that still holds files
  kBusy,             // in use: a tag deleted while another tag shares its manifest
  kNotPermitted,     // an operation the place refuses (files outside a tag)
  kCrossDevice,      // a link or rename out of its staged tag or rootfs/
  kIsDirectory,      // a file operation on a staged directory (unlink, rename over)
  kNotDirectory,     // a directory operation on a staged file (rmdir, rename over)
  kNoAttribute,      // an xattr removed or replaced that is not set
  kIo,               // anything else
};

// Human name of a kind, for logs ("not found", "unauthorized", ...).
std::string_view to_string(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, int http_status = 0, std::string oci_code = {})
      : std::runtime_error(message),
        kind_(kind),
        http_status_(http_status),
        oci_code_(std::move(oci_code)) {}

  ErrorKind kind() const { return kind_; }
  int http_status() const { return http_status_; }
  const std::string& oci_code() const { return oci_code_; }

 private:
  ErrorKind kind_;
  int http_status_;
  std::string oci_code_;
};

// Builds the Error for a failed registry response: reads the distribution
// error body ({"errors":[{"code","message"}]}) when there is one and picks the
// kind from the code first, the status second. `what` names the operation for
// the message, e.g. "fetch manifest library/nginx:1.25". `registry`, when
// given, is named in the `regfs login` hint of an unauthorized error.
Error error_from_response(int http_status, std::string_view body, std::string_view what,
                          std::string_view registry = {});

}  // namespace regfs::registry

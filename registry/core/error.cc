// Distribution-spec error responses to typed errors: the OCI error code in the
// body decides the kind when there is one, the HTTP status otherwise.
#include "registry/core/error.h"

#include <nlohmann/json.hpp>

namespace regfs::registry {
namespace {

struct CodeKind {
  std::string_view code;
  ErrorKind kind;
};

constexpr CodeKind kCodeKinds[] = {
    {"NAME_UNKNOWN", ErrorKind::kNotFound},
    {"MANIFEST_UNKNOWN", ErrorKind::kNotFound},
    {"BLOB_UPLOAD_UNKNOWN", ErrorKind::kNotFound},
    {"BLOB_UNKNOWN", ErrorKind::kBlobUnknown},
    {"MANIFEST_BLOB_UNKNOWN", ErrorKind::kBlobUnknown},
    {"UNAUTHORIZED", ErrorKind::kUnauthorized},
    {"DENIED", ErrorKind::kUnauthorized},
    {"TOOMANYREQUESTS", ErrorKind::kTooManyRequests},
    {"UNSUPPORTED", ErrorKind::kUnsupported},
    {"DIGEST_INVALID", ErrorKind::kIntegrity},
    {"SIZE_INVALID", ErrorKind::kIntegrity},
    {"NAME_INVALID", ErrorKind::kInvalid},
    {"TAG_INVALID", ErrorKind::kInvalid},
    {"MANIFEST_INVALID", ErrorKind::kInvalid},
    {"MANIFEST_UNVERIFIED", ErrorKind::kInvalid},
    {"BLOB_UPLOAD_INVALID", ErrorKind::kInvalid},
    {"RANGE_INVALID", ErrorKind::kInvalid},
    {"PAGINATION_NUMBER_INVALID", ErrorKind::kInvalid},
};

bool kind_from_code(std::string_view code, ErrorKind* kind) {
  for (const auto& entry : kCodeKinds) {
    if (entry.code == code) {
      *kind = entry.kind;
      return true;
    }
  }
  return false;
}

ErrorKind kind_from_status(int status) {
  switch (status) {
    case 404:
      return ErrorKind::kNotFound;
    case 401:
    case 403:
      return ErrorKind::kUnauthorized;
    case 429:
      return ErrorKind::kTooManyRequests;
    case 405:
      return ErrorKind::kUnsupported;
    case 408:
      return ErrorKind::kUnavailable;
    case 400:
    case 413:
    case 416:
      return ErrorKind::kInvalid;
    default:
      return status >= 500 ? ErrorKind::kUnavailable : ErrorKind::kIo;
  }
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 416:
      return "Range Not Satisfiable";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

// The first {"code","message"} of a distribution error body, if any.
void parse_error_body(std::string_view body, std::string* code, std::string* message) {
  if (body.empty() || body.size() > 64 * 1024) return;
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return;
  auto errors = json.find("errors");
  if (errors == json.end() || !errors->is_array() || errors->empty()) return;
  const auto& first = (*errors)[0];
  if (!first.is_object()) return;
  if (auto it = first.find("code"); it != first.end() && it->is_string()) {
    *code = it->get<std::string>();
  }
  if (auto it = first.find("message"); it != first.end() && it->is_string()) {
    *message = it->get<std::string>();
  }
}

}  // namespace

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNotFound:
      return "not found";
    case ErrorKind::kBlobUnknown:
      return "blob unknown";
    case ErrorKind::kUnauthorized:
      return "unauthorized";
    case ErrorKind::kTooManyRequests:
      return "too many requests";
    case ErrorKind::kUnavailable:
      return "unavailable";
    case ErrorKind::kTimeout:
      return "timed out";
    case ErrorKind::kIntegrity:
      return "integrity check failed";
    case ErrorKind::kInvalid:
      return "invalid";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kReadOnly:
      return "read-only";
    case ErrorKind::kNoSpace:
      return "no space";
    case ErrorKind::kInterrupted:
      return "interrupted";
    case ErrorKind::kExists:
      return "exists";
    case ErrorKind::kNotEmpty:
      return "not empty";
    case ErrorKind::kBusy:
      return "busy";
    case ErrorKind::kNotPermitted:
      return "not permitted";
    case ErrorKind::kCrossDevice:
      return "crosses a boundary";
    case ErrorKind::kIsDirectory:
      return "is a directory";
    case ErrorKind::kNotDirectory:
      return "not a directory";
    case ErrorKind::kNoAttribute:
      return "no such attribute";
    case ErrorKind::kIo:
      return "I/O error";
  }
  return "unknown error";
}

Error error_from_response(int http_status, std::string_view body, std::string_view what,
                          std::string_view registry) {
  std::string code;
  std::string message;
  parse_error_body(body, &code, &message);
  ErrorKind kind;
  if (!kind_from_code(code, &kind)) kind = kind_from_status(http_status);

  std::string reason = message;
  if (reason.empty()) reason = code;
  if (reason.empty()) {
    reason = "HTTP " + std::to_string(http_status);
    if (auto phrase = reason_phrase(http_status); !phrase.empty()) {
      reason += " ";
      reason += phrase;
    }
  }
  std::string text = "Cannot " + std::string(what) + ": " + reason;
  if (kind == ErrorKind::kUnauthorized) {
    text += " (the repository may not exist, or may need `regfs login ";
    text += registry.empty() ? std::string_view("<registry>") : registry;
    text += "`)";
  }
  return Error(kind, text, http_status, std::move(code));
}

}  // namespace regfs::registry

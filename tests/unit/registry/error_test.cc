#include "registry/core/error.h"

#include <gtest/gtest.h>

namespace regfs::registry {
namespace {

Error from(int status, std::string_view body) {
  return error_from_response(status, body, "fetch manifest r/a:1", "r");
}

TEST(ErrorTest, OciCodeDecidesTheKind) {
  struct Case {
    const char* code;
    int status;
    ErrorKind kind;
  } cases[] = {
      {"NAME_UNKNOWN", 404, ErrorKind::kNotFound},
      {"MANIFEST_UNKNOWN", 404, ErrorKind::kNotFound},
      {"BLOB_UNKNOWN", 404, ErrorKind::kBlobUnknown},
      {"UNAUTHORIZED", 401, ErrorKind::kUnauthorized},
      {"DENIED", 403, ErrorKind::kUnauthorized},
      {"TOOMANYREQUESTS", 429, ErrorKind::kTooManyRequests},
      {"UNSUPPORTED", 405, ErrorKind::kUnsupported},
      {"DIGEST_INVALID", 400, ErrorKind::kIntegrity},
      {"NAME_INVALID", 400, ErrorKind::kInvalid},
      {"TAG_INVALID", 400, ErrorKind::kInvalid},
      {"MANIFEST_INVALID", 400, ErrorKind::kInvalid},
      // The code wins over a status that says something else.
      {"MANIFEST_UNKNOWN", 500, ErrorKind::kNotFound},
  };
  for (const auto& c : cases) {
    std::string body = std::string(R"({"errors":[{"code":")") + c.code + R"(","message":"m"}]})";
    Error e = from(c.status, body);
    EXPECT_EQ(e.kind(), c.kind) << c.code;
    EXPECT_EQ(e.oci_code(), c.code);
    EXPECT_EQ(e.http_status(), c.status);
  }
}

TEST(ErrorTest, StatusDecidesWithoutACode) {
  EXPECT_EQ(from(404, "").kind(), ErrorKind::kNotFound);
  EXPECT_EQ(from(401, "").kind(), ErrorKind::kUnauthorized);
  EXPECT_EQ(from(403, "<html>").kind(), ErrorKind::kUnauthorized);
  EXPECT_EQ(from(429, "").kind(), ErrorKind::kTooManyRequests);
  EXPECT_EQ(from(405, "").kind(), ErrorKind::kUnsupported);
  EXPECT_EQ(from(408, "").kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(from(500, "").kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(from(503, R"({"errors":[]})").kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(from(418, "").kind(), ErrorKind::kIo);
  // An unknown code falls back to the status.
  EXPECT_EQ(from(404, R"({"errors":[{"code":"WHATEVER"}]})").kind(), ErrorKind::kNotFound);
}

TEST(ErrorTest, Messages) {
  EXPECT_STREQ(
      from(404, R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})").what(),
      "Cannot fetch manifest r/a:1: manifest unknown");
  EXPECT_STREQ(from(404, "").what(), "Cannot fetch manifest r/a:1: HTTP 404 Not Found");
  EXPECT_STREQ(from(401, "").what(),
               "Cannot fetch manifest r/a:1: HTTP 401 Unauthorized (the "
               "repository may not exist, or may need `regfs login r`)");
  Error without_registry = error_from_response(403, "", "list tags of x");
  EXPECT_NE(std::string(without_registry.what()).find("regfs login <registry>"), std::string::npos);
}

TEST(ErrorTest, KindNames) {
  EXPECT_EQ(to_string(ErrorKind::kNotFound), "not found");
  EXPECT_EQ(to_string(ErrorKind::kUnauthorized), "unauthorized");
  EXPECT_EQ(to_string(ErrorKind::kTimeout), "timed out");
}

}  // namespace
}  // namespace regfs::registry

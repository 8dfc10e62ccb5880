#include "registry/foreign_blob.h"

#include <gtest/gtest.h>

#include "registry/core/error.h"
#include "registry/transport.h"

namespace regfs::registry {
namespace {

TEST(ForeignBlob, OnlyHttpAndHttpsUrlsAreFetched) {
  EXPECT_TRUE(is_fetchable_url("https://go.microsoft.com/fwlink/?linkid=837858"));
  EXPECT_TRUE(is_fetchable_url("HTTP://127.0.0.1:8080/layer.tar.gz"));
  EXPECT_FALSE(is_fetchable_url("ftp://example.com/layer"));
  EXPECT_FALSE(is_fetchable_url("file:///etc/shadow"));
  EXPECT_FALSE(is_fetchable_url("https://"));
  EXPECT_FALSE(is_fetchable_url("/relative/path"));
  EXPECT_FALSE(is_fetchable_url("https://example.com/a\r\nAuthorization: x"));
}

TEST(ForeignBlob, RefusesOtherSchemesBeforeAnyRequest) {
  HttpClient http(HttpOptions{});
  ClientOptions options;
  options.registry = "localhost:1";
  Transport transport(options);
  try {
    fetch_foreign_blob(transport, http, "file:///etc/passwd", 0, 0, std::chrono::milliseconds(1000),
                       [](const char*, size_t) { return true; });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
  }
}

}  // namespace
}  // namespace regfs::registry

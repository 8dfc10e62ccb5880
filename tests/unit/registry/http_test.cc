// URL helpers and header lookup of the private HttpClient (registry/http.h).
#include "registry/http.h"

#include <gtest/gtest.h>

namespace regfs::registry {
namespace {

TEST(HttpTest, ResolveUrl) {
  const std::string base = "https://Reg.example:5000/v2/a/tags/list?n=2";
  EXPECT_EQ(resolve_url(base, "/v2/a/tags/list?last=b&n=2"),
            "https://reg.example:5000/v2/a/tags/list?last=b&n=2");
  EXPECT_EQ(resolve_url(base, "https://cdn.example/blob?sig=1"), "https://cdn.example/blob?sig=1");
  EXPECT_EQ(resolve_url(base, "//cdn.example/x"), "https://cdn.example/x");
  EXPECT_EQ(resolve_url(base, "?last=b"), "https://reg.example:5000/v2/a/tags/list?last=b");
  EXPECT_EQ(resolve_url(base, "other"), "https://reg.example:5000/v2/a/tags/other");
  EXPECT_EQ(resolve_url("http://h", "x"), "http://h/x");
}

TEST(HttpTest, OriginAuthorityEncode) {
  EXPECT_EQ(url_origin("HTTPS://Host:1/p?q"), "https://host:1");
  EXPECT_EQ(url_origin("http://h?x"), "http://h");
  EXPECT_EQ(url_origin("/relative"), "");
  EXPECT_EQ(url_authority("https://Host:1/p"), "host:1");
  EXPECT_EQ(url_encode("repository:a/b:pull,push *~"), "repository%3Aa%2Fb%3Apull%2Cpush%20%2A~");
}

TEST(HttpTest, HeadersIgnoreCase) {
  HttpHeaders headers;
  headers.add("Docker-Content-Digest", "sha256:1");
  headers.add("link", "<a>");
  headers.add("Link", "<b>");
  EXPECT_EQ(headers.get("docker-content-digest"), "sha256:1");
  EXPECT_EQ(headers.get("LINK"), "<a>");
  EXPECT_EQ(headers.get("missing"), std::nullopt);
}

TEST(HttpTest, ConnectFailureIsTyped) {
  HttpClient client(HttpOptions{});
  HttpRequest request;
  request.url = "http://127.0.0.1:1/";  // nothing listens on port 1
  request.timeout = std::chrono::milliseconds(5000);
  HttpResponse response = client.perform(request);
  EXPECT_EQ(response.failure, HttpFailure::kConnect);
  EXPECT_EQ(response.status, 0);
  EXPECT_FALSE(response.error.empty());
}

}  // namespace
}  // namespace regfs::registry

// URL helpers and header lookup of the private HttpClient (registry/http.h).
#include "registry/http.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "registry/core/deadline.h"
#include "registry/core/error.h"

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

// A server that accepts and never answers: the operation's deadline, not the
// request's own timeout, ends the request; a passed deadline sends nothing.
TEST(HttpTest, OperationDeadlineBoundsARequest) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  HttpClient client(HttpOptions{});
  HttpRequest request;
  request.url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/";
  request.timeout = std::chrono::milliseconds(20'000);
  {
    ScopedDeadline deadline(std::chrono::milliseconds(300));
    auto started = std::chrono::steady_clock::now();
    HttpResponse response = client.perform(request);
    EXPECT_EQ(response.failure, HttpFailure::kTimeout);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    response = client.perform(request);
    EXPECT_EQ(response.failure, HttpFailure::kTimeout);
    EXPECT_THROW(check_deadline("test"), Error);
  }
  EXPECT_FALSE(current_deadline().has_value());
  EXPECT_NO_THROW(check_deadline("test"));
  ::close(fd);
}

TEST(HttpTest, NestedDeadlinesKeepTheEarlierOne) {
  ScopedDeadline outer(std::chrono::milliseconds(100));
  auto first = current_deadline();
  {
    ScopedDeadline inner(std::chrono::seconds(100));
    EXPECT_EQ(current_deadline(), first);
    NoDeadline none;
    EXPECT_FALSE(current_deadline().has_value());
  }
  EXPECT_EQ(current_deadline(), first);
  EXPECT_LE(bounded_timeout(std::chrono::seconds(30)), std::chrono::milliseconds(100));
}

}  // namespace
}  // namespace regfs::registry

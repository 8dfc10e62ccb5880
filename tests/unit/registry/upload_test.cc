// Pieces of the upload protocol that need no registry: where a session
// stands from its Range header, and the closing PUT's URL. Uploads against
// the real registry are in client_integration_test.cc and the integration
// tests (tests/integration/test_upload_faults.py).
#include "registry/upload.h"

#include <gtest/gtest.h>

#include "registry/reference.h"

namespace regfs::registry {
namespace {

TEST(Upload, ReceivedBytesFromRange) {
  EXPECT_EQ(upload::received_bytes("0-1023"), 1024u);
  EXPECT_EQ(upload::received_bytes("bytes=0-5242879"), 5u << 20);
  // distribution says "0-0" for an empty session.
  EXPECT_EQ(upload::received_bytes("0-0"), 0u);
  for (const char* bad : {"", "0-", "1-100", "0-x", "bytes 0-10", "0-99999999999999999999999"}) {
    EXPECT_EQ(upload::received_bytes(bad), std::nullopt) << bad;
  }
}

TEST(Upload, ClosingUrlCarriesTheDigest) {
  EXPECT_EQ(upload::with_digest("http://r/v2/a/blobs/uploads/u", "sha256:ab"),
            "http://r/v2/a/blobs/uploads/u?digest=sha256%3Aab");
  EXPECT_EQ(upload::with_digest("/u?_state=x", "sha256:ab"), "/u?_state=x&digest=sha256%3Aab");
}

TEST(Upload, NameLimitsSayThemselves) {
  EXPECT_EQ(name_limit_problem("a/b", "v1"), "");
  EXPECT_EQ(name_limit_problem(std::string(255, 'a'), std::string(128, 't')), "");
  EXPECT_EQ(name_limit_problem(std::string(256, 'a'), "v1"),
            "a repository name has at most 255 characters; this one has 256");
  EXPECT_EQ(name_limit_problem("a", std::string(129, 't')),
            "a tag has at most 128 characters; this one has 129");
}

}  // namespace
}  // namespace regfs::registry

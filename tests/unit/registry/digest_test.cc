#include "registry/core/digest.h"

#include <gtest/gtest.h>

namespace regfs::registry {
namespace {

TEST(DigestTest, Sha256OfEmptyAndAbc) {
  EXPECT_EQ(sha256_digest(""),
            "sha256:"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_digest("abc"),
            "sha256:"
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, StreamingMatchesOneShot) {
  Sha256 hasher;
  hasher.update("a");
  hasher.update(std::string_view("bc"));
  EXPECT_EQ(hasher.digest(), sha256_digest("abc"));
  Sha256 moved = std::move(hasher);
  static_cast<void>(moved);
}

TEST(DigestTest, Validity) {
  std::string good = sha256_digest("x");
  EXPECT_TRUE(is_valid_digest(good));
  EXPECT_FALSE(is_valid_digest("sha256:abc"));
  EXPECT_FALSE(is_valid_digest("sha512:" + std::string(64, 'a')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(is_valid_digest("sha256:" + std::string(63, 'a') + "g"));
  EXPECT_EQ(digest_hex(good), good.substr(7));
}

}  // namespace
}  // namespace regfs::registry

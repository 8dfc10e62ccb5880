#include "fs/fuse/errno_map.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <system_error>

namespace regfs::fs {
namespace {

using registry::Error;
using registry::ErrorKind;

int errno_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (...) {
    return current_exception_to_errno("test");
  }
}

TEST(ErrnoMapTest, TheKindsOfTheTreeHaveTheirErrnos) {
  EXPECT_EQ(to_errno(ErrorKind::kExists), EEXIST);
  EXPECT_EQ(to_errno(ErrorKind::kNotEmpty), ENOTEMPTY);
  EXPECT_EQ(to_errno(ErrorKind::kBusy), EBUSY);
  EXPECT_EQ(to_errno(ErrorKind::kNotPermitted), EPERM);
  EXPECT_EQ(to_errno(ErrorKind::kCrossDevice), EXDEV);
  EXPECT_EQ(to_errno(ErrorKind::kIsDirectory), EISDIR);
  EXPECT_EQ(to_errno(ErrorKind::kNotDirectory), ENOTDIR);
  EXPECT_EQ(to_errno(ErrorKind::kNoAttribute), ENODATA);
  EXPECT_EQ(to_errno(ErrorKind::kNotFound), ENOENT);
  EXPECT_EQ(to_errno(ErrorKind::kReadOnly), EROFS);
  EXPECT_EQ(to_errno(ErrorKind::kTimeout), ETIMEDOUT);
  EXPECT_EQ(to_errno(ErrorKind::kIo), EIO);
}

TEST(ErrnoMapTest, ThrownKindsAndSystemErrorsMapInOnePlace) {
  EXPECT_EQ(errno_of(std::make_exception_ptr(Error(ErrorKind::kExists, "Cannot make x"))), EEXIST);
  EXPECT_EQ(errno_of(std::make_exception_ptr(Error(ErrorKind::kUnauthorized, "denied"))), EACCES);
  // An errno the system gave (a staged file's disk) passes through.
  EXPECT_EQ(errno_of(std::make_exception_ptr(
                std::system_error(ENAMETOOLONG, std::generic_category(), "Cannot make x"))),
            ENAMETOOLONG);
  EXPECT_EQ(errno_of(std::make_exception_ptr(std::runtime_error("?"))), EIO);
}

}  // namespace
}  // namespace regfs::fs

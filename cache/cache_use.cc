#include "cache/cache_use.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {
namespace {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

UniqueFd open_lock_file(const CacheLayout& layout) {
  UniqueFd fd(::open(layout.lock_file().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) {
    throw Error(ErrorKind::kIo,
                "Cannot open " + layout.lock_file().string() + ": " + std::strerror(errno));
  }
  return fd;
}

bool alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

std::vector<CacheUser> cache_users(const CacheLayout& layout) {
  std::vector<CacheUser> users;
  std::error_code ec;
  for (const auto& entry : fsys::directory_iterator(layout.mounts(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.empty() || name.size() > 9 || name.find_first_not_of("0123456789") != name.npos) {
      continue;  // not a pid: a mounts/<pid>.tmp being written
    }
    CacheUser user;
    user.pid = static_cast<pid_t>(std::stol(name));
    if (!alive(user.pid)) continue;
    std::ifstream in(entry.path());
    std::getline(in, user.mountpoint);
    users.push_back(std::move(user));
  }
  return users;
}

CacheUse::CacheUse(const CacheLayout& layout) : layout_(layout), fd_(open_lock_file(layout)) {
  int rc;
  // Exclusive first, without waiting: taken only if no one else holds it,
  // then made shared (flock(2) converts it).
  while ((rc = ::flock(fd_.get(), LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
  }
  alone_ = rc == 0;
  while ((rc = ::flock(fd_.get(), LOCK_SH)) != 0 && errno == EINTR) {
  }
  if (rc != 0) {
    throw Error(ErrorKind::kIo,
                "Cannot lock " + layout.lock_file().string() + ": " + std::strerror(errno));
  }
}

CacheUse::~CacheUse() {
  if (announced_ != 0 && announced_ == ::getpid()) {
    std::error_code ec;
    fsys::remove(layout_.mounts() / std::to_string(announced_), ec);
  }
}

void CacheUse::announce(const std::string& mountpoint) {
  pid_t pid = ::getpid();
  std::error_code ec;
  fsys::create_directories(layout_.mounts(), ec);
  fsys::path entry = layout_.mounts() / std::to_string(pid);
  fsys::path temp = entry;
  temp += ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << mountpoint << "\n";
    if (!out.flush()) {
      LOG(kWarning) << "Cannot write " << temp.string() << ": " << std::strerror(errno);
      return;
    }
  }
  fsys::rename(temp, entry, ec);
  if (ec) {
    LOG(kWarning) << "Cannot write " << entry.string() << ": " << ec.message();
    return;
  }
  announced_ = pid;
}

std::optional<CacheExclusive> CacheExclusive::try_take(const CacheLayout& layout) {
  UniqueFd fd = open_lock_file(layout);
  int rc;
  while ((rc = ::flock(fd.get(), LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
  }
  if (rc != 0) {
    if (errno == EWOULDBLOCK) return std::nullopt;
    throw Error(ErrorKind::kIo,
                "Cannot lock " + layout.lock_file().string() + ": " + std::strerror(errno));
  }
  // No mount holds the cache: what mounts/ names is stale.
  std::error_code ec;
  for (const auto& entry : fsys::directory_iterator(layout.mounts(), ec)) {
    std::error_code ignored;
    fsys::remove(entry.path(), ignored);
  }
  return CacheExclusive(std::move(fd));
}

}  // namespace regfs::cache

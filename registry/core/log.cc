#include "registry/core/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>

namespace regfs::log {
namespace {

std::atomic<int> g_level{kInfo};
std::mutex g_mutex;  // guards g_file and the write itself
FILE* g_file = nullptr;
std::deque<std::string> g_recent;  // guarded by g_mutex
constexpr size_t kRecentProblems = 20;

const char* level_name(Level level) {
  switch (level) {
    case kDebug:
      return "debug";
    case kInfo:
      return "info";
    case kWarning:
      return "warning";
    case kError:
      return "error";
  }
  return "?";
}

}  // namespace

void set_level(Level level) { g_level = level; }
Level level() { return static_cast<Level>(g_level.load()); }

void set_log_file(const std::string& path) {
  std::lock_guard lock(g_mutex);
  if (g_file) std::fclose(g_file);
  g_file = path.empty() ? nullptr : std::fopen(path.c_str(), "ae");
}

void write(Level level, const std::string& line) {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::lock_guard lock(g_mutex);
  FILE* out = g_file ? g_file : stderr;
  std::fprintf(out, "%s regfs %s: %s\n", stamp, level_name(level), line.c_str());
  std::fflush(out);
  if (level >= kWarning) {
    g_recent.push_back(std::string(stamp) + " " + line);
    if (g_recent.size() > kRecentProblems) g_recent.pop_front();
  }
}

std::vector<std::string> recent_problems() {
  std::lock_guard lock(g_mutex);
  return {g_recent.begin(), g_recent.end()};
}

}  // namespace regfs::log

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
std::string g_file_path;           // guarded by g_mutex: g_file's path
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
  g_file_path = g_file ? path : std::string();
}

std::string log_file() {
  std::lock_guard lock(g_mutex);
  return g_file_path;
}

std::string utc_text(int64_t unix_seconds, const char* format) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[64];
  return std::string(text, std::strftime(text, sizeof text, format, &tm));
}

void write(Level level, const std::string& line) {
  std::string stamp =
      utc_text(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()));
  std::lock_guard lock(g_mutex);
  FILE* out = g_file ? g_file : stderr;
  std::fprintf(out, "%s regfs %s: %s\n", stamp.c_str(), level_name(level), line.c_str());
  std::fflush(out);
  if (level >= kWarning) {
    g_recent.push_back(stamp + " " + line);
    if (g_recent.size() > kRecentProblems) g_recent.pop_front();
  }
}

std::vector<std::string> recent_problems() {
  std::lock_guard lock(g_mutex);
  return {g_recent.begin(), g_recent.end()};
}

}  // namespace regfs::log

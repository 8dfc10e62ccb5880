// Level-gated logging: LOG(kInfo) << "Cannot fetch ..." << reason;
// One line per event, to stderr or to the file set by set_log_file().
// Never pass secrets (passwords, tokens, Authorization headers) to it.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace regfs::log {

enum Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void set_level(Level level);
Level level();
// Sends later lines to `path` (appended); empty restores stderr.
void set_log_file(const std::string& path);
// The file lines go to (set_log_file), or empty: stderr.
std::string log_file();
void write(Level level, const std::string& line);
// The last warning and error lines (newest last), for `regfs status`.
std::vector<std::string> recent_problems();
// `unix_seconds` as UTC text in strftime(3) `format`; the default is RFC 3339's
// "2026-11-30T10:52:07Z" (what logs and image configs carry).
std::string utc_text(int64_t unix_seconds, const char* format = "%Y-%m-%dT%H:%M:%SZ");

class Line {
 public:
  explicit Line(Level level) : level_(level) {}
  ~Line() { write(level_, stream_.str()); }
  template <typename T>
  Line& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  Level level_;
  std::ostringstream stream_;
};

}  // namespace regfs::log

// LOG(kInfo) << ...; the argument is a Level name. LOG_AT(expr) takes a value.
#define LOG_AT(severity)                    \
  if ((severity) < ::regfs::log::level()) { \
  } else                                    \
    ::regfs::log::Line(severity)
#define LOG(severity) LOG_AT(::regfs::log::severity)

// `regfs cache du|prune|clear [--cache-dir DIR] [--cache-size SIZE]`: report
// and trim a cache directory without a mount. Staged pushes are never removed
// (they are what the user wrote).
#pragma once

#include <string>
#include <vector>

namespace regfs::fs {

// Runs the command; returns the exit code. Prints to stdout, errors to stderr.
int run_cache_command(const std::vector<std::string>& args);

}  // namespace regfs::fs

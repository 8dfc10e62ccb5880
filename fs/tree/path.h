// Paths inside the tree: registry paths ("library/debian"), paths in a
// staged tag and in a rootfs/ ("etc/os-release"), and node keys, all
// '/'-separated and relative ("" is the top).
#pragma once

#include <string>
#include <string_view>

namespace regfs::fs {

// `path` + "/" + `name`, or `name` alone if `path` is "".
inline std::string join(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "/" + std::string(name);
}

}  // namespace regfs::fs

// Path helpers of the rootfs overlay (fs/push/rootfs_overlay.h), shared by
// its reading side (rootfs_overlay.cc) and its changes (rootfs_overlay_changes.cc).
#pragma once

#include <string>

#include "fs/push/push_errors.h"
#include "fs/tree/tree.h"

namespace regfs::fs::overlay {

// "a/b/c" -> "a/b"; "c" -> "".
inline std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

// The lower tree's view of `path` as RootfsView reads it.
inline Node lower_node(const std::string& path) {
  Node node;
  node.kind = NodeKind::kRootfs;
  node.at = Node::RootfsAt{{}, path, 0};
  return node;
}

}  // namespace regfs::fs::overlay

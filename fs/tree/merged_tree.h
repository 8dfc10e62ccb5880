// The root filesystem of an image, built in memory from its layers' indexes
// as `umoci raw unpack` and containerd leave it on disk (SPEC §5), entry by
// entry in layer and archive order:
//   - the directory part of a path is resolved as SecureJoin does: through
//     symlinks already in the tree, `..` lexically on what is resolved so far,
//     never above the root, missing components as names (`missing/../etc` is
//     `etc`, and makes no `missing`); missing directories are then made;
//   - `.wh.<name>` removes <name> and `.wh..wh..opq` the contents of its
//     directory, except what the same layer already wrote (and ancestors); a
//     whiteout naming nothing or above its directory (`.wh..`) is refused;
//   - a directory over a directory updates its metadata and keeps its
//     children; any other entry replaces what was at its path;
//   - a hardlink shares the inode (metadata and data) of its target, found
//     in the tree as it is then, and keeps no metadata of its own;
//   - an entry that cannot be applied (a missing hardlink target, a link to
//     itself, a path through a file, a non-directory root) is skipped with a
//     log line, and whatever its path held stays.
// Nodes are never freed while the tree lives, so node indexes are stable and
// each node keeps pointing at the TarEntry (and layer) holding its data.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/layer_index.h"

namespace regfs::fs {

struct MergedNode {
  // The inode's metadata and data; nullptr for a directory no entry declared.
  const cache::TarEntry* entry = nullptr;
  uint32_t layer = 0;   // the layer whose tar holds entry's data
  uint32_t parent = 0;  // the root is its own parent
  uint32_t inode = 0;   // identity of the inode: paths of one hardlink group share it
  uint32_t nlink = 1;
  std::map<std::string, uint32_t, std::less<>> children;  // directories only

  bool is_dir() const { return !entry || entry->type == cache::EntryType::kDir; }
  // S_IFMT bits of the node's type.
  mode_t type_bits() const;
};

class MergedTree {
 public:
  static constexpr uint32_t kRoot = 0;

  // Applies `layers` in order (index 0 is the base layer).
  explicit MergedTree(std::vector<std::shared_ptr<const cache::LayerIndex>> layers);

  const MergedNode& node(uint32_t index) const { return nodes_[index]; }
  const cache::LayerIndex& layer(uint32_t index) const { return *layers_[index]; }
  // The child `name` of directory `dir`, if any.
  std::optional<uint32_t> child(uint32_t dir, std::string_view name) const;
  // The node at `path` ("a/b", "" for the root), following no symlinks.
  std::optional<uint32_t> find(std::string_view path) const;
  // Reachable nodes, the root included.
  size_t size() const { return reachable_; }

 private:
  class Builder;
  std::vector<std::shared_ptr<const cache::LayerIndex>> layers_;
  std::vector<MergedNode> nodes_;
  size_t reachable_ = 0;
};

}  // namespace regfs::fs

#include "fs/tree/merged_tree.h"

#include <sys/stat.h>

#include <unordered_map>

#include "registry/core/log.h"

namespace regfs::fs {

using cache::EntryType;
using cache::TarEntry;

namespace {

// As filepath-securejoin, which umoci resolves paths with.
constexpr int kMaxSymlinks = 255;
// Components one resolution may walk (symlink targets included): a bound on
// the work a hostile layer can ask for, far above any real path.
constexpr size_t kMaxComponents = 1 << 16;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

std::pair<std::string_view, std::string_view> split_last(std::string_view path) {
  auto slash = path.rfind('/');
  if (slash == std::string_view::npos) return {{}, path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

mode_t MergedNode::type_bits() const {
  if (!entry) return S_IFDIR;
  switch (entry->type) {
    case EntryType::kDir:
      return S_IFDIR;
    case EntryType::kSymlink:
      return S_IFLNK;
    case EntryType::kChar:
      return S_IFCHR;
    case EntryType::kBlock:
      return S_IFBLK;
    case EntryType::kFifo:
      return S_IFIFO;
    default:
      return S_IFREG;
  }
}

// Applies entries one at a time; `upper_` marks, per node, the last layer
// (plus one) that wrote it or something under it: what whiteouts keep.
class MergedTree::Builder {
 public:
  explicit Builder(MergedTree& tree) : tree_(tree), nodes_(tree.nodes_) {
    add(MergedNode{});  // the root: an implicit directory until an entry names it
  }

  void apply(uint32_t layer, const TarEntry& e) {
    layer_ = layer;
    if (e.path.empty()) return apply_root(e);
    auto [dir_path, name] = split_last(e.path);
    if (name.substr(0, kWhiteoutPrefix.size()) == kWhiteoutPrefix) return apply_whiteout(e);
    auto resolved = secure_join(dir_path);
    if (!resolved) return skip(e, "too many symlinks or components in its directory");
    auto dir = walk(*resolved, true);
    if (!dir) return skip(e, "its directory cannot be made (a path through a file)");
    auto existing = tree_.child(*dir, name);
    if (existing && nodes_[*existing].is_dir() && e.type == EntryType::kDir) {
      nodes_[*existing].entry = &e;
      nodes_[*existing].layer = layer;
      return mark_upper(*existing);
    }
    MergedNode node;
    node.parent = *dir;
    if (e.type == EntryType::kHardlink) {
      // Found before anything is removed: a link that cannot be made leaves
      // the path as it was (tar writes `f` then a link `f -> f`).
      auto target = hardlink_target(e.link);
      if (!target) return skip(e, "its target " + e.link + " is not a file");
      if (target == existing) return skip(e, "it links to itself");
      node.entry = nodes_[*target].entry;
      node.layer = nodes_[*target].layer;
      node.inode = nodes_[*target].inode;
    } else {
      node.entry = &e;
      node.layer = layer;
      node.inode = static_cast<uint32_t>(nodes_.size());
    }
    if (existing) nodes_[*dir].children.erase(std::string(name));
    uint32_t index = add(std::move(node));
    nodes_[*dir].children.emplace(std::string(name), index);
    mark_upper(index);
  }

  // Counts links and reachable nodes.
  void finish() {
    std::unordered_map<uint32_t, uint32_t> links;
    std::vector<uint32_t> reachable, stack{kRoot};
    while (!stack.empty()) {
      uint32_t i = stack.back();
      stack.pop_back();
      reachable.push_back(i);
      auto& node = nodes_[i];
      if (!node.is_dir()) {
        ++links[node.inode];
        continue;
      }
      node.nlink = 2;
      for (auto& [_, child] : node.children) {
        if (nodes_[child].is_dir()) ++node.nlink;
        stack.push_back(child);
      }
    }
    for (uint32_t i : reachable) {
      if (!nodes_[i].is_dir()) nodes_[i].nlink = links[nodes_[i].inode];
    }
    tree_.reachable_ = reachable.size();
  }

 private:
  uint32_t mark() const { return layer_ + 1; }

  uint32_t add(MergedNode node) {
    nodes_.push_back(std::move(node));
    upper_.push_back(0);
    return static_cast<uint32_t>(nodes_.size() - 1);
  }

  void skip(const TarEntry& e, const std::string& why) {
    LOG(kWarning) << "Cannot apply " << e.path << " of layer " << layer_ << " ("
                  << tree_.layers_[layer_]->diff_id << "): " << why << "; skipped";
  }

  void apply_root(const TarEntry& e) {
    if (e.type != EntryType::kDir) return skip(e, "the root must stay a directory");
    nodes_[kRoot].entry = &e;
    nodes_[kRoot].layer = layer_;
    mark_upper(kRoot);
  }

  void mark_upper(uint32_t i) {
    for (;;) {
      upper_[i] = mark();
      if (i == kRoot) return;
      i = nodes_[i].parent;
      if (upper_[i] == mark()) return;
    }
  }

  // `.wh.<name>` removes <name> (what lower layers left), `.wh..wh..opq` the
  // lower contents of its directory. A whiteout naming nothing or reaching
  // above its directory (`.wh.`, `.wh..`, `.wh...`) is refused.
  void apply_whiteout(const TarEntry& e) {
    auto [dir_path, name] = split_last(e.path);
    auto resolved = secure_join(dir_path);
    std::optional<uint32_t> dir;
    if (resolved) dir = walk(*resolved, false);
    if (name == kOpaqueMarker) {
      if (dir) remove_lower_children(*dir);
      return;
    }
    auto hidden = name.substr(kWhiteoutPrefix.size());
    if (hidden.empty() || hidden == "." || hidden == "..") {
      return skip(e, "a whiteout must name an entry of its directory");
    }
    if (!dir) return;
    auto target = tree_.child(*dir, hidden);
    if (!target) return;
    if (upper_[*target] != mark()) {
      nodes_[*dir].children.erase(std::string(hidden));
    } else {
      remove_lower_children(*target);
    }
  }

  // SecureJoin (filepath-securejoin, which umoci resolves paths with): the
  // components of `path` from the root with every symlink met followed (an
  // absolute target from the root), `..` taken lexically on what is resolved
  // so far and never above the root, missing components kept as names (so
  // `missing/../etc` is `etc`). nullopt after too many symlinks or components.
  std::optional<std::vector<std::string>> secure_join(std::string_view path) const {
    std::vector<std::string> resolved;
    std::vector<std::optional<uint32_t>> nodes;  // the node of each resolved prefix, if any
    std::vector<std::string> pending;            // components still to walk, last first
    auto push_front = [&pending](std::string_view p) {
      std::vector<std::string> parts;
      while (!p.empty()) {
        auto slash = p.find('/');
        parts.emplace_back(p.substr(0, slash));
        p = slash == std::string_view::npos ? std::string_view() : p.substr(slash + 1);
      }
      pending.insert(pending.end(), parts.rbegin(), parts.rend());
    };
    push_front(path);
    int links = 0;
    size_t steps = 0;
    while (!pending.empty()) {
      if (++steps > kMaxComponents) return std::nullopt;
      std::string part = std::move(pending.back());
      pending.pop_back();
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        if (!resolved.empty()) {
          resolved.pop_back();
          nodes.pop_back();
        }
        continue;
      }
      std::optional<uint32_t> parent =
          nodes.empty() ? std::optional<uint32_t>(kRoot) : nodes.back();
      std::optional<uint32_t> node;
      if (parent && nodes_[*parent].is_dir()) node = tree_.child(*parent, part);
      const TarEntry* entry = node ? nodes_[*node].entry : nullptr;
      if (!entry || entry->type != EntryType::kSymlink) {
        resolved.push_back(std::move(part));
        nodes.push_back(node);
        continue;
      }
      if (++links > kMaxSymlinks) return std::nullopt;
      if (entry->link.starts_with('/')) {
        resolved.clear();
        nodes.clear();
      }
      push_front(entry->link);
    }
    return resolved;
  }

  // The directory at `components` (symlinks already resolved); with
  // `create`, missing directories are made. nullopt through a non-directory.
  std::optional<uint32_t> walk(const std::vector<std::string>& components, bool create) {
    uint32_t cur = kRoot;
    for (const auto& part : components) {
      auto next = tree_.child(cur, part);
      if (!next) {
        if (!create) return std::nullopt;
        MergedNode dir;
        dir.parent = cur;
        dir.inode = static_cast<uint32_t>(nodes_.size());
        uint32_t index = add(std::move(dir));
        nodes_[cur].children.emplace(part, index);
        cur = index;
        continue;
      }
      if (!nodes_[*next].is_dir()) return std::nullopt;
      cur = *next;
    }
    return cur;
  }

  // A hardlink's target: its directory resolved, its last component not (as
  // containerd and GNU tar: a link to a symlink links the symlink).
  std::optional<uint32_t> hardlink_target(std::string_view link) {
    auto [dir_path, name] = split_last(link);
    auto resolved = secure_join(dir_path);
    std::optional<uint32_t> dir;
    if (resolved) dir = walk(*resolved, false);
    if (!dir || name.empty()) return std::nullopt;
    auto target = tree_.child(*dir, name);
    if (!target || nodes_[*target].is_dir()) return std::nullopt;
    return target;
  }

  // Removes what lower layers left under `dir`, keeping what this layer wrote.
  void remove_lower_children(uint32_t dir) {
    if (!nodes_[dir].is_dir()) return;
    std::vector<std::pair<std::string, uint32_t>> children(nodes_[dir].children.begin(),
                                                           nodes_[dir].children.end());
    for (const auto& [name, child] : children) {
      if (upper_[child] != mark()) {
        nodes_[dir].children.erase(name);
      } else {
        remove_lower_children(child);
      }
    }
  }

  MergedTree& tree_;
  std::vector<MergedNode>& nodes_;
  std::vector<uint32_t> upper_;
  uint32_t layer_ = 0;
};

MergedTree::MergedTree(std::vector<std::shared_ptr<const cache::LayerIndex>> layers)
    : layers_(std::move(layers)) {
  Builder builder(*this);
  for (uint32_t i = 0; i < layers_.size(); ++i) {
    for (const auto& entry : layers_[i]->entries) builder.apply(i, entry);
  }
  builder.finish();
}

std::optional<uint32_t> MergedTree::child(uint32_t dir, std::string_view name) const {
  const auto& children = nodes_[dir].children;
  auto it = children.find(name);
  if (it == children.end()) return std::nullopt;
  return it->second;
}

std::optional<uint32_t> MergedTree::find(std::string_view path) const {
  uint32_t cur = kRoot;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto next = child(cur, path.substr(0, slash));
    if (!next) return std::nullopt;
    cur = *next;
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
  }
  return cur;
}

}  // namespace regfs::fs

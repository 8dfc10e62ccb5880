// libFuzzer target: the layer merge (MergedTree) on entries of any shape,
// as LayerStore would hand them over (paths cleaned, hardlink targets
// cleaned, symlink targets raw). The input is text, one entry a line,
// "<type><path>\t<link>" with type f d s h c b p (file, dir, symlink,
// hardlink, char, block, fifo), and a line "|" starting the next layer.
// The tree must never crash, never loop, and never hold a name that could
// leave its directory: every node is reached from the root once, by names
// without '/', "." or "..", and find() of its path gives it back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cache/layer_index.h"
#include "cache/tar_reader.h"
#include "fs/tree/merged_tree.h"
#include "registry/core/log.h"

namespace {

namespace cache = regfs::cache;
using regfs::fs::MergedTree;

constexpr size_t kMaxLayers = 8;
constexpr size_t kMaxEntries = 4000;

std::vector<std::shared_ptr<const cache::LayerIndex>> parse(std::string_view input) {
  std::vector<std::shared_ptr<cache::LayerIndex>> layers{std::make_shared<cache::LayerIndex>()};
  size_t count = 0;
  while (!input.empty() && count < kMaxEntries) {
    auto nl = input.find('\n');
    auto line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    if (line.empty()) continue;
    if (line[0] == '|') {
      if (layers.size() < kMaxLayers) layers.push_back(std::make_shared<cache::LayerIndex>());
      continue;
    }
    cache::TarEntry e;
    switch (line[0]) {
      case 'd':
        e.type = cache::EntryType::kDir;
        break;
      case 's':
        e.type = cache::EntryType::kSymlink;
        break;
      case 'h':
        e.type = cache::EntryType::kHardlink;
        break;
      case 'c':
        e.type = cache::EntryType::kChar;
        break;
      case 'b':
        e.type = cache::EntryType::kBlock;
        break;
      case 'p':
        e.type = cache::EntryType::kFifo;
        break;
      default:
        e.type = cache::EntryType::kFile;
        break;
    }
    line.remove_prefix(1);
    auto tab = line.find('\t');
    e.path = cache::clean_path(line.substr(0, tab));
    if (tab != std::string_view::npos) e.link = std::string(line.substr(tab + 1));
    if (e.type == cache::EntryType::kHardlink) e.link = cache::clean_path(e.link);
    e.size = e.type == cache::EntryType::kFile ? count : 0;
    e.mode = 0644;
    layers.back()->entries.push_back(std::move(e));
    ++count;
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i]->diff_id = "sha256:" + std::string(64, static_cast<char>('0' + i));
  }
  return {layers.begin(), layers.end()};
}

// Walks the tree from the root: each node once, names that stay in their
// directory, parents and find() consistent.
void check(const MergedTree& tree, uint32_t dir, const std::string& path,
           std::set<uint32_t>& seen) {
  if (!seen.insert(dir).second) std::abort();  // a node reached twice: a cycle or a shared dir
  for (const auto& [name, child] : tree.node(dir).children) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
      std::abort();
    }
    std::string child_path = path.empty() ? name : path + "/" + name;
    auto found = tree.find(child_path);
    if (!found || *found != child) std::abort();
    const auto& node = tree.node(child);
    if (node.is_dir()) {
      if (node.parent != dir) std::abort();
      check(tree, child, child_path, seen);
    } else if (!seen.insert(child).second) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = [] {
    regfs::log::set_level(regfs::log::kError);  // skipped entries log warnings
    return true;
  }();
  (void)quiet;
  auto layers = parse(std::string_view(reinterpret_cast<const char*>(data), size));
  MergedTree tree(layers);
  std::set<uint32_t> seen;
  check(tree, MergedTree::kRoot, "", seen);
  if (seen.size() != tree.size()) std::abort();
  if (!tree.node(MergedTree::kRoot).is_dir()) std::abort();
  return 0;
}

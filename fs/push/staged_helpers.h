// Helpers shared by the files of StagingTree (fs/push/staging_*.cc): names
// and paths in a staged tag, small files, errors. Not for other rooms.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fs/push/push_errors.h"
#include "fs/push/staging_tree.h"
#include "fs/tree/path.h"
#include "registry/core/error.h"

namespace regfs::fs::staged {

inline constexpr size_t kMaxSmallFile = 4 << 20;  // index.json, manifest.json
inline constexpr std::string_view kBlobDir = "blobs/sha256/";
// The permission bits of a staged path with no mode in its tag's state, as
// getattr shows them and plan_build puts them in a layer.
inline constexpr uint32_t kDefaultDirMode = 0755;
inline constexpr uint32_t kDefaultFileMode = 0644;

// Records `mode` for `path` in `modes`, none for the default; true if that
// changed `modes`.
inline bool set_mode(std::map<std::string, uint32_t>& modes, const std::string& path, uint32_t mode,
                     uint32_t default_mode) {
  if (mode == default_mode) return modes.erase(path) > 0;
  auto [it, added] = modes.try_emplace(path, mode);
  if (added || it->second == mode) return added;
  it->second = mode;
  return true;
}

inline bool is_hex64(std::string_view name) {
  return name.size() == 64 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// The digest a staged path must have: "sha256:<hex>" for blobs/sha256/<hex>.
inline std::string blob_digest_of(std::string_view path) {
  if (!path.starts_with(kBlobDir) || !is_hex64(path.substr(kBlobDir.size()))) return "";
  return "sha256:" + std::string(path.substr(kBlobDir.size()));
}

inline bool is_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

// Throws Error(kInvalid) for a name no staged tag can keep: .wh.* would be a
// whiteout in a layer (OCI image-spec changesets), deleting rather than
// adding (no layout or docker save has one); a name not UTF-8 (below).
inline void check_stageable_name(std::string_view name) {
  if (name.starts_with(".wh.")) {
    fail(registry::ErrorKind::kInvalid,
         "Cannot stage \"" + std::string(name) +
             "\": names starting with .wh. are whiteouts in an image layer");
  }
  // The staged tag's state is JSON and a layer's PAX path is UTF-8 (POSIX
  // pax, "path" keyword): a name that is not UTF-8 cannot be kept in either.
  try {
    (void)nlohmann::json(std::string(name)).dump();
  } catch (const nlohmann::json::type_error&) {
    fail(registry::ErrorKind::kInvalid,
         "Cannot stage a name that is not UTF-8 (image layers keep UTF-8 paths)");
  }
}

inline bool under(const std::string& key, const std::string& path) {
  return key == path || key.rfind(path + "/", 0) == 0;
}

inline std::optional<std::string> read_small(const std::filesystem::path& file) {
  std::error_code ec;
  auto size = std::filesystem::file_size(file, ec);
  if (ec || size > kMaxSmallFile) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// The permission bits an access ACL (acl(5), the Linux xattr form: a u32
// version 2, then {u16 tag, u16 perm, u32 id} entries) gives a file: owner
// from USER_OBJ, group from MASK if any else GROUP_OBJ, others from OTHER.
inline std::optional<uint32_t> mode_of_acl(const std::string& value) {
  auto u16 = [&](size_t at) {
    return static_cast<uint32_t>(static_cast<unsigned char>(value[at]) |
                                 static_cast<unsigned char>(value[at + 1]) << 8);
  };
  if (value.size() < 4 || (value.size() - 4) % 8 != 0 || u16(0) != 2) return std::nullopt;
  std::optional<uint32_t> user, group, mask, other;
  for (size_t at = 4; at < value.size(); at += 8) {
    uint32_t tag = u16(at), perm = u16(at + 2) & 7;
    if (tag == 0x01) user = perm;
    if (tag == 0x04) group = perm;
    if (tag == 0x10) mask = perm;
    if (tag == 0x20) other = perm;
  }
  if (!user || !group || !other) return std::nullopt;
  return *user << 6 | (mask ? *mask : *group) << 3 | *other;
}

inline bool is_remote_image_dir(const Node& node) {
  return node.kind == NodeKind::kImage || node.kind == NodeKind::kBlobsDir ||
         node.kind == NodeKind::kBlobsAlgDir;
}

// A staged tag that turned into a namespace (mkdir -p ns/repo): its node is
// answered as that namespace.
inline NodePtr promoted_namespace(const cache::StagingArea& area, const Node& node) {
  if (node.kind != NodeKind::kStaged || !node.staged().path.empty()) return nullptr;
  if (area.has_tag({node.registry, node.path, node.reference})) return nullptr;
  std::string path = join(node.path, node.reference);
  if (!area.has_namespace(node.registry, path)) return nullptr;
  auto ns = std::make_shared<Node>();
  ns->kind = NodeKind::kNamespace;
  ns->name = node.name;
  ns->key = node.key;
  ns->registry = node.registry;
  ns->path = path;
  return ns;
}

// The other names of the file, fifo or device `path` (relative to `root`)
// under `root`: its hardlinks, found by inode when it has more than one
// link; empty otherwise. One inode has one mode, owner and set of xattrs, so a change of
// one name's is made to every name's (a layer stores a hardlink's metadata
// once, on the first name).
inline std::vector<std::string> other_names_of(const std::filesystem::path& root,
                                               const std::string& path) {
  struct stat st;
  if (::lstat((root / path).c_str(), &st) != 0 || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode) ||
      st.st_nlink < 2) {
    return {};
  }
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat other;
    if (::lstat(it->path().c_str(), &other) != 0 || other.st_ino != st.st_ino ||
        other.st_dev != st.st_dev) {
      continue;
    }
    auto name = it->path().lexically_relative(root).string();
    if (name != path) names.push_back(name);
  }
  return names;
}

}  // namespace regfs::fs::staged

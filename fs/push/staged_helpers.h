// Helpers shared by the files of StagingTree (fs/push/staging_*.cc): names
// and paths in a staged tag, small files, errors. Not for other rooms.
#pragma once

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "fs/push/staging_tree.h"
#include "fs/tree/path.h"

namespace regfs::fs::staged {

inline constexpr size_t kMaxSmallFile = 4 << 20;  // index.json, manifest.json
inline constexpr std::string_view kBlobDir = "blobs/sha256/";

[[noreturn]] inline void fail(int error, const std::string& message) {
  throw std::system_error(error, std::generic_category(), message);
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

// A staged file named .wh.* would be a whiteout in a layer (OCI image-spec
// changesets): it would delete, not add. No layout or docker save has one.
inline void check_not_whiteout(std::string_view name) {
  if (name.starts_with(".wh.")) {
    fail(EINVAL, "Cannot stage \"" + std::string(name) +
                     "\": names starting with .wh. are whiteouts in an image layer");
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
  if (node.kind != NodeKind::kStaged || !node.staged_path.empty()) return nullptr;
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

}  // namespace regfs::fs::staged

#include "fs/push/staging_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "fs/push/push_plan.h"
#include "registry/digest.h"
#include "registry/error.h"
#include "registry/log.h"
#include "registry/reference.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kMaxSmallFile = 4 << 20;  // index.json, manifest.json
constexpr std::string_view kBlobDir = "blobs/sha256/";
// Tags pushed at once (each push uploads several blobs at once: Pusher).
constexpr size_t kPushThreads = 8;

[[noreturn]] void fail(int error, const std::string& message) {
  throw std::system_error(error, std::generic_category(), message);
}

std::string join(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "/" + std::string(name);
}

bool is_hex64(std::string_view name) {
  return name.size() == 64 && name.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// The digest a staged path must have: "sha256:<hex>" for blobs/sha256/<hex>.
std::string blob_digest_of(std::string_view path) {
  if (!path.starts_with(kBlobDir) || !is_hex64(path.substr(kBlobDir.size()))) return "";
  return "sha256:" + std::string(path.substr(kBlobDir.size()));
}

bool is_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

// A staged file named .wh.* would be a whiteout in a layer (OCI image-spec
// changesets): it would delete, not add. No layout or docker save has one.
void check_not_whiteout(std::string_view name) {
  if (name.starts_with(".wh.")) {
    fail(EINVAL, "Cannot stage \"" + std::string(name) +
                     "\": names starting with .wh. are whiteouts in an image layer");
  }
}

bool under(const std::string& key, const std::string& path) {
  return key == path || key.rfind(path + "/", 0) == 0;
}

std::optional<std::string> read_small(const fsys::path& file) {
  std::error_code ec;
  auto size = fsys::file_size(file, ec);
  if (ec || size > kMaxSmallFile) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// The permission bits an access ACL (acl(5), the Linux xattr form: a u32
// version 2, then {u16 tag, u16 perm, u32 id} entries) gives a file: owner
// from USER_OBJ, group from MASK if any else GROUP_OBJ, others from OTHER.
std::optional<uint32_t> mode_of_acl(const std::string& value) {
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

bool is_remote_image_dir(const Node& node) {
  return node.kind == NodeKind::kImage || node.kind == NodeKind::kBlobsDir ||
         node.kind == NodeKind::kBlobsAlgDir;
}

}  // namespace

// The planner's view of one staged tag (fs/push/push_plan.h).
class StagingTree::Layout : public StagedLayout {
 public:
  Layout(StagingTree& tree, const cache::StagedTag& tag)
      : tree_(tree), tag_(tag), state_(tree.area_.state(tag)) {}

  std::optional<std::string> read_file(const std::string& path) override {
    auto file = tree_.area_.file(tag_, path);
    if (being_written(file)) return std::nullopt;
    std::error_code ec;
    auto size = fsys::file_size(file, ec);
    if (!ec) check_manifest_size(path, static_cast<int64_t>(size));
    return read_small(file);
  }

  std::optional<FileInfo> file_info(const std::string& path) override {
    auto file = tree_.area_.file(tag_, path);
    struct stat st;
    if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || being_written(file)) {
      return std::nullopt;
    }
    return FileInfo{file, st.st_size, tree_.file_digest(file, st)};
  }

  std::optional<PlanBlob> staged_blob(const std::string& digest) override {
    std::string path = std::string(kBlobDir) + std::string(registry::digest_hex(digest));
    if (auto ref = state_.references.find(path); ref != state_.references.end()) {
      return PlanBlob{digest, ref->second.size, PlanBlob::Source::kReference, {}, ref->second};
    }
    auto info = file_info(path);
    if (!info) return std::nullopt;
    if (info->digest != digest) {
      LOG(kWarning) << "Cannot push staged " << path << ": its content is " << info->digest;
      return std::nullopt;
    }
    return PlanBlob{digest, info->size, PlanBlob::Source::kStaged, info->path, {}};
  }

  std::string manifest_bytes(const PlanBlob& blob) override {
    if (blob.source == PlanBlob::Source::kReference) {
      return tree_.content_.registry(blob.reference.registry)
          .manifest(blob.reference.repository, blob.digest);
    }
    check_manifest_size("manifest " + blob.digest, blob.size);
    auto bytes = read_small(blob.file);
    if (!bytes || registry::sha256_digest(*bytes) != blob.digest) {
      throw Error(ErrorKind::kIo, "Cannot read staged manifest " + blob.file.string());
    }
    return *bytes;
  }

  std::string config_bytes(const PlanBlob& blob) override {
    constexpr size_t kMaxConfig = 8 << 20;
    switch (blob.source) {
      case PlanBlob::Source::kInline:
        return blob.bytes;
      case PlanBlob::Source::kReference:
        return tree_.content_.registry(blob.reference.registry)
            .small_blob(blob.reference.repository, blob.digest, blob.size);
      case PlanBlob::Source::kStaged:
        if (auto bytes = read_small(blob.file); bytes && bytes->size() <= kMaxConfig) return *bytes;
        break;
      case PlanBlob::Source::kTarget: {
        std::string bytes;
        tree_.pusher_.client(tag_.registry)
            .get_blob(tag_.repository, blob.digest, 0, 0, [&](const char* data, size_t size) {
              bytes.append(data, size);
              return bytes.size() <= kMaxConfig;
            });
        if (registry::sha256_digest(bytes) == blob.digest) return bytes;
        break;
      }
    }
    throw Error(ErrorKind::kIo, "Cannot read config " + blob.digest);
  }

  bool in_target(const std::string& digest) override {
    auto [it, added] = in_target_.try_emplace(digest, false);
    if (added) {
      it->second = tree_.pusher_.client(tag_.registry).blob_exists(tag_.repository, digest);
    }
    return it->second;
  }

  std::optional<std::string> target_manifest(const std::string& digest) override {
    try {
      return tree_.pusher_.client(tag_.registry).get_manifest(tag_.repository, digest).bytes;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNotFound) return std::nullopt;
      throw;
    }
  }

 private:
  bool being_written(const fsys::path& file) {
    std::shared_ptr<StagedFile::PathState> state;
    {
      std::lock_guard lock(tree_.mutex_);
      auto it = tree_.open_paths_.find(file.string());
      if (it != tree_.open_paths_.end()) state = it->second.lock();
    }
    if (!state) return false;
    std::lock_guard lock(state->mutex);
    return state->dirty;
  }

  StagingTree& tree_;
  const cache::StagedTag tag_;
  const cache::StagedTagState state_;
  std::map<std::string, bool> in_target_;
};

StagingTree::StagingTree(RemoteNames& remote, Content& content, StagingOptions options)
    : tree_(remote),
      content_(content),
      area_(std::move(options.root)),
      pusher_(content, &area_),
      allow_delete_(options.allow_delete),
      push_delay_(options.push_delay),
      build_(std::move(options.build)),
      pushes_(kPushThreads),
      background_(std::make_unique<WorkerPool>(1)) {
  // A push that failed while its registry was down is tried again once it
  // is back (the staged tag keeps its error until then).
  content_.on_registry_up(
      [this](const std::string& registry) { resume_pushes(registry, /*only_failed=*/true); });
  // Tags pushed without error are in the registry now: drop their copies.
  // Not those whose push the daemon did not finish (kill -9, a crash).
  for (auto& tag : area_.all_tags()) {
    auto state = area_.state(tag);
    if (!state.pushed_digest.empty() && state.error.empty() && state.pushing.empty()) {
      LOG(kInfo) << "Dropping staged " << tag.registry << "/" << tag.repository << ":" << tag.tag
                 << ", pushed as " << state.pushed_digest;
      area_.discard_tag(tag);
      std::error_code ec;
      fsys::remove_all(build_dir(tag), ec);
    } else {
      LOG(kInfo) << "Staged tag " << tag.registry << "/" << tag.repository << ":" << tag.tag
                 << (!state.pushing.empty() ? " (push of " + state.pushing + " interrupted)"
                     : !state.error.empty() ? " (push failed: " + state.error + ")"
                                            : " (not pushed yet)");
    }
  }
}

cache::StagedTag StagingTree::tag_of(const Node& node) {
  return {node.registry, node.path, node.reference};
}

NodePtr StagingTree::make_node(const cache::StagedTag& tag, std::string path, std::string key,
                               std::string_view name) {
  struct stat st;
  if (::lstat(area_.file(tag, path).c_str(), &st) != 0) return nullptr;
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kStaged;
  node->name = name;
  node->key = std::move(key);
  node->registry = tag.registry;
  node->path = tag.repository;
  node->reference = tag.tag;
  node->staged_path = std::move(path);
  node->rootfs_type = st.st_mode & S_IFMT;
  return node;
}

NodePtr StagingTree::namespace_node(const Node& dir, std::string_view name) {
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kNamespace;
  node->name = name;
  node->key = dir.key == "/" ? std::string(name) : dir.key + "/" + std::string(name);
  node->registry = dir.registry;
  node->path = join(dir.path, name);
  return node;
}

NodePtr StagingTree::lookup_in_namespace(const Node& dir, std::string_view name) {
  if (!is_name(name) || dir.registry.empty()) return nullptr;
  if (!dir.path.empty()) {
    cache::StagedTag tag{dir.registry, dir.path, std::string(name)};
    if (area_.has_tag(tag)) return make_node(tag, "", dir.key + "/" + std::string(name), name);
  }
  if (area_.has_namespace(dir.registry, join(dir.path, name))) return namespace_node(dir, name);
  return nullptr;
}

// Whether tag.repository is a repository (so tag.tag is one of its tags):
// proven by the registry, or holding other staged tags. (One made by
// promotion may still nest: mkdir -p a/b/c/d makes a/b/c a repository.)
bool StagingTree::repository_of_tags(const cache::StagedTag& tag) {
  auto tags = area_.tags(tag.registry, tag.repository);
  if (tags.size() > 1 || (tags.size() == 1 && tags.front() != tag.tag)) return true;
  return tree_.is_known_repository(tag.registry, tag.repository);
}

bool StagingTree::is_staged_namespace(const std::string& registry, const std::string& path) const {
  return area_.has_namespace(registry, path) && area_.tags(registry, path).empty() &&
         !area_.is_staged_repository(registry, path);
}

void StagingTree::add_to_listing(const Node& dir, std::vector<NodePtr>* entries) {
  if (dir.registry.empty()) return;
  auto add = [&](NodePtr node) {
    if (!node) return;
    for (auto& e : *entries) {
      if (e->name == node->name) {
        if (node->kind == NodeKind::kStaged) e = node;  // staged shadows remote
        return;
      }
    }
    entries->push_back(node);
  };
  if (!dir.path.empty()) {
    for (auto& tag : area_.tags(dir.registry, dir.path)) {
      add(make_node({dir.registry, dir.path, tag}, "", dir.key + "/" + tag, tag));
    }
  }
  for (auto& name : area_.child_namespaces(dir.registry, dir.path)) {
    add(namespace_node(dir, name));
  }
}

// A staged tag that turned into a namespace (mkdir -p ns/repo): its node is
// answered as that namespace.
static NodePtr promoted_namespace(const cache::StagingArea& area, const Node& node) {
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

NodePtr StagingTree::lookup(const Node& dir, std::string_view name) {
  if (auto ns = promoted_namespace(area_, dir)) return tree_.lookup(*ns, name);
  if (!is_name(name)) return nullptr;
  if (dir.overlay) return rootfs_lookup(dir, name);
  auto node =
      make_node(tag_of(dir), join(dir.staged_path, name), dir.key + "/" + std::string(name), name);
  // rootfs/ of a staged copy of an image: unlisted, writable (fs/push/rootfs_overlay.h).
  if (!node && dir.staged_path.empty() && name == kRootfsName) return rootfs_lookup(dir, name);
  return node;
}

std::vector<NodePtr> StagingTree::list(const Node& dir) {
  if (auto ns = promoted_namespace(area_, dir)) return tree_.list(*ns);
  if (dir.overlay) return rootfs_list(dir);
  auto tag = tag_of(dir);
  std::vector<std::string> names;
  std::error_code ec;
  for (auto& entry : fsys::directory_iterator(area_.file(tag, dir.staged_path), ec)) {
    names.push_back(entry.path().filename());
  }
  if (ec) fail(ec.value(), "Cannot list staged " + dir.key);
  std::sort(names.begin(), names.end());
  std::vector<NodePtr> entries;
  for (auto& name : names) {
    if (auto node = make_node(tag, join(dir.staged_path, name), dir.key + "/" + name, name)) {
      entries.push_back(node);
    }
  }
  return entries;
}

Attr StagingTree::attr(const Node& node) {
  if (auto ns = promoted_namespace(area_, node)) return tree_.attr(*ns);
  if (node.overlay) return overlay_for(node)->attr(rootfs_path_of(node));
  auto tag = tag_of(node);
  struct stat st;
  if (::lstat(area_.file(tag, node.staged_path).c_str(), &st) != 0) {
    fail(errno, "Cannot stat staged " + node.key);
  }
  auto state = area_.state(tag);
  auto mode = state.modes.find(node.staged_path);
  Attr attr;
  mode_t perms = S_ISDIR(st.st_mode) ? 0755 : S_ISLNK(st.st_mode) ? 0777 : 0644;
  attr.mode = (st.st_mode & S_IFMT) |
              (mode != state.modes.end() && !S_ISLNK(st.st_mode) ? mode->second : perms);
  attr.size = static_cast<uint64_t>(st.st_size);
  attr.nlink = S_ISDIR(st.st_mode) ? 2 : static_cast<uint32_t>(st.st_nlink);
  attr.own_metadata = true;
  attr.uid = ::getuid();
  attr.gid = ::getgid();
  attr.mtime = st.st_mtim.tv_sec;
  attr.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  return attr;
}

std::optional<std::string> StagingTree::xattr(const Node& node, std::string_view name) {
  if (node.kind != NodeKind::kStaged) return std::nullopt;
  if (node.overlay) return overlay_for(node)->xattr(rootfs_path_of(node), std::string(name));
  if (!node.staged_path.empty() || !std::string_view(name).starts_with("user.regfs.")) {
    auto state = area_.state(tag_of(node));
    auto entry = state.xattrs.find(node.staged_path);
    if (entry == state.xattrs.end()) return std::nullopt;
    auto value = entry->second.find(std::string(name));
    if (value == entry->second.end()) return std::nullopt;
    return value->second;
  }
  if (!area_.has_tag(tag_of(node))) return std::nullopt;  // a tag that became a namespace
  if (name == "user.regfs.state") return state_of(tag_of(node));
  auto state = area_.state(tag_of(node));
  if (name == "user.regfs.error" && !state.error.empty()) return state.error;
  if (name == "user.regfs.digest" && !state.pushed_digest.empty()) return state.pushed_digest;
  return std::nullopt;
}

void StagingTree::setxattr(const Node& node, const std::string& name, const std::string& value,
                           int flags) {
  if (node.kind != NodeKind::kStaged || promoted_namespace(area_, node)) {
    fail(EROFS, "Cannot set " + name + " on " + node.key + ": read-only");
  }
  if (name.starts_with("user.regfs.")) return;  // the mount's own (cp -a of an image dir)
  auto tag = tag_of(node);
  if (node.overlay) {
    auto overlay = overlay_for(node);
    auto path = rootfs_path_of(node);
    if (name == "system.posix_acl_access") {  // a mode, as below
      auto mode = mode_of_acl(value);
      if (!mode) fail(EINVAL, "Cannot set " + name + " on " + node.key + ": not an ACL");
      overlay->chmod(path, (overlay->attr(path).mode & 07000) | *mode);
    } else if (name != "system.posix_acl_default") {
      overlay->setxattr(path, name, value, flags);
    }
    changed(tag);
    return;
  }
  // cp -a, cp -p and sed -i set permissions as an access ACL, which a file
  // system applies to the mode (acl(5)); the mode is what the layer keeps.
  if (name == "system.posix_acl_access") {
    auto mode = mode_of_acl(value);
    if (!mode) fail(EINVAL, "Cannot set " + name + " on " + node.key + ": not an ACL");
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      auto old = s.modes.find(node.staged_path);
      uint32_t special = old != s.modes.end() ? old->second & 07000 : 0;
      s.modes[node.staged_path] = special | *mode;
    });
    changed(tag);
    return;
  }
  if (name == "system.posix_acl_default") return;  // no place in an image layer
  int error = 0;
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    auto& names = s.xattrs[node.staged_path];
    bool present = names.count(name) > 0;
    if ((flags & XATTR_CREATE) && present) {
      error = EEXIST;
    } else if ((flags & XATTR_REPLACE) && !present) {
      error = ENODATA;
    } else {
      names[name] = value;
    }
    if (names.empty()) s.xattrs.erase(node.staged_path);
  });
  if (error) fail(error, "Cannot set " + name + " on " + node.key);
  changed(tag);
}

void StagingTree::removexattr(const Node& node, const std::string& name) {
  if (node.kind != NodeKind::kStaged || promoted_namespace(area_, node)) {
    fail(EROFS, "Cannot remove " + name + " of " + node.key + ": read-only");
  }
  auto tag = tag_of(node);
  if (node.overlay) {
    try {
      overlay_for(node)->removexattr(rootfs_path_of(node), name);
    } catch (const std::system_error& e) {
      // cp -a removes ACLs it did not find: none is kept, so none is missing.
      if (!name.starts_with("system.posix_acl_") || e.code().value() != ENODATA) throw;
    }
    changed(tag);
    return;
  }
  bool removed = false;
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    auto entry = s.xattrs.find(node.staged_path);
    if (entry == s.xattrs.end()) return;
    removed = entry->second.erase(name) > 0;
    if (entry->second.empty()) s.xattrs.erase(entry);
  });
  if (!removed && name.starts_with("system.posix_acl_")) return;  // cp -a removes them: none kept
  if (!removed) fail(ENODATA, "Cannot remove " + name + " of " + node.key + ": not set");
  changed(tag);
}

std::vector<std::string> StagingTree::xattr_names(const Node& node) {
  if (node.overlay) return overlay_for(node)->xattr_names(rootfs_path_of(node));
  std::vector<std::string> names;
  if (node.kind == NodeKind::kStaged) {
    auto state = area_.state(tag_of(node));
    if (auto entry = state.xattrs.find(node.staged_path); entry != state.xattrs.end()) {
      for (auto& [name, _] : entry->second) names.push_back(name);
    }
    if (!node.staged_path.empty()) return names;
  }
  for (const char* name : {"user.regfs.digest", "user.regfs.error", "user.regfs.state"}) {
    if (xattr(node, name)) names.push_back(name);
  }
  return names;
}

NodePtr StagingTree::mkdir(const Node& parent, std::string_view name, mode_t mode, bool by_copy) {
  if (auto ns = promoted_namespace(area_, parent)) return mkdir(*ns, name, mode, by_copy);
  if (!is_name(name)) fail(EINVAL, "Cannot make directory \"" + std::string(name) + "\"");
  check_not_whiteout(name);
  std::string sname(name);
  if (parent.kind == NodeKind::kNamespace && !parent.registry.empty()) {
    if (tree_.lookup(parent, name)) fail(EEXIST, "Cannot make " + sname + ": it exists");
    if (parent.path.empty()) {
      if (!registry::is_valid_path_component(name)) {
        throw Error(ErrorKind::kInvalid, "Cannot make namespace \"" + sname +
                                             "\": not a valid repository name (" +
                                             std::string(registry::kRepositoryGrammar) + ")");
      }
      area_.make_namespace(parent.registry, sname);
      return namespace_node(parent, name);
    }
    if (!registry::is_valid_tag(name)) {
      std::string limit = registry::name_limit_problem(parent.path, name);
      throw Error(
          ErrorKind::kInvalid,
          "Cannot make \"" + sname + "\" in " + parent.path + ": " +
              (limit.empty() ? "not a valid tag (" + std::string(registry::kTagGrammar) + ")"
                             : limit));
    }
    // In a namespace that is no repository, a new directory is most likely a
    // repository to be (mkdir -p ns/app): its name must be one.
    if (!registry::is_valid_path_component(name) &&
        area_.tags(parent.registry, parent.path).empty() &&
        !tree_.is_known_repository(parent.registry, parent.path)) {
      throw Error(ErrorKind::kInvalid, "Cannot make \"" + sname + "\" in " + parent.path +
                                           ": not a valid repository name (" +
                                           std::string(registry::kRepositoryGrammar) + "), and " +
                                           parent.path + " is no repository");
    }
    cache::StagedTag tag{parent.registry, parent.path, sname};
    area_.make_tag(tag);
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      s.modes[""] = mode & 07777;
      s.made_by_copy = by_copy;
    });
    return make_node(tag, "", parent.key + "/" + sname, name);
  }
  if (parent.kind != NodeKind::kStaged) fail(EROFS, "Cannot make " + sname + ": read-only");
  auto tag = tag_of(parent);
  if (parent.overlay) {
    std::string path = join(rootfs_path_of(parent), name);
    auto overlay = overlay_for(parent);
    overlay->mkdir(path, mode);
    changed(tag);
    return rootfs_node(parent, name, path, S_IFDIR);
  }
  std::string path = join(parent.staged_path, name);
  fsys::path dir = area_.file(tag, path);
  struct stat st;
  if (::lstat(dir.c_str(), &st) == 0) fail(EEXIST, "Cannot make " + path + ": it exists");
  // mkdir -p ns/repo made `repo` a tag of ns: a directory in it that an
  // image layout or a docker save directory never has says it is a namespace
  // (a repository) after all, unless ns is a repository itself: then `repo`
  // is its tag and the directory part of what is copied in (a build).
  std::error_code ec;
  if (parent.staged_path.empty() && name != "blobs" && !is_hex64(name) &&
      fsys::is_empty(area_.tag_dir(tag), ec) && !area_.state(tag).made_by_copy &&
      !repository_of_tags(tag)) {
    // Refused rather than staged as a subdirectory that would never be
    // pushed (nothing staged is silently ignored).
    if (!registry::is_valid_path_component(tag.tag)) {
      throw Error(ErrorKind::kInvalid, "Cannot make " + tag.repository + "/" + tag.tag + "/" +
                                           sname + ": \"" + tag.tag +
                                           "\" is not a valid repository name (" +
                                           std::string(registry::kRepositoryGrammar) + ")");
    }
    if (!registry::is_valid_tag(name)) {
      throw Error(ErrorKind::kInvalid, "Cannot make tag \"" + sname + "\" of " + tag.repository +
                                           "/" + tag.tag + ": not a valid tag (" +
                                           std::string(registry::kTagGrammar) + ")");
    }
    std::string limit = registry::name_limit_problem(join(tag.repository, tag.tag), name);
    if (!limit.empty()) {
      throw Error(ErrorKind::kInvalid,
                  "Cannot make " + tag.repository + "/" + tag.tag + ":" + sname + ": " + limit);
    }
    area_.tag_to_namespace(tag);
    cache::StagedTag child{tag.registry, join(tag.repository, tag.tag), sname};
    area_.make_tag(child);
    area_.update_state(child, [&](cache::StagedTagState& s) {
      s.modes[""] = mode & 07777;
      s.made_by_copy = by_copy;
    });
    LOG(kDebug) << "Staged tag " << tag.repository << ":" << tag.tag << " became a namespace";
    return make_node(child, "", parent.key + "/" + sname, name);
  }
  if (::mkdir(dir.c_str(), 0700) != 0) fail(errno, "Cannot make staged " + path);
  area_.update_state(tag, [&](cache::StagedTagState& s) { s.modes[path] = mode & 07777; });
  changed(tag);
  return make_node(tag, path, parent.key + "/" + sname, name);
}

std::shared_ptr<StagedFile::PathState> StagingTree::path_state(const fsys::path& file) {
  std::lock_guard lock(mutex_);
  auto& slot = open_paths_[file.string()];
  auto state = slot.lock();
  if (!state) {
    state = std::make_shared<StagedFile::PathState>();
    slot = state;
  }
  return state;
}

std::shared_ptr<StagedFile> StagingTree::open_file(const cache::StagedTag& tag,
                                                   const std::string& path, int flags,
                                                   mode_t create_mode, const fsys::path& backing) {
  auto handle = std::make_shared<StagedFile>();
  handle->tag = tag;
  handle->path = path;
  handle->file = backing.empty() ? area_.file(tag, path) : backing;
  handle->writable = (flags & O_ACCMODE) != O_RDONLY;
  int open_flags =
      (handle->writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (flags & (O_CREAT | O_EXCL | O_TRUNC));
  handle->fd.reset(::open(handle->file.c_str(), open_flags, 0600));
  if (!handle->fd) fail(errno, "Cannot open staged " + path);
  handle->state = path_state(handle->file);
  bool truncated = handle->writable && (flags & O_TRUNC);
  if (backing.empty() && (flags & O_CREAT || truncated)) {
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      if (flags & O_CREAT) s.modes[path] = create_mode & 07777;
      if (truncated) s.references.erase(path);
    });
  }
  if (truncated) {
    std::lock_guard lock(handle->state->mutex);
    handle->state->hasher.truncated(0);
    handle->state->dirty = true;
  }
  if (!handle->writable) {
    auto state = area_.state(tag);
    if (auto ref = state.references.find(path); ref != state.references.end()) {
      handle->reader = content_.registry(ref->second.registry)
                           .open_blob(ref->second.repository, ref->second.digest, ref->second.size);
    }
  }
  return handle;
}

std::shared_ptr<StagedFile> StagingTree::create(const Node& parent, std::string_view name,
                                                mode_t mode, int flags, NodePtr* node) {
  if (!is_name(name)) fail(EINVAL, "Cannot create \"" + std::string(name) + "\"");
  check_not_whiteout(name);
  if (parent.kind == NodeKind::kNamespace) {
    fail(EPERM, "Cannot create " + std::string(name) + ": files go in a tag directory");
  }
  if (parent.kind != NodeKind::kStaged || promoted_namespace(area_, parent)) {
    fail(EROFS, "Cannot create " + std::string(name) + ": read-only");
  }
  if (parent.overlay) return rootfs_create(parent, name, mode, flags, node);
  auto tag = tag_of(parent);
  std::string path = join(parent.staged_path, name);
  auto handle = open_file(tag, path, flags | O_CREAT, mode);
  *node = make_node(tag, path, parent.key + "/" + std::string(name), name);
  return handle;
}

std::shared_ptr<StagedFile> StagingTree::open(const Node& node, int flags) {
  if (node.kind != NodeKind::kStaged) fail(EROFS, "Cannot open " + node.key + " for writing");
  if (node.overlay) return rootfs_open(node, flags);
  return open_file(tag_of(node), node.staged_path, flags & ~(O_CREAT | O_EXCL), 0);
}

void StagingTree::write(StagedFile& file, const char* data, size_t size, uint64_t offset) {
  {
    std::lock_guard lock(file.state->mutex);
    file.state->dirty = true;
  }
  size_t done = 0;
  while (done < size) {
    ssize_t n =
        ::pwrite(file.fd.get(), data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == ENOSPC) throw Error(ErrorKind::kNoSpace, "Cannot stage " + file.path);
      fail(errno, "Cannot write staged " + file.path);
    }
    done += static_cast<size_t>(n);
  }
  {
    std::lock_guard lock(file.state->mutex);
    file.state->hasher.wrote(offset, data, size);
  }
  {
    std::lock_guard lock(builds_mutex_);
    if (auto it = pending_.find(file.tag); it != pending_.end()) {
      it->second = std::chrono::steady_clock::now() + push_delay_;
    }
  }
  auto state = area_.state(file.tag);
  if (state.references.count(file.path)) {
    area_.update_state(file.tag, [&](cache::StagedTagState& s) { s.references.erase(file.path); });
  }
}

size_t StagingTree::read(StagedFile& file, char* buffer, size_t size, uint64_t offset) {
  if (file.range_length) {  // a file of rootfs/'s base: its range of a layer's tar
    if (offset >= *file.range_length) return 0;
    size = static_cast<size_t>(std::min<uint64_t>(size, *file.range_length - offset));
    offset += file.range_offset;
  }
  if (file.reader) {
    if (offset >= file.reader->size()) return 0;
    auto lease = file.reader->read(offset, size);
    ssize_t n = ::pread(lease.fd(), buffer, lease.length(), static_cast<off_t>(lease.offset()));
    if (n < 0) fail(errno, "Cannot read cached blob for " + file.path);
    return static_cast<size_t>(n);
  }
  ssize_t n = ::pread(file.fd.get(), buffer, size, static_cast<off_t>(offset));
  if (n < 0) fail(errno, "Cannot read staged " + file.path);
  return static_cast<size_t>(n);
}

std::string StagingTree::file_digest(const fsys::path& file, const struct stat& st) {
  {
    std::lock_guard lock(mutex_);
    auto it = hashed_.find(file.string());
    if (it != hashed_.end() && it->second.size == st.st_size &&
        it->second.mtime_ns == mtime_ns(st)) {
      return it->second.digest;
    }
  }
  std::string digest = cache::hash_file(file);
  std::lock_guard lock(mutex_);
  hashed_[file.string()] = Hashed{st.st_size, mtime_ns(st), digest};
  return digest;
}

// config.json written to a staged copy of an image: an invalid one fails
// the close() and the previous one is put back (SPEC §4).
void StagingTree::check_written_config(const cache::StagedTag& tag) {
  auto good = build_dir(tag) / "config.json.good";
  auto file = area_.file(tag, "config.json");
  auto bytes = read_small(file);
  try {
    if (!bytes) throw Error(ErrorKind::kInvalid, "Cannot use config.json: larger than 4 MiB");
    check_config(*bytes);
  } catch (const Error& e) {
    std::error_code ec;
    bool restored = fsys::exists(good, ec) &&
                    fsys::copy_file(good, file, fsys::copy_options::overwrite_existing, ec);
    LOG(kWarning) << e.what() << (restored ? "; the previous config.json is put back" : "");
    throw Error(ErrorKind::kInvalid,
                std::string(e.what()) + (restored ? "; the previous config.json is kept" : ""));
  }
  std::error_code ec;
  fsys::create_directories(good.parent_path(), ec);
  std::ofstream(good, std::ios::binary | std::ios::trunc) << *bytes;
}

void StagingTree::check_blob(StagedFile& file) {
  std::lock_guard lock(file.state->mutex);
  if (!file.state->dirty) return;
  file.state->dirty = false;
  std::string expected = blob_digest_of(file.path);
  if (expected.empty()) return;
  struct stat st;
  if (::fstat(file.fd.get(), &st) != 0) fail(errno, "Cannot stat staged " + file.path);
  auto digest = file.state->hasher.digest(static_cast<uint64_t>(st.st_size));
  if (!digest) digest = cache::hash_file(file.file);
  if (*digest != expected) {
    ::unlink(file.file.c_str());
    forget_paths(file.tag, file.path);
    LOG(kWarning) << "Cannot stage " << file.tag.registry << "/" << file.tag.repository << ":"
                  << file.tag.tag << "/" << file.path << ": its content is " << *digest
                  << "; the file is dropped and will not be pushed";
    throw Error(ErrorKind::kIntegrity, "Cannot stage " + file.path + ": content is " + *digest);
  }
  std::lock_guard hashed_lock(mutex_);
  hashed_[file.file.string()] = Hashed{st.st_size, mtime_ns(st), *digest};
}

// A staged copy of an image whose config.json was written back: the plan
// pushes that config (fs/push/config_edit.h) unless it is one the plan has.
void StagingTree::apply_edited_config(StagedLayout& layout, PushPlan& plan) {
  auto edited = layout.read_file("config.json");
  if (!edited) return;
  std::string original;
  for (const auto& manifest : plan.manifests) {
    if (!registry::is_manifest_media_type(manifest.media_type)) continue;
    auto config = registry::parse_manifest(manifest.bytes).config.digest;
    for (const auto& blob : plan.blobs) {
      if (blob.digest != config) continue;
      if (registry::sha256_digest(*edited) == config) return;
      original = layout.config_bytes(blob);
    }
  }
  if (apply_config_edit(plan, *edited, original)) {
    LOG(kInfo) << "config.json was edited: pushing manifest " << plan.digest();
  }
}

void StagingTree::flush(StagedFile& file) {
  if (!file.writable) return;
  check_blob(file);
  if (file.path == "config.json" && !is_build(area_.tag_dir(file.tag))) {
    check_written_config(file.tag);
  }
  // A layout at the close that completes it; a build later. close() waits
  // for the push without a deadline (op_flush): its result is close()'s.
  push_and_wait(file.tag);
}

void StagingTree::push_if_complete(const cache::StagedTag& tag, bool resuming, bool build_now) {
  // One push at a time of a tag in this mount (the push queue), and one
  // mount at a time of those sharing the cache directory.
  auto shared_lock = area_.lock_push(tag);
  if (!shared_lock || !area_.has_tag(tag)) return;
  const std::string name = tag.registry + "/" + tag.repository + ":" + tag.tag;
  std::string pushed;
  try {
    Layout layout(*this, tag);
    std::string waiting_for;
    std::optional<PushPlan> plan;
    if (is_build(area_.tag_dir(tag))) {
      // A build waits for its quiet time, and for its files to be closed.
      if ((!build_now && !resuming) || being_written(tag)) {
        changed(tag);
        return;
      }
      // An image layout one level down means the tag was meant as a
      // repository: refused, rather than pushed as an image of files.
      std::error_code ec;
      for (const auto& entry : fsys::directory_iterator(area_.tag_dir(tag), ec)) {
        auto has = [&](const char* name) { return fsys::exists(entry.path() / name, ec); };
        if (entry.is_directory(ec) && (has("oci-layout") || has("index.json"))) {
          throw Error(ErrorKind::kInvalid,
                      "Cannot build " + tag.repository + ":" + tag.tag + ": " +
                          entry.path().filename().string() +
                          "/ is an image layout; copy a layout to a tag of its own "
                          "(mkdir -p NAMESPACE/REPO, then cp -r LAYOUT NAMESPACE/REPO/TAG)");
        }
      }
      while_building(tag, [&] {
        auto options = build_;
        options.work_dir = build_dir(tag);
        auto state = area_.state(tag);
        plan = plan_build(area_.tag_dir(tag), state.modes, options, state.xattrs);
      });
    } else {
      // Changes in rootfs/ make a layer: pushed as a build is.
      bool edits = has_rootfs_changes(tag);
      if (edits && ((!build_now && !resuming) || being_written(tag))) {
        changed(tag);
        return;
      }
      plan = plan_push(layout, tag.tag, &waiting_for);
      if (plan) apply_edited_config(layout, *plan);
      if (plan && edits) {
        while_building(tag, [&] { add_rootfs_layer(tag, layout, *plan); });
      }
    }
    {
      std::lock_guard lock(mutex_);
      if (plan) {
        waiting_.erase(tag);
      } else {
        waiting_[tag] = waiting_for;
      }
    }
    if (!plan) return;
    auto state = area_.state(tag);
    if (state.pushed_digest == plan->digest() && state.error.empty() && state.pushing.empty()) {
      return;
    }
    if (resuming) {
      LOG(kInfo) << "Resuming push of " << name << " (" << plan->digest() << ")";
    }
    area_.update_state(tag, [&](cache::StagedTagState& s) { s.pushing = plan->digest(); });
    pusher_.push(tag, *plan);
    pushed = plan->digest();
  } catch (const std::exception& e) {
    std::string reason = e.what();
    // As docker says it, with the account that was used (EACCES for cp).
    if (auto* error = dynamic_cast<const Error*>(&e);
        error && error->kind() == ErrorKind::kUnauthorized) {
      reason = "denied: requested access to the resource is denied (pushing as " +
               content_.account(tag.registry) + "): " + reason;
    }
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      s.error = reason;
      s.pushing.clear();
    });
    LOG(kWarning) << "Cannot " << (resuming ? "resume push of " : "push ") << name << ": " << reason
                  << " (the staged tag is kept; touch a file in it to retry)";
    throw;
  }
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    s.error.clear();
    s.pushing.clear();
    s.pushed_digest = pushed;
    s.uploads.clear();
  });
  if (resuming) {
    LOG(kInfo) << "Resumed push of " << name << ": pushed as " << pushed;
  }
}

Attr StagingTree::setattr(const Node& node, StagedFile* file, const SetAttr& change) {
  if (node.kind != NodeKind::kStaged || promoted_namespace(area_, node)) {
    fail(EROFS, "Cannot change " + node.key + ": read-only");
  }
  if (node.overlay) return rootfs_setattr(node, change);
  auto tag = tag_of(node);
  fsys::path path = area_.file(tag, node.staged_path);
  if (change.size) {
    int rc = file ? ::ftruncate(file->fd.get(), static_cast<off_t>(*change.size))
                  : ::truncate(path.c_str(), static_cast<off_t>(*change.size));
    if (rc != 0) fail(errno, "Cannot truncate staged " + node.staged_path);
    auto state = path_state(path);
    {
      std::lock_guard lock(state->mutex);
      state->hasher.truncated(*change.size);
      state->dirty = true;
    }
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      auto ref = s.references.find(node.staged_path);
      if (ref != s.references.end() && static_cast<uint64_t>(ref->second.size) != *change.size) {
        s.references.erase(ref);
      }
    });
  }
  if (change.mode) {
    area_.update_state(
        tag, [&](cache::StagedTagState& s) { s.modes[node.staged_path] = *change.mode & 07777; });
  }
  if (change.atime || change.mtime) {
    timespec times[2] = {change.atime.value_or(timespec{0, UTIME_OMIT}),
                         change.mtime.value_or(timespec{0, UTIME_OMIT})};
    if (::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      fail(errno, "Cannot set times of staged " + node.staged_path);
    }
  }
  changed(tag);
  return attr(node);
}

void StagingTree::forget_paths(const cache::StagedTag& tag, const std::string& path) {
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    std::erase_if(s.modes, [&](auto& e) { return under(e.first, path); });
    std::erase_if(s.references, [&](auto& e) { return under(e.first, path); });
    std::erase_if(s.xattrs, [&](auto& e) { return under(e.first, path); });
  });
  std::string file = area_.file(tag, path).string();
  std::lock_guard lock(mutex_);
  std::erase_if(hashed_, [&](auto& e) { return under(e.first, file); });
}

NodePtr StagingTree::symlink(const Node& parent, std::string_view name, const std::string& target) {
  if (!is_name(name)) fail(EINVAL, "Cannot make link \"" + std::string(name) + "\"");
  check_not_whiteout(name);
  if (parent.kind != NodeKind::kStaged || promoted_namespace(area_, parent)) {
    fail(parent.kind == NodeKind::kNamespace ? EPERM : EROFS,
         "Cannot make link " + std::string(name) + ": links go in a tag directory");
  }
  auto tag = tag_of(parent);
  if (parent.overlay) {
    std::string path = join(rootfs_path_of(parent), name);
    overlay_for(parent)->symlink(path, target);
    changed(tag);
    return rootfs_node(parent, name, path, S_IFLNK);
  }
  std::string path = join(parent.staged_path, name);
  if (::symlink(target.c_str(), area_.file(tag, path).c_str()) != 0) {
    fail(errno, "Cannot make staged link " + path);
  }
  changed(tag);
  return make_node(tag, path, parent.key + "/" + std::string(name), name);
}

NodePtr StagingTree::link(const Node& node, const Node& new_parent, std::string_view new_name) {
  if (!is_name(new_name)) fail(EINVAL, "Cannot make link \"" + std::string(new_name) + "\"");
  check_not_whiteout(new_name);
  if (node.kind != NodeKind::kStaged || new_parent.kind != NodeKind::kStaged ||
      node.staged_path.empty()) {
    fail(node.kind == NodeKind::kStaged ? EXDEV : EROFS,
         "Cannot link " + node.key + ": hardlinks stay within one staged tag");
  }
  auto tag = tag_of(node);
  auto to_tag = tag_of(new_parent);
  if (to_tag.registry != tag.registry || to_tag.repository != tag.repository ||
      to_tag.tag != tag.tag || promoted_namespace(area_, new_parent)) {
    fail(EXDEV, "Cannot link " + node.key + ": hardlinks stay within one staged tag");
  }
  if (node.overlay != new_parent.overlay) {
    fail(EXDEV, "Cannot link " + node.key + ": hardlinks stay within rootfs/");
  }
  if (node.overlay) {
    std::string to = join(rootfs_path_of(new_parent), new_name);
    overlay_for(node)->link(rootfs_path_of(node), to);
    changed(tag);
    return rootfs_node(new_parent, new_name, to, S_IFREG);
  }
  std::string path = join(new_parent.staged_path, new_name);
  if (::link(area_.file(tag, node.staged_path).c_str(), area_.file(tag, path).c_str()) != 0) {
    fail(errno, "Cannot make staged link " + path);
  }
  // One inode, many names: what the state keeps by path goes with the link.
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    if (auto mode = s.modes.find(node.staged_path); mode != s.modes.end()) {
      s.modes[path] = mode->second;
    }
    if (auto xattrs = s.xattrs.find(node.staged_path); xattrs != s.xattrs.end()) {
      s.xattrs[path] = xattrs->second;
    }
  });
  changed(tag);
  return make_node(tag, path, new_parent.key + "/" + std::string(new_name), new_name);
}

std::string StagingTree::readlink(const Node& node) {
  if (node.overlay) return overlay_for(node)->readlink(rootfs_path_of(node));
  std::string target(4096, '\0');
  ssize_t n =
      ::readlink(area_.file(tag_of(node), node.staged_path).c_str(), target.data(), target.size());
  if (n < 0) fail(errno == EINVAL ? EINVAL : errno, "Cannot read link " + node.key);
  target.resize(static_cast<size_t>(n));
  return target;
}

void StagingTree::unlink(const Node& parent, std::string_view name) {
  if (parent.overlay) {
    overlay_for(parent)->unlink(join(rootfs_path_of(parent), name));
    changed(tag_of(parent));
    return;
  }
  if (parent.kind == NodeKind::kStaged && !promoted_namespace(area_, parent)) {
    auto tag = tag_of(parent);
    std::string path = join(parent.staged_path, name);
    if (::unlink(area_.file(tag, path).c_str()) != 0) fail(errno, "Cannot remove staged " + path);
    forget_paths(tag, path);
    changed(tag);
    return;
  }
  // rm -r of a remote tag with --allow-delete: its files go with the tag
  // (rmdir of the tag directory deletes it); alone they cannot be removed.
  if (allow_delete_ && is_remote_image_dir(parent) && parent.is_tag_image()) return;
  fail(EROFS, "Cannot remove " + std::string(name) + ": read-only (see --allow-delete)");
}

void StagingTree::rmdir(const Node& parent, std::string_view name) {
  if (auto ns = promoted_namespace(area_, parent)) return rmdir(*ns, name);
  std::string sname(name);
  if (parent.overlay) {
    overlay_for(parent)->rmdir(join(rootfs_path_of(parent), name));
    changed(tag_of(parent));
    return;
  }
  if (parent.kind == NodeKind::kStaged) {
    auto tag = tag_of(parent);
    std::string path = join(parent.staged_path, name);
    if (::rmdir(area_.file(tag, path).c_str()) != 0) fail(errno, "Cannot remove staged " + path);
    forget_paths(tag, path);
    changed(tag);
    return;
  }
  if (parent.kind == NodeKind::kNamespace && !parent.registry.empty()) {
    if (!parent.path.empty()) {
      cache::StagedTag tag{parent.registry, parent.path, sname};
      if (area_.has_tag(tag)) {
        std::error_code ec;
        if (!fsys::is_empty(area_.tag_dir(tag), ec)) fail(ENOTEMPTY, "Cannot discard " + sname);
        // A pushed tag is in the registry too: with --allow-delete, rm -r
        // deletes it there as well; otherwise only the staged copy goes.
        if (allow_delete_ && !area_.state(tag).pushed_digest.empty()) {
          pusher_.delete_tag(tag.registry, tag.repository, tag.tag);
        }
        area_.discard_tag(tag);
        {
          std::lock_guard lock(builds_mutex_);
          pending_.erase(tag);
        }
        std::error_code rm_ec;
        fsys::remove_all(build_dir(tag), rm_ec);
        LOG(kInfo) << "Discarded staged " << tag.registry << "/" << tag.repository << ":"
                   << tag.tag;
        return;
      }
    }
    std::string path = join(parent.path, name);
    if (area_.has_namespace(parent.registry, path)) {
      if (!area_.remove_namespace(parent.registry, path)) {
        fail(ENOTEMPTY, "Cannot remove staged namespace " + path);
      }
      return;
    }
    auto node = tree_.lookup(parent, name);
    if (!node) fail(ENOENT, "Cannot remove " + sname + ": no such tag");
    if (node->kind == NodeKind::kImage && node->is_tag_image()) {
      if (!allow_delete_) fail(EROFS, "Cannot delete tag " + sname + ": mount with --allow-delete");
      pusher_.delete_tag(parent.registry, parent.path, sname);
      return;
    }
  }
  if (allow_delete_ && is_remote_image_dir(parent) && parent.is_tag_image()) return;
  fail(EROFS, "Cannot remove " + sname + ": read-only");
}

void StagingTree::rename(const Node& parent, std::string_view name, const Node& new_parent,
                         std::string_view new_name) {
  if (parent.kind != NodeKind::kStaged || new_parent.kind != NodeKind::kStaged) {
    fail(parent.kind == NodeKind::kStaged ? EXDEV : EROFS, "Cannot rename " + std::string(name));
  }
  check_not_whiteout(new_name);
  auto tag = tag_of(parent);
  if (!is_name(new_name) || tag_of(new_parent).tag != tag.tag ||
      tag_of(new_parent).repository != tag.repository || new_parent.registry != parent.registry) {
    fail(EXDEV, "Cannot rename " + std::string(name) + " out of its staged tag");
  }
  if (parent.overlay != new_parent.overlay) {
    fail(EXDEV, "Cannot rename " + std::string(name) + " into or out of rootfs/");
  }
  if (parent.overlay) {
    overlay_for(parent)->rename(join(rootfs_path_of(parent), name),
                                join(rootfs_path_of(new_parent), new_name));
    changed(tag);
    return;
  }
  std::string from = join(parent.staged_path, name);
  std::string to = join(new_parent.staged_path, new_name);
  if (::rename(area_.file(tag, from).c_str(), area_.file(tag, to).c_str()) != 0) {
    fail(errno, "Cannot rename staged " + from);
  }
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    auto move = [&](auto& map) {
      std::erase_if(map, [&](auto& e) { return under(e.first, to); });
      std::vector<std::pair<std::string, typename std::decay_t<decltype(map)>::mapped_type>> moved;
      for (auto& [key, value] : map) {
        if (under(key, from)) moved.emplace_back(to + key.substr(from.size()), value);
      }
      std::erase_if(map, [&](auto& e) { return under(e.first, from); });
      for (auto& [key, value] : moved) map[key] = value;
    };
    move(s.modes);
    move(s.references);
    move(s.xattrs);
  });
  {
    std::lock_guard lock(mutex_);
    hashed_.clear();
  }
  changed(tag);
  // Written under another name and renamed into place (sed -i, editors):
  // the same checks and push as at the close() of a file written in place.
  if (!is_build(area_.tag_dir(tag))) {
    if (to == "config.json") check_written_config(tag);
    push_and_wait(tag);
  }
}

std::optional<uint64_t> StagingTree::copy_reference(const Node& source, uint64_t source_size,
                                                    uint64_t offset_in, StagedFile& out,
                                                    uint64_t offset_out, uint64_t length) {
  if (source.kind != NodeKind::kBlob || offset_in != 0 || offset_out != 0 || length < source_size ||
      !out.writable || blob_digest_of(out.path) != source.blob) {
    return std::nullopt;
  }
  if (::ftruncate(out.fd.get(), static_cast<off_t>(source_size)) != 0) {
    fail(errno, "Cannot stage " + out.path);
  }
  area_.update_state(out.tag, [&](cache::StagedTagState& s) {
    s.references[out.path] = cache::BlobReference{source.registry, source.path, source.blob,
                                                  static_cast<int64_t>(source_size)};
  });
  std::lock_guard lock(out.state->mutex);
  out.state->dirty = false;
  out.state->hasher.truncated(source_size);
  LOG(kDebug) << "Staged " << out.path << " as a reference to " << source.registry << "/"
              << source.path << "@" << source.blob;
  return source_size;
}

}  // namespace regfs::fs

// StagingTree (fs/push/staging_tree.h): what a place of the tree refuses, and
// why, in one place. A namespace (the registry root too) holds only
// namespaces and repositories: a file or a link there is refused (EINVAL,
// SPEC §7's row for names at create), with a log line saying where an image
// goes. An image directory copied to where a namespace goes (`cp -r LAYOUT
// MOUNT/`: LAYOUT becomes a namespace) would make its parts tags: its
// `blobs/` a tag whose top is `sha256/`, a docker save layer directory
// `<hex>/` a tag holding `layer.tar`, `json`, `VERSION`. Such a part (a
// file, a directory or a link), made by a copy at the top of a tag the
// copy made that holds nothing else, is refused the same way and the tag
// discarded, so that nothing of the misplaced
// copy is pushed or kept. A staged namespace takes chmod and utimes without
// keeping them (a registry has no modes or times of namespaces): cp -r adds
// u+w to each directory it makes before filling it. A pushed staged tag is
// the registry's tag: removing in it or it needs --allow-delete (EROFS).
#include <filesystem>
#include <string>

#include "fs/push/staged_helpers.h"
#include "fs/push/staging_tree.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;
using namespace staged;  // NOLINT: fs/push/staged_helpers.h

namespace {

// Where an image goes instead of `dir/...`: NAMESPACE/REPO/TAG, spelled from `dir`.
std::string image_goes_to(const std::string& dir_path) {
  return "an image is copied to NAMESPACE/REPO/TAG (cp -r IMAGE MOUNT/" +
         (dir_path.empty() ? std::string("NAMESPACE") : dir_path) + "/REPO/TAG)";
}

}  // namespace

void StagingTree::refuse_in_namespace(const Node& dir, const std::string& what) {
  std::string where = dir.path.empty() ? "the registry root" : dir.path;
  throw Error(ErrorKind::kInvalid, "Cannot " + what + " in " + where + ": " +
                                       (dir.path.empty() ? "it holds" : "a namespace holds") +
                                       " only namespaces and repositories; " +
                                       image_goes_to(dir.path));
}

void StagingTree::refuse_image_part(const cache::StagedTag& tag, std::string_view name,
                                    bool is_dir) {
  bool layout_blobs = is_dir && tag.tag == "blobs" && (name == "sha256" || name == "sha512");
  bool saved_layer =
      !is_dir && is_hex64(tag.tag) && (name == "layer.tar" || name == "json" || name == "VERSION");
  if (!layout_blobs && !saved_layer) return;
  // Made by a copy and holding nothing but such parts (none yet, or one the
  // copy made as a link before this check ran for it): it goes.
  if (!area_.state(tag).made_by_copy) return;
  std::error_code ec;
  for (const auto& entry : fsys::directory_iterator(area_.tag_dir(tag), ec)) {
    auto part = entry.path().filename().string();
    bool is_part = layout_blobs ? part == "sha256" || part == "sha512"
                                : part == "layer.tar" || part == "json" || part == "VERSION";
    if (!is_part) return;
  }
  if (ec) return;
  area_.discard_tag(tag);
  {
    std::lock_guard lock(builds_mutex_);
    pending_.erase(tag);
  }
  std::string part = tag.repository + "/" + tag.tag;
  throw Error(
      ErrorKind::kInvalid,
      "Cannot copy " + part + "/" + std::string(name) + ": " + part + " is " +
          (layout_blobs ? "an image layout's blobs/ directory" : "a docker save layer directory") +
          ", not a tag: the image was copied into " + tag.repository +
          ", where a namespace holds only namespaces and repositories; " +
          image_goes_to(tag.repository));
}

void StagingTree::refuse_removal_if_pushed(const cache::StagedTag& tag, const std::string& what) {
  if (allow_delete_) return;
  std::string pushed;
  area_.read_state(tag, [&](const cache::StagedTagState& state) {
    if (state.error.empty() && state.pushing.empty()) pushed = state.pushed_digest;
  });
  if (pushed.empty()) return;
  throw Error(ErrorKind::kReadOnly,
              "Cannot " + what + ": " + tag.registry + "/" + tag.repository + ":" + tag.tag +
                  " is pushed (" + pushed +
                  "), and deleting a tag needs --allow-delete (its staged copy is dropped at the "
                  "next mount)");
}

std::optional<Attr> StagingTree::namespace_setattr(const Node& node, const SetAttr& change) {
  NodePtr promoted = promoted_namespace(area_, node);
  const Node* ns = promoted ? promoted.get() : &node;
  if (ns->kind != NodeKind::kNamespace || ns->registry.empty() ||
      !area_.has_namespace(ns->registry, ns->path) || change.size) {
    return std::nullopt;
  }
  LOG(kDebug) << "Namespace " << ns->path << " keeps no mode or times: not kept";
  return tree_.attr(*ns);
}

}  // namespace regfs::fs

// Image directories (SPEC §2): repo/<tag>/ and repo/sha256:<hex>/ with
// oci-layout, index.json, manifest.json, config.json and blobs/sha256/<hex>,
// all made from manifests (fs/tree/image.h), and the way into their unlisted
// rootfs/ (fs/tree/rootfs.h). One part of the tree (fs/tree/tree.h
// dispatches to it by node kind); it keeps the images it loaded.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/source/source.h"
#include "fs/tree/image.h"
#include "fs/tree/tree.h"
#include "registry/core/bounded_map.h"

namespace regfs::fs {

class MergedTree;
class RootfsView;

class ImageDirs {
 public:
  ImageDirs(Source& content, registry::Platform platform);
  ~ImageDirs();
  ImageDirs(const ImageDirs&) = delete;
  ImageDirs& operator=(const ImageDirs&) = delete;

  // The image directory `reference` (a tag or sha256:<hex>) of the
  // repository `repository_dir` (a kNamespace node); checks nothing.
  static NodePtr image_node(const Node& repository_dir, std::string_view reference);
  // The image an image-level node (kImage to kBlob) names, its tag resolved.
  // Throws Error (kNotFound: no such manifest).
  std::shared_ptr<const Image> image_of(const Node& node);
  // The merged tree of image `digest` of registry/repository for the
  // --platform image of an index; nullptr if there is none. Throws Error.
  std::shared_ptr<const MergedTree> image_rootfs(const std::string& registry,
                                                 const std::string& repository,
                                                 const std::string& digest);
  // The merged tree of a kRootfs node's image. Throws Error.
  std::shared_ptr<const MergedTree> rootfs_of(const Node& node);

  // Tree operations on the image-level nodes kImage, kBlobsDir, kBlobsAlgDir,
  // kLayoutFile, kIndexFile, kManifestFile, kConfigFile and kBlob (rootfs/
  // itself is found here; what is under it is the rootfs view's). Throw Error.
  NodePtr lookup(const Node& dir, std::string_view name);
  std::vector<NodePtr> list(const Node& dir);
  Attr attr(const Node& node);
  OpenedFile open(const Node& file);
  // user.regfs.digest and user.regfs.mediaType of kImage and kManifestFile.
  std::optional<std::string> xattr(const Node& node, std::string_view name);
  std::vector<std::string> xattr_names(const Node& node);

 private:
  static NodePtr make_child(const Node& parent, NodeKind kind, std::string_view name,
                            std::string blob = {});
  std::string digest_of(const Node& node);
  std::shared_ptr<const Image> image_at(const std::string& registry, const std::string& repository,
                                        const std::string& digest);

  static constexpr uint64_t kMaxImages = 1024;
  Source& content_;
  const registry::Platform platform_;
  std::shared_ptr<RootfsView> rootfs_;

  std::mutex mutex_;  // guards images_
  // Loaded images by registry/repo@digest, the most recently used kept (a
  // count bound: an evicted image is loaded again from the cached manifests).
  registry::BoundedMap<std::string, std::shared_ptr<const Image>> images_{kMaxImages};
};

}  // namespace regfs::fs

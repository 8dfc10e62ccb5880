// The layer made of the changes to rootfs/ of a staged copy of an image
// (fs/push/rootfs_overlay.h), and its place on the base's layers in the push
// plan. The entries follow the OCI image spec's changeset rules: each upper
// entry with the mode, owner and xattrs kept for it (hardlinks of the upper
// directory as tar hardlinks), `.wh.<name>` for what was removed from the
// base and `.wh..wh..opq` in directories made where the base had one,
// sorted by path so parents come first.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "fs/push/push_errors.h"
#include "fs/push/rootfs_overlay.h"
#include "fs/tree/path.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/manifest.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string name_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::vector<cache::LayerEntry> RootfsOverlay::layer_entries(int64_t* newest) const {
  auto state = changes();
  std::vector<cache::LayerEntry> entries;
  auto empty_file = [](std::string path) {
    cache::LayerEntry entry;
    entry.path = std::move(path);
    entry.type = S_IFREG;
    return entry;
  };
  std::vector<std::string> paths;
  std::error_code ec;
  fsys::path root = upper("");
  if (fsys::exists(root, ec)) {
    for (auto it = fsys::recursive_directory_iterator(root, ec);
         !ec && it != fsys::recursive_directory_iterator(); it.increment(ec)) {
      paths.push_back(it->path().lexically_relative(root).string());
    }
    if (ec) fail_errno(ec.value(), "Cannot list the changes of rootfs/: " + ec.message());
  }
  std::sort(paths.begin(), paths.end());
  cache::HardlinkMap first_link;
  for (const auto& path : paths) {
    fsys::path file = root / path;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0) fail_errno(errno, "Cannot stat rootfs/" + path);
    auto entry = cache::entry_of_file(path, file, st, first_link);
    if (!entry) {
      LOG(kWarning) << "Cannot put rootfs/" << path << " in a layer: not a file, directory or link";
      continue;
    }
    entry->mode = S_ISDIR(st.st_mode) ? 0755 : 0644;
    if (auto meta = state.entries.find(path); meta != state.entries.end()) {
      entry->mode = meta->second.mode;
      entry->uid = meta->second.uid;
      entry->gid = meta->second.gid;
      entry->xattrs = meta->second.xattrs;
    }
    if (newest) *newest = std::max<int64_t>(*newest, st.st_mtim.tv_sec);
    entries.push_back(std::move(*entry));
  }
  for (const auto& dir : state.opaque) {
    entries.push_back(empty_file(join(dir, kOpaqueMarker)));
  }
  for (const auto& path : state.whiteouts) {
    entries.push_back(
        empty_file(join(parent_of(path), std::string(kWhiteoutPrefix) + name_of(path))));
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  return entries;
}

void append_layer(PushPlan& plan, const std::string& config, const cache::WrittenLayer& layer,
                  const fsys::path& file, int64_t created) {
  auto& top = plan.manifests.back();
  if (plan.manifests.size() != 1 || !registry::is_manifest_media_type(top.media_type)) {
    throw Error(ErrorKind::kInvalid, "Cannot add the changes of rootfs/ to an index");
  }
  auto manifest = nlohmann::json::parse(top.bytes);
  auto image_config = nlohmann::json::parse(config);
  std::string media_type = layer.media_type;
  if (top.media_type == registry::media_type::kDockerManifest &&
      media_type == registry::media_type::kOciLayerGzip) {
    media_type = registry::media_type::kDockerLayerGzip;
  }
  nlohmann::json descriptor = {
      {"mediaType", media_type}, {"digest", layer.digest}, {"size", layer.size}};
  if (!layer.annotations.empty()) descriptor["annotations"] = layer.annotations;
  manifest["layers"].push_back(std::move(descriptor));
  image_config["rootfs"]["diff_ids"].push_back(layer.diff_id);
  image_config["history"].push_back(
      {{"created", log::utc_text(created)}, {"created_by", "regfs: changes made in rootfs/"}});
  std::string config_bytes = image_config.dump();
  std::string old_config = manifest["config"].value("digest", "");
  std::string config_digest = registry::sha256_digest(config_bytes);
  manifest["config"]["digest"] = config_digest;
  manifest["config"]["size"] = config_bytes.size();
  std::erase_if(plan.blobs, [&](const PlanBlob& blob) { return blob.digest == old_config; });
  PlanBlob config_blob{config_digest, static_cast<int64_t>(config_bytes.size()),
                       PlanBlob::Source::kInline};
  config_blob.bytes = std::move(config_bytes);
  plan.blobs.push_back(std::move(config_blob));
  plan.blobs.push_back({layer.digest, layer.size, PlanBlob::Source::kStaged, file});
  top.bytes = manifest.dump();
  top.digest = registry::sha256_digest(top.bytes);
}

}  // namespace regfs::fs

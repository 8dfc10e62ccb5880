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
#include <system_error>

#include "fs/push/rootfs_overlay.h"
#include "fs/tree/path.h"
#include "registry/digest.h"
#include "registry/error.h"
#include "registry/log.h"
#include "registry/manifest.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

[[noreturn]] void fail(int error, const std::string& message) {
  throw std::system_error(error, std::generic_category(), message);
}

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
    if (ec) fail(ec.value(), "Cannot list the changes of rootfs/: " + ec.message());
  }
  std::sort(paths.begin(), paths.end());
  cache::HardlinkMap first_link;
  for (const auto& path : paths) {
    fsys::path file = root / path;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0) fail(errno, "Cannot stat rootfs/" + path);
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
    throw Error(ErrorKind::kUnsupported,
                "Cannot add the changes of rootfs/ to a multi-platform image: not supported yet");
  }
  auto manifest = nlohmann::json::parse(top.bytes);
  auto image_config = nlohmann::json::parse(config);
  std::string media_type = layer.media_type;
  if (top.media_type == registry::media_type::kDockerManifest &&
      media_type == registry::media_type::kOciLayerGzip) {
    media_type = registry::media_type::kDockerLayerGzip;
  }
  manifest["layers"].push_back(
      {{"mediaType", media_type}, {"digest", layer.digest}, {"size", layer.size}});
  image_config["rootfs"]["diff_ids"].push_back(layer.diff_id);
  std::time_t t = static_cast<std::time_t>(created);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  image_config["history"].push_back(
      {{"created", when}, {"created_by", "regfs: changes made in rootfs/"}});
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

#include "fs/push/build_plan.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Every entry under `root`, sorted by path (parents before children).
std::vector<cache::LayerEntry> walk(
    const fsys::path& root, const std::map<std::string, uint32_t>& modes,
    const std::map<std::string, std::map<std::string, std::string>>& xattrs, int64_t* newest) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (auto it = fsys::recursive_directory_iterator(root, ec);
       !ec && it != fsys::recursive_directory_iterator(); it.increment(ec)) {
    paths.push_back(it->path().lexically_relative(root).string());
  }
  if (ec) throw Error(ErrorKind::kIo, "Cannot list " + root.string() + ": " + ec.message());
  std::sort(paths.begin(), paths.end());
  std::vector<cache::LayerEntry> entries;
  cache::HardlinkMap first_link;
  for (const auto& path : paths) {
    fsys::path file = root / path;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0) {
      throw Error(ErrorKind::kIo, "Cannot stat " + file.string() + ": " + std::strerror(errno));
    }
    auto entry = cache::entry_of_file(path, file, st, first_link);
    if (!entry) {
      throw Error(ErrorKind::kInvalid, "Cannot build " + path + ": not a file, directory or link");
    }
    auto mode = modes.find(path);
    entry->mode = mode != modes.end() ? mode->second : (S_ISDIR(st.st_mode) ? 0755 : 0644);
    if (auto set = xattrs.find(path); set != xattrs.end()) entry->xattrs = set->second;
    *newest = std::max<int64_t>(*newest, st.st_mtim.tv_sec);
    entries.push_back(std::move(*entry));
  }
  return entries;
}

void write_file(const fsys::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  out.close();
  if (!out) throw Error(ErrorKind::kIo, "Cannot write " + path.string());
}

}  // namespace

bool is_build(const fsys::path& dir) {
  std::error_code ec;
  for (const char* name : {"oci-layout", "index.json", "manifest.json", "blobs"}) {
    if (fsys::exists(fsys::symlink_status(dir / name, ec))) return false;
  }
  return !fsys::is_empty(dir, ec) && !ec;
}

PushPlan plan_build(const fsys::path& root, const std::map<std::string, uint32_t>& modes,
                    const BuildOptions& options,
                    const std::map<std::string, std::map<std::string, std::string>>& xattrs) {
  int64_t newest = 0;
  auto entries = walk(root, modes, xattrs, &newest);
  fsys::create_directories(options.work_dir);
  auto layer = cache::write_layer(entries, options.compression, options.work_dir / "layer",
                                  options.compression_level);
  std::string created = log::utc_text(newest);
  nlohmann::json config = {
      {"created", created},
      {"architecture", options.platform.architecture},
      {"os", options.platform.os},
      {"config", {{"Env", {kDefaultPath}}}},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {layer.diff_id}}}},
      {"history", {{{"created", created}, {"created_by", "regfs: COPY . / (cp -r into the tag)"}}}},
  };
  if (!options.platform.variant.empty()) config["variant"] = options.platform.variant;
  std::string config_bytes = config.dump();
  write_file(options.work_dir / "config", config_bytes);
  std::string config_digest = registry::sha256_digest(config_bytes);
  nlohmann::json layer_descriptor = {
      {"mediaType", layer.media_type}, {"digest", layer.digest}, {"size", layer.size}};
  if (!layer.annotations.empty()) layer_descriptor["annotations"] = layer.annotations;
  nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", registry::media_type::kOciManifest},
      {"config",
       {{"mediaType", registry::media_type::kOciConfig},
        {"digest", config_digest},
        {"size", config_bytes.size()}}},
      {"layers", nlohmann::json::array({layer_descriptor})},
  };
  std::string manifest_bytes = manifest.dump();
  PushPlan plan;
  plan.blobs.push_back({config_digest, static_cast<int64_t>(config_bytes.size()),
                        PlanBlob::Source::kStaged, options.work_dir / "config"});
  plan.blobs.push_back(
      {layer.digest, layer.size, PlanBlob::Source::kStaged, options.work_dir / "layer"});
  plan.manifests.push_back({registry::sha256_digest(manifest_bytes),
                            std::string(registry::media_type::kOciManifest), manifest_bytes});
  return plan;
}

}  // namespace regfs::fs

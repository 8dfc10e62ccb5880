#include "fs/build_plan.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "registry/digest.h"
#include "registry/error.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string rfc3339(int64_t seconds) {
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string read_link(const fsys::path& path) {
  std::string target(4096, '\0');
  ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
  if (n < 0) throw Error(ErrorKind::kIo, "Cannot read link " + path.string());
  target.resize(static_cast<size_t>(n));
  return target;
}

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
  std::map<std::pair<dev_t, ino_t>, std::string> first_link;  // hardlinks
  for (const auto& path : paths) {
    fsys::path file = root / path;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0) {
      throw Error(ErrorKind::kIo, "Cannot stat " + file.string() + ": " + std::strerror(errno));
    }
    cache::LayerEntry entry;
    entry.path = path;
    entry.type = st.st_mode & S_IFMT;
    auto mode = modes.find(path);
    entry.mode = mode != modes.end() ? mode->second : (S_ISDIR(st.st_mode) ? 0755 : 0644);
    entry.mtime = st.st_mtim.tv_sec;
    entry.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    if (auto set = xattrs.find(path); set != xattrs.end()) entry.xattrs = set->second;
    *newest = std::max<int64_t>(*newest, st.st_mtim.tv_sec);
    if (S_ISLNK(st.st_mode)) {
      entry.link_target = read_link(file);
    } else if (S_ISREG(st.st_mode)) {
      entry.source = file;
      if (st.st_nlink > 1) {
        auto [it, added] = first_link.try_emplace({st.st_dev, st.st_ino}, path);
        if (!added) entry.hardlink_to = it->second;
      }
    } else if (!S_ISDIR(st.st_mode)) {
      throw Error(ErrorKind::kInvalid, "Cannot build " + path + ": not a file, directory or link");
    }
    entries.push_back(std::move(entry));
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
  auto layer = cache::write_layer(entries, options.compression, options.work_dir / "layer");
  std::string created = rfc3339(newest);
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
  nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", registry::media_type::kOciManifest},
      {"config",
       {{"mediaType", registry::media_type::kOciConfig},
        {"digest", config_digest},
        {"size", config_bytes.size()}}},
      {"layers",
       {{{"mediaType", layer.media_type}, {"digest", layer.digest}, {"size", layer.size}}}},
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

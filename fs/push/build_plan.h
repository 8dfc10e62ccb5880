// Building by copying (SPEC §4): a staged tag that is neither an OCI layout
// nor a `docker save` directory is a build. Its files become one layer, as a
// Dockerfile `COPY` puts them (regular files, directories, symlinks,
// hardlinks, modes, mtimes; owner root:root), with a config for the mount's
// platform, and an OCI manifest. FUSE-free and network-free: the layer and
// config are written as files under a work directory, so the plan pushes
// them like staged blobs.
//
// The same files, modes and times give the same digest: entries are sorted
// by path, gzip headers carry no time, and the config's `created` is the
// newest mtime of the files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "cache/layer_writer.h"
#include "fs/push/push_plan.h"
#include "registry/manifest.h"

namespace regfs::fs {

// True if the staged tag directory `dir` has none of oci-layout, index.json,
// manifest.json or blobs/ at its top, and holds something.
bool is_build(const std::filesystem::path& dir);

struct BuildOptions {
  registry::Platform platform;
  cache::LayerCompression compression = cache::LayerCompression::kGzip;
  int compression_level = 0;       // --layer-compression-level; 0: cache::default_level
  std::filesystem::path work_dir;  // where the layer and config files are made
};

// The plan that pushes the files under `root` as one image: blobs (config,
// layer) as kStaged files in options.work_dir, the manifest in memory.
// `modes` gives the permission bits users set, by path under `root` (others:
// 0755 for directories, 0644 for files). Throws Error (kIo, kNoSpace).
// `xattrs`: extended attributes users set, by path (SCHILY.xattr in the tar).
PushPlan plan_build(const std::filesystem::path& root, const std::map<std::string, uint32_t>& modes,
                    const BuildOptions& options,
                    const std::map<std::string, std::map<std::string, std::string>>& xattrs = {});

}  // namespace regfs::fs

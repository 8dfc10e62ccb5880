// The FUSE glue: the only code that includes libfuse. Each callback unpacks
// the request, calls the FUSE-free MountTree (fs/push/mount_tree.h), the one
// tree it sees, and replies exactly once; no exception crosses into C (errors
// become errnos in fs/fuse/errno_map.cc).
#pragma once

#include <functional>
#include <memory>

#include "fs/cli/options.h"
#include "fs/push/mount_tree.h"
#include "fs/source/content.h"

namespace regfs::fs {

// What a mount serves: the one tree the glue sees, over `content` (destroyed
// last).
struct Served {
  std::unique_ptr<Content> content;
  std::unique_ptr<MountTree> tree;
};

// Mounts options.mountpoint, daemonizes unless options.foreground (the parent
// exits 0 once the mount is ready), calls `build` (after the fork: threads
// and connections do not survive one) and serves until unmounted or signalled.
// Returns the process exit code.
int mount_and_serve(const MountOptions& options, const std::function<Served()>& build);

}  // namespace regfs::fs

// The FUSE glue: the only code that includes libfuse. Each callback unpacks
// the request, calls the FUSE-free Tree, and replies exactly once; no
// exception crosses into C (errors become errnos in fs/fuse/errno_map.cc).
#pragma once

#include <functional>
#include <memory>

#include "fs/cli/options.h"
#include "fs/push/staging_tree.h"
#include "fs/source/content.h"
#include "fs/tree/tree.h"

namespace regfs::fs {

// What a mount serves; destroyed staged side first, content last.
struct Served {
  std::unique_ptr<Content> content;
  std::unique_ptr<Tree> tree;
  std::unique_ptr<StagingTree> staging;  // set_staged of `tree`
};

// Mounts options.mountpoint, daemonizes unless options.foreground (the parent
// exits 0 once the mount is ready), calls `build` (after the fork: threads
// and connections do not survive one) and serves until unmounted or signalled.
// Returns the process exit code.
int mount_and_serve(const MountOptions& options, const std::function<Served()>& build);

}  // namespace regfs::fs

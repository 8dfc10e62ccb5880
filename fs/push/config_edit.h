// The config is a file (SPEC §4): `config.json` of a staged copy of an image
// may be written back edited (Cmd, Entrypoint, Env, WorkingDir, User,
// Labels, ExposedPorts, Volumes, StopSignal, ...), and the image pushed is
// the copied one with that config, as `crane mutate` makes it: the same
// layers, `rootfs.diff_ids` and `history` kept from the image's own config
// (they describe the layers, which an edit does not change), a new
// manifest. Fields are checked against the image spec's config (OCI
// image-spec config.md); FUSE-free and network-free.
#pragma once

#include <string>

#include "fs/push/push_plan.h"

namespace regfs::fs {

// Throws Error(kInvalid) naming what is wrong if `bytes` is no image
// config: not a JSON object, or a field of `config` of the wrong type.
void check_config(const std::string& bytes);

// Applies the edited `config_json` to `plan` (one image manifest, pushed as
// the tag): `original` is its config's bytes. Returns false, leaving the
// plan as it is, when the edit changes nothing. Throws Error(kInvalid) for
// an invalid config, or for a plan of an index (narrow_to_platform first).
bool apply_config_edit(PushPlan& plan, const std::string& config_json, const std::string& original);

}  // namespace regfs::fs

// What `regfs status MOUNTPOINT` shows: the daemon writes it as JSON into the
// unlisted MOUNT/.regfs/status file (made afresh at each open), and the
// command formats it: cache use, transfers in flight with progress and rate,
// each registry's health (up or down, since when, the last error), recent
// warnings and errors.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fs/source/content.h"

namespace regfs::fs {

// The status document of a mount serving `what` ("localhost:5000", ...),
// with each staged tag ("registry/repository:tag") and its state, and
// whether it was mounted --read-only (it stays so after a remount rw).
std::string status_json(Content& content, const std::string& what,
                        const std::vector<std::pair<std::string, std::string>>& staged = {},
                        bool read_only = false);
// The human form of a status document; throws on malformed JSON.
std::string format_status(const std::string& json, const std::string& mountpoint);
// What `regfs umount` says when the pushes before unmounting failed, read
// from the status document before the mount goes: each staged tag not
// pushed and its state, where they stay and the log file (lines, each
// ending in a newline; empty if every staged tag is pushed). Throws on
// malformed JSON.
std::string format_unpushed(const std::string& json);
// The pid of the daemon that wrote a status document; 0 if it is malformed.
int64_t status_pid(const std::string& json);

}  // namespace regfs::fs

// What `regfs status MOUNTPOINT` shows: the daemon writes it as JSON into the
// unlisted MOUNT/.regfs/status file (made afresh at each open), and the
// command formats it: cache use, transfers in flight with progress and rate,
// each registry's health (up or down, since when, the last error), recent
// warnings and errors.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "fs/source/content.h"

namespace regfs::fs {

// The status document of a mount serving `what` ("localhost:5000", ...),
// with each staged tag ("registry/repository:tag") and its state.
std::string status_json(Content& content, const std::string& what,
                        const std::vector<std::pair<std::string, std::string>>& staged = {});
// The human form of a status document; throws on malformed JSON.
std::string format_status(const std::string& json, const std::string& mountpoint);

}  // namespace regfs::fs

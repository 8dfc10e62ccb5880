// The push half of the distribution API over a Transport (Client's push
// methods delegate here): blob existence, cross-repository mounts,
// monolithic and chunked blob uploads, manifest PUT and DELETE. Every
// request asks for a "pull,push" token on the target repository (and "pull"
// on a mount source), so one token covers a whole push.
//
// Registries answer uploads differently and networks lose answers, so a
// step succeeds on any 2xx a distribution client accepts for it, and a step
// whose answer was lost is never resent blindly: the registry is asked
// where it stands first (see upload.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "registry/client.h"

namespace regfs::registry {

class Transport;

namespace upload {

// What a registry has shown about uploads, kept for its later pushes.
struct Habits {
  // It refused a chunk (405 on PATCH): blobs go up in one PUT.
  std::atomic<bool> whole_blobs_only{false};
};

bool blob_exists(Transport& transport, std::string_view repository, std::string_view digest);
bool mount_blob(Transport& transport, std::string_view repository, std::string_view digest,
                std::string_view from);
void upload_blob(Transport& transport, Habits& habits, std::string_view repository,
                 std::string_view digest, uint64_t size, const BlobSource& source,
                 const UploadJournal* journal = nullptr);
std::string put_manifest(Transport& transport, std::string_view repository,
                         std::string_view reference, std::string_view bytes,
                         std::string_view media_type);
void delete_manifest(Transport& transport, std::string_view repository, std::string_view reference);

// `location` with the digest query parameter a closing PUT carries.
std::string with_digest(std::string_view location, std::string_view digest);
// The offset after the last byte of an upload session's Range header
// ("0-<last>", also "bytes=0-<last>"); nullopt when there is none or it is
// malformed. "0-0" counts as nothing received (distribution sends it for an
// empty session).
std::optional<uint64_t> received_bytes(std::string_view range);

}  // namespace upload
}  // namespace regfs::registry

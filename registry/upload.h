// The push half of the distribution API over a Transport (Client's push
// methods delegate here): blob existence, cross-repository mounts,
// monolithic and chunked blob uploads, manifest PUT and DELETE. Every
// request asks for a "pull,push" token on the target repository (and "pull"
// on a mount source), so one token covers a whole push.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "registry/client.h"

namespace regfs::registry {

class Transport;

namespace upload {

bool blob_exists(Transport& transport, std::string_view repository, std::string_view digest);
bool mount_blob(Transport& transport, std::string_view repository, std::string_view digest,
                std::string_view from);
void upload_blob(Transport& transport, std::string_view repository, std::string_view digest,
                 uint64_t size, const BlobSource& source);
std::string put_manifest(Transport& transport, std::string_view repository,
                         std::string_view reference, std::string_view bytes,
                         std::string_view media_type);
void delete_manifest(Transport& transport, std::string_view repository, std::string_view reference);

// `location` with the digest query parameter a closing PUT carries.
std::string with_digest(std::string_view location, std::string_view digest);

}  // namespace upload
}  // namespace regfs::registry

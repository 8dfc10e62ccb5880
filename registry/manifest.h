// The OCI image model: media types, descriptors, manifests, indexes,
// platforms. Parsers keep the fields regfs uses and validate what they keep;
// the bytes themselves are always kept elsewhere exactly as served.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace regfs::registry {

namespace media_type {
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerSchema1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerSchema1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
}  // namespace media_type

bool is_index_media_type(std::string_view media_type);
bool is_manifest_media_type(std::string_view media_type);
// The Accept header for manifest requests: OCI and Docker schema 2 manifests
// and indexes (schema 1 is not accepted).
std::string manifest_accept_header();

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;            // may be empty
  std::string to_string() const;  // "linux/arm64/v8"
  bool operator==(const Platform&) const = default;
};
// "os/arch[/variant]"; throws Error(kInvalid).
Platform parse_platform(std::string_view text);
// The platform this binary runs on (linux/amd64, linux/arm64/v8, ...).
Platform host_platform();

struct Descriptor {
  std::string media_type;
  std::string digest;  // validated by the parsers
  int64_t size = 0;    // validated non-negative
  std::optional<Platform> platform;
  std::map<std::string, std::string> annotations;
  std::vector<std::string> urls;  // where a foreign layer may be fetched from
};

struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
};

struct Index {
  std::string media_type;
  std::vector<Descriptor> manifests;
};

// The media type of manifest bytes: the "mediaType" field if present, else the
// Content-Type the registry sent, else guessed from the shape (a "manifests"
// array is an OCI index, a "config" an OCI manifest).
std::string detect_media_type(std::string_view bytes, std::string_view content_type);

// Parse manifest/index bytes. Throw Error(kInvalid) for malformed JSON or bad
// descriptors, Error(kUnsupported) for schema 1 or unknown types.
Manifest parse_manifest(std::string_view bytes);
Index parse_index(std::string_view bytes);

// The index entry for `want`: exact os/arch/variant first, then os/arch with
// any variant (arm64 defaults to v8, as containerd matches). nullptr if none.
const Descriptor* select_platform(const Index& index, const Platform& want);

// Whether the nested index `child` of an index is searched for the platform's
// image: it is the entry select_platform chose (`chosen`), or none was chosen
// and it names no platform (the rule containerd follows for nested indexes).
inline bool searched_for_platform(const Descriptor& child, const Descriptor* chosen) {
  return &child == chosen || (!chosen && !child.platform);
}

}  // namespace regfs::registry

// Parsers for image manifests and indexes (OCI and Docker schema 2) and
// platform matching. Input is capped at 4 MiB, as containerd caps manifests;
// every descriptor kept has a valid sha256 digest and a non-negative size.
#include "registry/manifest.h"

#include <nlohmann/json.hpp>

#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::registry {
namespace {

using nlohmann::json;

constexpr size_t kMaxManifestSize = 4 << 20;

Error invalid(std::string_view what, std::string_view why) {
  return Error(ErrorKind::kInvalid, "Cannot parse " + std::string(what) + ": " + std::string(why));
}

json parse_json(std::string_view bytes, std::string_view what) {
  if (bytes.size() > kMaxManifestSize) {
    throw invalid(what, "larger than 4 MiB");
  }
  json doc = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) throw invalid(what, "malformed JSON");
  if (!doc.is_object()) throw invalid(what, "not a JSON object");
  return doc;
}

std::string string_field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string required_string(const json& object, const char* key, std::string_view what) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    throw invalid(what, std::string("missing or bad \"") + key + "\"");
  }
  return it->get<std::string>();
}

Platform parse_platform_object(const json& object, std::string_view what) {
  if (!object.is_object()) throw invalid(what, "\"platform\" is not an object");
  Platform platform;
  platform.os = required_string(object, "os", what);
  platform.architecture = required_string(object, "architecture", what);
  platform.variant = string_field(object, "variant");
  return platform;
}

Descriptor parse_descriptor(const json& object, std::string_view what) {
  if (!object.is_object()) throw invalid(what, "descriptor is not an object");
  Descriptor d;
  d.media_type = required_string(object, "mediaType", what);
  d.digest = required_string(object, "digest", what);
  if (!is_valid_digest(d.digest)) {
    throw invalid(what, "unsupported or malformed digest \"" + d.digest + "\"");
  }
  auto size = object.find("size");
  if (size == object.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    throw invalid(what, "missing or negative \"size\" of " + d.digest);
  }
  d.size = size->get<int64_t>();
  if (auto p = object.find("platform"); p != object.end() && !p->is_null()) {
    d.platform = parse_platform_object(*p, what);
  }
  if (auto a = object.find("annotations"); a != object.end() && a->is_object()) {
    for (const auto& [key, value] : a->items()) {
      if (value.is_string()) d.annotations[key] = value.get<std::string>();
    }
  }
  if (auto u = object.find("urls"); u != object.end() && u->is_array()) {
    for (const auto& url : *u) {
      if (url.is_string()) d.urls.push_back(url.get<std::string>());
    }
  }
  return d;
}

bool is_schema1(const json& doc, std::string_view media_type) {
  if (media_type == media_type::kDockerSchema1 || media_type == media_type::kDockerSchema1Signed) {
    return true;
  }
  auto version = doc.find("schemaVersion");
  return version != doc.end() && version->is_number_integer() && version->get<int>() == 1;
}

std::string media_type_of(const json& doc, std::string_view content_type) {
  std::string field = string_field(doc, "mediaType");
  if (!field.empty()) return field;
  std::string_view type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  if (!type.empty() && type != "application/json" && type != "text/plain" &&
      type != "application/octet-stream") {
    return std::string(type);
  }
  if (doc.contains("manifests")) return std::string(media_type::kOciIndex);
  if (doc.contains("config")) return std::string(media_type::kOciManifest);
  if (doc.contains("fsLayers") || is_schema1(doc, "")) {
    return std::string(media_type::kDockerSchema1);
  }
  return std::string(type);
}

void check_type(const json& doc, const std::string& media_type, std::string_view what,
                bool want_index) {
  if (is_schema1(doc, media_type)) {
    throw Error(ErrorKind::kUnsupported, "Cannot parse " + std::string(what) +
                                             ": Docker schema 1 manifests are not supported");
  }
  if (want_index ? is_manifest_media_type(media_type) : is_index_media_type(media_type)) {
    throw invalid(what,
                  want_index ? "it is a manifest, not an index" : "it is an index, not a manifest");
  }
  if (!(want_index ? is_index_media_type(media_type) : is_manifest_media_type(media_type))) {
    throw Error(ErrorKind::kUnsupported, "Cannot parse " + std::string(what) +
                                             ": unsupported media type \"" + media_type + "\"");
  }
}

// Variants that mean the same: containerd's normalisation.
std::string normal_variant(const Platform& p) {
  if (p.architecture == "arm64" && (p.variant.empty() || p.variant == "8")) {
    return "v8";
  }
  if (p.architecture == "amd64" && p.variant == "v1") return "";
  if (p.architecture == "arm" && p.variant.empty()) return "v7";
  return p.variant;
}

}  // namespace

bool is_index_media_type(std::string_view media_type) {
  return media_type == media_type::kOciIndex || media_type == media_type::kDockerManifestList;
}

bool is_manifest_media_type(std::string_view media_type) {
  return media_type == media_type::kOciManifest || media_type == media_type::kDockerManifest;
}

std::string manifest_accept_header() {
  std::string out;
  for (auto type : {media_type::kOciIndex, media_type::kOciManifest,
                    media_type::kDockerManifestList, media_type::kDockerManifest}) {
    if (!out.empty()) out += ", ";
    out += type;
  }
  return out;
}

std::string Platform::to_string() const {
  std::string out = os + "/" + architecture;
  if (!variant.empty()) out += "/" + variant;
  return out;
}

Platform parse_platform(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.emplace_back(text.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  bool ok = (parts.size() == 2 || parts.size() == 3);
  for (const auto& part : parts) ok = ok && !part.empty();
  if (!ok) {
    throw Error(ErrorKind::kInvalid,
                "Cannot parse platform \"" + std::string(text) + "\": expected OS/ARCH[/VARIANT]");
  }
  return Platform{parts[0], parts[1], parts.size() == 3 ? parts[2] : ""};
}

Platform host_platform() {
  Platform p{"linux", "", ""};
#if defined(__x86_64__)
  p.architecture = "amd64";
#elif defined(__aarch64__)
  p.architecture = "arm64";
  p.variant = "v8";
#elif defined(__arm__)
  p.architecture = "arm";
#if defined(__ARM_ARCH) && __ARM_ARCH >= 7
  p.variant = "v7";
#elif defined(__ARM_ARCH) && __ARM_ARCH == 6
  p.variant = "v6";
#else
  p.variant = "v5";
#endif
#elif defined(__i386__)
  p.architecture = "386";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  p.architecture = "ppc64le";
#elif defined(__s390x__)
  p.architecture = "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  p.architecture = "riscv64";
#else
  p.architecture = "unknown";
#endif
  return p;
}

std::string detect_media_type(std::string_view bytes, std::string_view content_type) {
  json doc;
  if (bytes.size() <= kMaxManifestSize) {
    doc = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  }
  if (!doc.is_object()) doc = json::object();
  return media_type_of(doc, content_type);
}

Manifest parse_manifest(std::string_view bytes) {
  constexpr std::string_view kWhat = "image manifest";
  json doc = parse_json(bytes, kWhat);
  Manifest manifest;
  manifest.media_type = media_type_of(doc, "");
  check_type(doc, manifest.media_type, kWhat, /*want_index=*/false);
  auto config = doc.find("config");
  if (config == doc.end()) throw invalid(kWhat, "missing \"config\"");
  manifest.config = parse_descriptor(*config, kWhat);
  auto layers = doc.find("layers");
  if (layers == doc.end() || !layers->is_array()) {
    throw invalid(kWhat, "missing \"layers\"");
  }
  for (const auto& layer : *layers) {
    manifest.layers.push_back(parse_descriptor(layer, kWhat));
  }
  return manifest;
}

Index parse_index(std::string_view bytes) {
  constexpr std::string_view kWhat = "image index";
  json doc = parse_json(bytes, kWhat);
  Index index;
  index.media_type = media_type_of(doc, "");
  check_type(doc, index.media_type, kWhat, /*want_index=*/true);
  auto manifests = doc.find("manifests");
  if (manifests == doc.end() || !manifests->is_array()) {
    throw invalid(kWhat, "missing \"manifests\"");
  }
  for (const auto& entry : *manifests) {
    index.manifests.push_back(parse_descriptor(entry, kWhat));
  }
  return index;
}

const Descriptor* select_platform(const Index& index, const Platform& want) {
  const Descriptor* same_arch = nullptr;
  for (const auto& d : index.manifests) {
    if (!d.platform || d.platform->os != want.os || d.platform->architecture != want.architecture) {
      continue;
    }
    if (normal_variant(*d.platform) == normal_variant(want)) return &d;
    if (!same_arch) same_arch = &d;
  }
  return same_arch;
}

}  // namespace regfs::registry

#include "fs/cli/options.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include "registry/core/error.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace regfs::fs {

namespace {

// Bounds of --upload-chunk-size: ECR and S3 refuse parts under 5 MiB.
constexpr uint64_t kMinUploadChunk = 5ull << 20;
constexpr uint64_t kMaxUploadChunk = 4ull << 30;

// Options that take a value, by their long name without dashes.
const std::set<std::string> kValued = {"cache-dir",
                                       "cache-size",
                                       "insecure",
                                       "ca-cert",
                                       "auth-file",
                                       "platform",
                                       "tag-ttl",
                                       "mirror",
                                       "request-timeout",
                                       "upload-chunk-size",
                                       "push-delay",
                                       "layer-compression",
                                       "layer-compression-level"};
const std::set<std::string> kFlags = {"allow-delete", "no-urls", "foreground", "debug",
                                      "read-only"};

std::string underscores_to_dashes(std::string name) {
  for (auto& c : name) {
    if (c == '_') c = '-';
  }
  return name;
}

std::string checked_registry(const std::string& text) {
  std::string canonical = registry::canonical_registry(text);
  if (canonical.empty() || canonical.find('/') != std::string::npos ||
      canonical.find_first_of(" \t@") != std::string::npos) {
    throw UsageError("invalid registry '" + text + "': expected a host with an optional port");
  }
  return canonical;
}

void set_option(MountOptions& options, const std::string& name, const std::string& value) {
  if (name == "cache-dir") {
    options.cache_dir = value;
  } else if (name == "cache-size") {
    options.cache_size = parse_size(value);
  } else if (name == "insecure") {
    options.insecure.push_back(checked_registry(value));
  } else if (name == "ca-cert") {
    options.ca_cert = value;
  } else if (name == "auth-file") {
    options.auth_file = value;
  } else if (name == "platform") {
    try {
      registry::parse_platform(value);
    } catch (const registry::Error&) {
      throw UsageError("invalid --platform '" + value + "': expected OS/ARCH[/VARIANT]");
    }
    options.platform = value;
  } else if (name == "upload-chunk-size") {
    uint64_t bytes = parse_size(value);
    if (bytes < kMinUploadChunk || bytes > kMaxUploadChunk) {
      throw UsageError("invalid --upload-chunk-size '" + value +
                       "': expected 5M to 4G (registries such as ECR refuse parts under 5 MiB "
                       "but the last)");
    }
    options.upload_chunk_size = bytes;
  } else if (name == "push-delay") {
    char* end = nullptr;
    double seconds = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !(seconds >= 0) || seconds > 86400) {
      throw UsageError("invalid --push-delay '" + value + "': expected seconds");
    }
    options.push_delay = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  } else if (name == "layer-compression") {
    if (value != "gzip" && value != "zstd" && value != "estargz") {
      throw UsageError("invalid --layer-compression '" + value +
                       "': expected gzip, zstd or estargz");
    }
    options.layer_compression = value;
  } else if (name == "layer-compression-level") {
    char* end = nullptr;
    long level = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || level < 1 || level > 19) {
      throw UsageError("invalid --layer-compression-level '" + value +
                       "': expected 1 to 9 for gzip, 1 to 19 for zstd");
    }
    options.layer_compression_level = static_cast<int>(level);
  } else if (name == "tag-ttl") {
    char* end = nullptr;
    long seconds = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || seconds < 0) {
      throw UsageError("invalid --tag-ttl '" + value + "': expected seconds");
    }
    options.tag_ttl = std::chrono::seconds(seconds);
  } else if (name == "request-timeout") {
    char* end = nullptr;
    double seconds = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !(seconds > 0) || seconds > 86400) {
      throw UsageError("invalid --request-timeout '" + value + "': expected seconds");
    }
    options.request_timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  } else if (name == "mirror") {
    auto eq = value.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
      throw UsageError("invalid --mirror '" + value + "': expected REGISTRY=MIRROR");
    }
    options.mirrors.emplace_back(checked_registry(value.substr(0, eq)),
                                 checked_registry(value.substr(eq + 1)));
  } else if (name == "allow-delete") {
    options.allow_delete = true;
  } else if (name == "read-only") {
    options.read_only = true;
  } else if (name == "no-urls") {
    options.no_urls = true;
  } else if (name == "foreground") {
    options.foreground = true;
  } else if (name == "debug") {
    options.debug = true;
  }
}

// One -o list: our options by name, the rest for libfuse.
void parse_dash_o(MountOptions& options, const std::string& list) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? comma : comma - start);
    start = comma == std::string::npos ? list.size() + 1 : comma + 1;
    if (item.empty()) continue;
    auto eq = item.find('=');
    std::string name = underscores_to_dashes(item.substr(0, eq));
    if (kValued.count(name)) {
      if (eq == std::string::npos) throw UsageError("option -o " + item + " needs a value");
      set_option(options, name, item.substr(eq + 1));
    } else if (kFlags.count(name)) {
      set_option(options, name, "");
    } else if (name == "ro") {  // as mount(8) says it
      set_option(options, "read-only", "");
    } else {
      options.fuse_options.push_back(item);
    }
  }
}

}  // namespace

uint64_t parse_size(const std::string& text) {
  char* end = nullptr;
  double number = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || number < 0 || !std::isfinite(number)) {
    throw UsageError("invalid size '" + text + "': expected a number like 512M or 20G");
  }
  static const std::map<std::string, int> kShift = {
      {"", 0},     {"B", 0},  {"K", 10},  {"KB", 10},  {"KiB", 10}, {"M", 20},  {"MB", 20},
      {"MiB", 20}, {"G", 30}, {"GB", 30}, {"GiB", 30}, {"T", 40},   {"TB", 40}, {"TiB", 40}};
  std::string unit = end;
  if (unit.size() == 1) unit[0] = static_cast<char>(std::toupper(unsigned(unit[0])));  // 5m, 20g
  auto it = kShift.find(unit);
  if (it == kShift.end()) {
    throw UsageError("invalid size '" + text + "': unit must be K, M, G or T");
  }
  return static_cast<uint64_t>(number * static_cast<double>(1ull << it->second));
}

std::string default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    return std::string(xdg) + "/regfs";
  }
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.cache/regfs";
}

MountOptions parse_mount_args(const std::vector<std::string>& args) {
  MountOptions options;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto next_value = [&](const std::string& what) -> std::string {
      if (i + 1 >= args.size()) throw UsageError("option " + what + " needs a value");
      return args[++i];
    };
    if (arg == "-o") {
      parse_dash_o(options, next_value("-o"));
    } else if (arg.rfind("-o", 0) == 0 && arg.size() > 2 && arg[2] != '-') {
      parse_dash_o(options, arg.substr(2));
    } else if (arg == "-f") {
      options.foreground = true;
    } else if (arg == "-d") {
      options.debug = true;
    } else if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
      std::string name = arg.substr(2);
      std::string value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (kValued.count(name)) {
        set_option(options, name, has_value ? value : next_value(arg));
      } else if (kFlags.count(name) && !has_value) {
        set_option(options, name, "");
      } else {
        throw UsageError("unknown option " + arg + " (see regfs mount --help)");
      }
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError("unknown option " + arg + " (see regfs mount --help)");
    } else {
      positional.push_back(arg);
    }
  }
  if (options.layer_compression == "gzip" && options.layer_compression_level > 9) {
    throw UsageError("invalid --layer-compression-level " +
                     std::to_string(options.layer_compression_level) + ": gzip takes 1 to 9");
  }
  if (positional.empty()) throw UsageError("missing MOUNTPOINT (see regfs mount --help)");
  if (positional.size() > 2) {
    throw UsageError("too many arguments: expected [REGISTRY] MOUNTPOINT");
  }
  options.mountpoint = positional.back();
  // An fstab line needs a source: "regfs" there means every registry.
  if (positional.size() == 2 && positional[0] != "regfs") {
    options.registry = checked_registry(positional[0]);
  }
  if (options.cache_dir.empty()) options.cache_dir = default_cache_dir();
  return options;
}

}  // namespace regfs::fs

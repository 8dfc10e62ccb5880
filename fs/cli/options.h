// The command line of `regfs mount` (SPEC §1). Every long option also has a
// FUSE -o form with dashes turned into underscores, and the form mount.fuse3
// runs (`regfs REGISTRY MOUNTPOINT -o OPTS`) is accepted, so /etc/fstab works.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace regfs::fs {

// A bad command line; the message is one line for the user.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MountOptions {
  std::string registry;  // canonical; empty: multi-registry mode
  std::string mountpoint;
  std::string cache_dir;
  uint64_t cache_size = 10ull << 30;
  std::vector<std::string> insecure;  // canonical registry names
  std::string ca_cert;
  std::string auth_file;
  std::string platform;  // "os/arch[/variant]"; empty: the host's
  std::chrono::seconds tag_ttl{30};
  std::vector<std::pair<std::string, std::string>> mirrors;
  bool allow_delete = false;
  // --read-only (-o ro): mounted read-only; the kernel then opens files
  // without asking the daemon (fs/fuse/inode_reads.cc).
  bool read_only = false;
  // --upload-chunk-size: blobs up to this size are pushed in one request,
  // larger ones in parts of this size; zero keeps the client's defaults.
  uint64_t upload_chunk_size = 0;
  // --push-delay: a build is pushed after this long without a write.
  std::chrono::milliseconds push_delay{2000};
  std::string layer_compression = "gzip";  // --layer-compression gzip|zstd
  int layer_compression_level = 0;         // --layer-compression-level N; 0: gzip 1, zstd 3
  bool no_urls = false;                    // never fetch a foreign layer from its descriptor's urls
  // --request-timeout SECONDS: the most one file operation waits in total
  // (registry/core/deadline.h), and the deadline of a request and stall limit of
  // a transfer made in the background; zero keeps the defaults (30 s).
  std::chrono::milliseconds request_timeout{0};
  bool foreground = false;
  bool debug = false;
  std::vector<std::string> fuse_options;  // passed to libfuse (allow_other, ...)
};

// Parses the arguments after "mount" (or, for the mount.fuse3 form, all of
// them). Throws UsageError.
MountOptions parse_mount_args(const std::vector<std::string>& args);
// "512M", "20G", "1.5T", "4096" -> bytes. Throws UsageError.
uint64_t parse_size(const std::string& text);
// $XDG_CACHE_HOME/regfs, else ~/.cache/regfs.
std::string default_cache_dir();

}  // namespace regfs::fs

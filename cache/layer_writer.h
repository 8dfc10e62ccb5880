// Writes one image layer from local files (SPEC §4 "Building by copying"): a
// PAX tar made with libarchive (long names, large ids, xattrs as
// SCHILY.xattr), entries in the order given (callers sort them), owners as
// entries say (root:root for a build, as a Dockerfile COPY puts them),
// compressed with gzip (level 1 by default, as crane does; on every core,
// data that does not compress stored: cache/parallel_gzip.h; no name or
// time in its header) or zstd (its own worker threads). The tar streams through the
// compressor to a TempFile while both hashes are taken, so memory stays
// bounded whatever the layer's size and the same entries give the same
// digest. The file is committed to `target` only when complete; a full disk
// is Error(kNoSpace) and leaves nothing behind.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace regfs::cache {

// One tar entry: `path` relative to the layer's root, no leading "/".
struct LayerEntry {
  std::string path;
  mode_t type = 0;    // S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO, S_IFCHR, S_IFBLK (S_IFMT bits)
  uint32_t mode = 0;  // permission bits, setuid/setgid/sticky included
  uint32_t uid = 0;   // owner: root unless given (a layer on a base keeps the base's)
  uint32_t gid = 0;
  int64_t mtime = 0;  // seconds since the epoch
  uint32_t mtime_nsec = 0;
  std::filesystem::path source;               // S_IFREG: the file whose bytes go in (none: empty)
  std::string link_target;                    // S_IFLNK: the target, unchanged
  std::string hardlink_to;                    // a hardlink: the earlier entry's path
  dev_t rdev = 0;                             // S_IFCHR, S_IFBLK: the device number
  std::map<std::string, std::string> xattrs;  // name -> value
};

// The entry for `file` (its lstat in `st`) at `path` in a layer: type,
// mtime, a symlink's target, a regular file's source, a device's number, or
// (a file, fifo or device) a hardlink to an earlier path with the same
// (dev, ino) in `links`; mode, owner and xattrs
// are left to the caller. nullopt for what a layer does not carry (sockets).
// Throws Error(kIo) if a link cannot be read.
using HardlinkMap = std::map<std::pair<dev_t, ino_t>, std::string>;
std::optional<LayerEntry> entry_of_file(const std::string& path, const std::filesystem::path& file,
                                        const struct stat& st, HardlinkMap& links);

// kEstargz: gzip as eStargz, lazily readable (cache/estargz_writer.h).
enum class LayerCompression { kGzip, kZstd, kEstargz };

struct WrittenLayer {
  std::string digest;      // sha256 of the compressed file
  std::string diff_id;     // sha256 of the uncompressed tar
  int64_t size = 0;        // compressed bytes
  std::string media_type;  // application/vnd.oci.image.layer.v1.tar+gzip or +zstd
  // For the layer's descriptor: eStargz's table digest (none for gzip, zstd).
  std::map<std::string, std::string> annotations;
};

// The compression level of built layers when none is given: gzip 1, as
// go-containerregistry (crane, ko) writes layers; zstd 3, zstd's own.
int default_level(LayerCompression compression);

// Writes `entries` as a layer to `target` (through a temp file beside it),
// compressed at `level` (0: default_level). Throws Error(kNoSpace) on a
// full disk, Error(kIo) when a source cannot be read or the archive cannot
// be written.
WrittenLayer write_layer(const std::vector<LayerEntry>& entries, LayerCompression compression,
                         const std::filesystem::path& target, int level = 0);

}  // namespace regfs::cache

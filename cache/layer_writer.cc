#include "cache/layer_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

#include "cache/archive_write.h"
#include "cache/estargz_writer.h"
#include "cache/parallel_gzip.h"
#include "cache/temp_file.h"
#include "cache/unique_fd.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kBuffer = 256 << 10;

// Compresses what it is given into a TempFile, hashing both sides.
class CompressedSink {
 public:
  CompressedSink(LayerCompression compression, int level, TempFile& out)
      : compression_(compression), out_(out), buffer_(kBuffer, '\0') {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    if (compression_ == LayerCompression::kGzip) {
      gzip_ = std::make_unique<ParallelGzip>(
          level, cores, [this](const char* data, size_t size) { emit(data, size); });
    } else {
      zstd_.reset(ZSTD_createCCtx());
      if (!zstd_) throw Error(ErrorKind::kIo, "Cannot start zstd");
      ZSTD_CCtx_setParameter(zstd_.get(), ZSTD_c_compressionLevel, level);
      ZSTD_CCtx_setParameter(zstd_.get(), ZSTD_c_checksumFlag, 1);
      // Its own workers; the output does not depend on how many there are.
      ZSTD_CCtx_setParameter(zstd_.get(), ZSTD_c_nbWorkers, static_cast<int>(cores));
    }
  }

  void write(const char* data, size_t size) {
    diff_id_.update(data, size);
    compress(data, size, false);
  }
  void finish() { compress(nullptr, 0, true); }

  std::string diff_id() { return diff_id_.digest(); }
  std::string digest() { return digest_.digest(); }
  int64_t size() const { return size_; }

 private:
  struct ZstdFree {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };

  void emit(const char* data, size_t n) {
    digest_.update(data, n);
    out_.write(data, n);
    size_ += static_cast<int64_t>(n);
  }

  void compress(const char* data, size_t size, bool last) {
    if (gzip_) {
      gzip_->write(data, size);
      if (last) gzip_->finish();
      return;
    }
    ZSTD_inBuffer in{data, size, 0};
    bool done = false;
    while (!done) {
      ZSTD_outBuffer out{buffer_.data(), buffer_.size(), 0};
      size_t left =
          ZSTD_compressStream2(zstd_.get(), &out, &in, last ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(left)) {
        throw Error(ErrorKind::kIo,
                    std::string("Cannot zstd-compress the layer: ") + ZSTD_getErrorName(left));
      }
      emit(buffer_.data(), out.pos);
      done = last ? left == 0 : in.pos == in.size;
    }
  }

  const LayerCompression compression_;
  TempFile& out_;
  std::string buffer_;
  std::unique_ptr<ParallelGzip> gzip_;
  std::unique_ptr<ZSTD_CCtx, ZstdFree> zstd_;
  registry::Sha256 diff_id_;
  registry::Sha256 digest_;
  int64_t size_ = 0;
};

struct ArchiveFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// libarchive's write callback: the tar's bytes go to the sink (cache/archive_write.h).
using WriteContext = ArchiveWriteContext<CompressedSink>;
constexpr auto on_write = archive_write_to_sink<CompressedSink>;
void check(archive* a, int rc, WriteContext& context, const std::string& what) {
  check_archive(a, rc, context, what);
}

void add_entry(archive* a, const LayerEntry& e, WriteContext& context, std::string& buffer) {
  std::unique_ptr<archive_entry, EntryFree> entry(archive_entry_new());
  archive_entry_set_pathname(entry.get(), e.path.c_str());
  archive_entry_set_uid(entry.get(), e.uid);
  archive_entry_set_gid(entry.get(), e.gid);
  archive_entry_set_mtime(entry.get(), e.mtime, e.mtime_nsec);
  for (const auto& [name, value] : e.xattrs) {
    archive_entry_xattr_add_entry(entry.get(), name.c_str(), value.data(), value.size());
  }
  UniqueFd fd;
  if (!e.hardlink_to.empty()) {
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_perm(entry.get(), e.mode);
    archive_entry_set_hardlink(entry.get(), e.hardlink_to.c_str());
    archive_entry_set_size(entry.get(), 0);
  } else if (e.type == S_IFDIR) {
    archive_entry_set_filetype(entry.get(), AE_IFDIR);
    archive_entry_set_perm(entry.get(), e.mode);
  } else if (e.type == S_IFLNK) {
    archive_entry_set_filetype(entry.get(), AE_IFLNK);
    archive_entry_set_perm(entry.get(), 0777);
    archive_entry_set_symlink(entry.get(), e.link_target.c_str());
  } else if (e.type == S_IFIFO || e.type == S_IFCHR || e.type == S_IFBLK) {
    archive_entry_set_filetype(entry.get(), e.type == S_IFIFO   ? AE_IFIFO
                                            : e.type == S_IFCHR ? AE_IFCHR
                                                                : AE_IFBLK);
    archive_entry_set_perm(entry.get(), e.mode);
    archive_entry_set_rdev(entry.get(), e.rdev);
  } else if (e.source.empty()) {  // an empty file: a whiteout, an opaque marker
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_perm(entry.get(), e.mode);
    archive_entry_set_size(entry.get(), 0);
  } else {
    fd.reset(::open(e.source.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0) {
      throw Error(ErrorKind::kIo, "Cannot read " + e.source.string() + ": " + std::strerror(errno));
    }
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_perm(entry.get(), e.mode);
    archive_entry_set_size(entry.get(), st.st_size);
  }
  check(a, archive_write_header(a, entry.get()), context, e.path);
  if (!fd) return;
  while (true) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw Error(ErrorKind::kIo, "Cannot read " + e.source.string() + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    if (archive_write_data(a, buffer.data(), static_cast<size_t>(n)) < 0) {
      check(a, ARCHIVE_FATAL, context, e.path);
    }
  }
}

}  // namespace

std::optional<LayerEntry> entry_of_file(const std::string& path, const std::filesystem::path& file,
                                        const struct stat& st, HardlinkMap& links) {
  LayerEntry entry;
  entry.path = path;
  entry.type = st.st_mode & S_IFMT;
  entry.mtime = st.st_mtim.tv_sec;
  entry.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  if (S_ISLNK(st.st_mode)) {
    std::string target(4096, '\0');
    ssize_t n = ::readlink(file.c_str(), target.data(), target.size());
    if (n < 0) throw Error(ErrorKind::kIo, "Cannot read link " + file.string());
    target.resize(static_cast<size_t>(n));
    entry.link_target = std::move(target);
  } else if (S_ISREG(st.st_mode)) {
    entry.source = file;
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    entry.rdev = st.st_rdev;
  } else if (!S_ISDIR(st.st_mode) && !S_ISFIFO(st.st_mode)) {
    return std::nullopt;
  }
  // A file, fifo or device with more names: the later ones are hardlinks.
  if (!S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode) && st.st_nlink > 1) {
    auto [it, added] = links.try_emplace({st.st_dev, st.st_ino}, path);
    if (!added) entry.hardlink_to = it->second;
  }
  return entry;
}

int default_level(LayerCompression compression) {
  // gzip: the fastest, about 3 times less CPU than level 6 for an 11% larger
  // layer on binaries (BENCHMARKS.md, session 5).
  return compression == LayerCompression::kGzip ? 1 : 3;
}

WrittenLayer write_layer(const std::vector<LayerEntry>& entries, LayerCompression compression,
                         const std::filesystem::path& target, int level) {
  if (compression == LayerCompression::kEstargz) return write_estargz_layer(entries, target);
  make_private_dir(target.parent_path());
  TempFile file(target.parent_path() / (".layer." + unique_suffix()));
  CompressedSink sink(compression, level > 0 ? level : default_level(compression), file);
  WriteContext context{&sink, nullptr};
  std::unique_ptr<archive, ArchiveFree> a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  // Extended attributes as SCHILY.xattr only, the header GNU tar, Go's
  // archive/tar and umoci read (not LIBARCHIVE.xattr beside it).
  archive_write_set_format_option(a.get(), "pax", "xattrheader", "SCHILY");
  archive_write_set_bytes_per_block(a.get(), 0);  // no padding past the end
  check(a.get(), archive_write_open(a.get(), &context, nullptr, on_write, nullptr), context,
        "the header");
  std::string buffer(kBuffer, '\0');
  for (const auto& entry : entries) add_entry(a.get(), entry, context, buffer);
  check(a.get(), archive_write_close(a.get()), context, "the end");
  sink.finish();
  WrittenLayer layer;
  layer.diff_id = sink.diff_id();
  layer.digest = sink.digest();
  layer.size = sink.size();
  layer.media_type = compression == LayerCompression::kGzip
                         ? "application/vnd.oci.image.layer.v1.tar+gzip"
                         : "application/vnd.oci.image.layer.v1.tar+zstd";
  file.commit(target);
  return layer;
}

}  // namespace regfs::cache

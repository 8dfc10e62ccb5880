#include "cache/estargz_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>

#include "cache/archive_write.h"
#include "cache/temp_file.h"
#include "cache/toc.h"
#include "cache/unique_fd.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

// The layer's bytes: what libarchive writes goes into the open gzip member
// (one is opened on the first write after a close), hashed on both sides.
class MemberSink {
 public:
  explicit MemberSink(TempFile& out) : out_(out), buffer_(256 << 10, '\0') {}
  ~MemberSink() {
    if (open_) deflateEnd(&zs_);
  }

  void write(const char* data, size_t size) {
    diff_id_.update(data, size);
    if (!open_) {
      zs_ = z_stream{};
      if (deflateInit2(&zs_, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        throw Error(ErrorKind::kIo, "Cannot start gzip");
      }
      open_ = true;
    }
    deflate_all(data, size, Z_NO_FLUSH);
  }
  // Ends the open gzip member, if any: what follows starts a new one.
  void close_member() {
    if (!open_) return;
    deflate_all(nullptr, 0, Z_FINISH);
    deflateEnd(&zs_);
    open_ = false;
  }
  // Bytes that decompress to nothing (the footer member).
  void raw(std::string_view bytes) { emit(bytes.data(), bytes.size()); }
  uint64_t offset() const { return size_; }
  std::string diff_id() { return diff_id_.digest(); }
  std::string digest() { return digest_.digest(); }

 private:
  void deflate_all(const char* data, size_t size, int flush) {
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    zs_.avail_in = static_cast<uInt>(size);
    int rc;
    do {
      zs_.next_out = reinterpret_cast<Bytef*>(buffer_.data());
      zs_.avail_out = static_cast<uInt>(buffer_.size());
      rc = deflate(&zs_, flush);
      if (rc == Z_STREAM_ERROR) throw Error(ErrorKind::kIo, "Cannot gzip the layer");
      emit(buffer_.data(), buffer_.size() - zs_.avail_out);
    } while (zs_.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
  }
  void emit(const char* data, size_t n) {
    digest_.update(data, n);
    out_.write(data, n);
    size_ += n;
  }

  TempFile& out_;
  std::string buffer_;
  z_stream zs_{};
  bool open_ = false;
  uint64_t size_ = 0;
  registry::Sha256 diff_id_;
  registry::Sha256 digest_;
};

using Context = ArchiveWriteContext<MemberSink>;
constexpr auto on_write = archive_write_to_sink<MemberSink>;
void check(archive* a, int rc, Context& context, const std::string& what) {
  check_archive(a, rc, context, what);
}

std::string rfc3339(int64_t seconds) {
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return when;
}

std::string base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// The table entry of `e` without its data fields.
nlohmann::json toc_entry(const LayerEntry& e) {
  nlohmann::json j = {{"name", e.path},
                      {"mode", e.mode},
                      {"uid", e.uid},
                      {"gid", e.gid},
                      {"modtime", rfc3339(e.mtime)}};
  if (!e.hardlink_to.empty()) {
    j["type"] = "hardlink";
    j["linkName"] = e.hardlink_to;
  } else if (e.type == S_IFDIR) {
    j["type"] = "dir";
    j["name"] = e.path + "/";
  } else if (e.type == S_IFLNK) {
    j["type"] = "symlink";
    j["mode"] = 0777;
    j["linkName"] = e.link_target;
  } else if (e.type == S_IFIFO) {
    j["type"] = "fifo";
  } else if (e.type == S_IFCHR || e.type == S_IFBLK) {
    j["type"] = e.type == S_IFCHR ? "char" : "block";
    j["devMajor"] = major(e.rdev);
    j["devMinor"] = minor(e.rdev);
  } else {
    j["type"] = "reg";
    j["size"] = 0;
  }
  if (!e.xattrs.empty()) {
    nlohmann::json x = nlohmann::json::object();
    for (const auto& [k, v] : e.xattrs) x[k] = base64(v);
    j["xattrs"] = x;
  }
  return j;
}

using ArchivePtr = std::unique_ptr<archive, decltype(&archive_write_free)>;
using EntryPtr = std::unique_ptr<archive_entry, decltype(&archive_entry_free)>;

EntryPtr header_of(const LayerEntry& e) {
  EntryPtr entry(archive_entry_new(), archive_entry_free);
  archive_entry_set_pathname(entry.get(), e.path.c_str());
  archive_entry_set_uid(entry.get(), e.uid);
  archive_entry_set_gid(entry.get(), e.gid);
  // Whole seconds, in the tar as in the table: libarchive writes a fraction
  // only into entries that need a PAX header anyway, and the two must agree.
  archive_entry_set_mtime(entry.get(), e.mtime, 0);
  for (const auto& [name, value] : e.xattrs) {
    archive_entry_xattr_add_entry(entry.get(), name.c_str(), value.data(), value.size());
  }
  archive_entry_set_perm(entry.get(), e.mode);
  if (!e.hardlink_to.empty()) {
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_hardlink(entry.get(), e.hardlink_to.c_str());
    archive_entry_set_size(entry.get(), 0);
  } else if (e.type == S_IFDIR) {
    archive_entry_set_filetype(entry.get(), AE_IFDIR);
  } else if (e.type == S_IFLNK) {
    archive_entry_set_filetype(entry.get(), AE_IFLNK);
    archive_entry_set_perm(entry.get(), 0777);
    archive_entry_set_symlink(entry.get(), e.link_target.c_str());
  } else if (e.type == S_IFIFO || e.type == S_IFCHR || e.type == S_IFBLK) {
    archive_entry_set_filetype(entry.get(), e.type == S_IFIFO   ? AE_IFIFO
                                            : e.type == S_IFCHR ? AE_IFCHR
                                                                : AE_IFBLK);
    archive_entry_set_rdev(entry.get(), e.rdev);
  } else {
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_size(entry.get(), 0);
  }
  return entry;
}

// Writes regular file `e` (header, then each chunk in a member of its own)
// and appends its table entries to `toc`.
void add_file(archive* a, const LayerEntry& e, MemberSink& sink, Context& context,
              nlohmann::json& toc, std::string& buffer) {
  UniqueFd fd(::open(e.source.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    throw Error(ErrorKind::kIo, "Cannot read " + e.source.string() + ": " + std::strerror(errno));
  }
  auto header = header_of(e);
  auto size = static_cast<uint64_t>(st.st_size);
  archive_entry_set_size(header.get(), st.st_size);
  check(a, archive_write_header(a, header.get()), context, e.path);
  auto first = toc_entry(e);
  first["size"] = size;
  registry::Sha256 whole;
  std::vector<nlohmann::json> chunks;
  for (uint64_t at = 0; at < size;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kEstargzChunkSize, size - at));
    buffer.resize(want);
    for (size_t got = 0; got < want;) {
      ssize_t n = ::read(fd.get(), buffer.data() + got, want - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        throw Error(ErrorKind::kIo, "Cannot read " + e.source.string() + ": " +
                                        (n < 0 ? std::strerror(errno) : "it shrank"));
      }
      got += static_cast<size_t>(n);
    }
    sink.close_member();  // each chunk starts a gzip member of its own
    nlohmann::json c = at == 0 ? first : nlohmann::json{{"name", e.path}, {"type", "chunk"}};
    c["offset"] = sink.offset();
    c["chunkOffset"] = at;
    c["chunkSize"] = want;
    registry::Sha256 hash;
    hash.update(buffer);
    c["chunkDigest"] = hash.digest();
    whole.update(buffer);
    if (archive_write_data(a, buffer.data(), want) < 0) check(a, ARCHIVE_FATAL, context, e.path);
    sink.close_member();
    chunks.push_back(std::move(c));
    at += want;
  }
  if (chunks.empty()) {
    toc.push_back(std::move(first));
    return;
  }
  chunks.front()["digest"] = whole.digest();
  for (auto& c : chunks) toc.push_back(std::move(c));
}

std::string footer(uint64_t toc_offset) {
  std::string f = {'\x1f', '\x8b', '\x08', '\x04', 0, 0, 0, 0, 0, '\xff', 26, 0, 'S', 'G', 22, 0};
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(toc_offset));
  f += hex;
  f += "STARGZ";
  f += std::string("\x01\x00\x00\xff\xff", 5);  // an empty final stored block
  f += std::string(8, '\0');                    // CRC32 and size of nothing
  return f;
}

}  // namespace

WrittenLayer write_estargz_layer(const std::vector<LayerEntry>& entries,
                                 const std::filesystem::path& target) {
  make_private_dir(target.parent_path());
  TempFile file(target.parent_path() / (".layer." + unique_suffix()));
  MemberSink sink(file);
  Context context{&sink, nullptr};
  ArchivePtr a(archive_write_new(), archive_write_free);
  archive_write_set_format_pax_restricted(a.get());
  archive_write_set_format_option(a.get(), "pax", "xattrheader", "SCHILY");
  archive_write_set_bytes_per_block(a.get(), 0);  // bytes reach the sink as written
  check(a.get(), archive_write_open(a.get(), &context, nullptr, on_write, nullptr), context,
        "the header");
  nlohmann::json toc = nlohmann::json::array();
  std::string buffer;
  for (const auto& e : entries) {
    if (e.type == S_IFREG && e.hardlink_to.empty() && !e.source.empty()) {
      add_file(a.get(), e, sink, context, toc, buffer);
    } else {
      check(a.get(), archive_write_header(a.get(), header_of(e).get()), context, e.path);
      toc.push_back(toc_entry(e));
    }
  }
  // The table: the tar's last entry, in a member of its own, then the tar's end.
  std::string json = nlohmann::json{{"version", 1}, {"entries", toc}}.dump();
  LayerEntry toc_file;
  toc_file.path = "stargz.index.json";
  toc_file.type = S_IFREG;
  toc_file.mode = 0444;
  auto header = header_of(toc_file);
  archive_entry_set_size(header.get(), static_cast<la_int64_t>(json.size()));
  check(a.get(), archive_write_finish_entry(a.get()), context, "the last entry");
  sink.close_member();
  uint64_t toc_offset = sink.offset();
  check(a.get(), archive_write_header(a.get(), header.get()), context, "stargz.index.json");
  if (archive_write_data(a.get(), json.data(), json.size()) < 0) {
    check(a.get(), ARCHIVE_FATAL, context, "stargz.index.json");
  }
  check(a.get(), archive_write_close(a.get()), context, "the end");
  sink.close_member();
  sink.raw(footer(toc_offset));
  WrittenLayer layer;
  layer.diff_id = sink.diff_id();
  layer.digest = sink.digest();
  layer.size = static_cast<int64_t>(sink.offset());
  layer.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  layer.annotations[std::string(kEstargzTocDigest)] = registry::sha256_digest(json);
  file.commit(target);
  return layer;
}

}  // namespace regfs::cache

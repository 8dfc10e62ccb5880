#include "cache/decompress.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "cache/unique_fd.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kInputSize = 256 * 1024;

// The compressed bytes of a file, read in chunks.
class Input {
 public:
  explicit Input(const std::filesystem::path& file)
      : path_(file), fd_(::open(file.c_str(), O_RDONLY | O_CLOEXEC)), buffer_(kInputSize) {
    if (!fd_) throw io_error(errno);
  }
  // Reads the next chunk into the buffer; false at the end of the file.
  bool refill() {
    for (;;) {
      ssize_t n = ::read(fd_.get(), buffer_.data(), buffer_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw io_error(errno);
      size_ = static_cast<size_t>(n);
      return n > 0;
    }
  }
  char* data() { return buffer_.data(); }
  size_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  Error corrupt(const std::string& why) const {
    return Error(ErrorKind::kInvalid, "Cannot decompress layer " + path_.string() + ": " + why);
  }

 private:
  Error io_error(int err) const {
    return Error(ErrorKind::kIo, "Cannot read layer " + path_.string() + ": " + std::strerror(err));
  }
  std::filesystem::path path_;
  UniqueFd fd_;
  std::vector<char> buffer_;
  size_t size_ = 0;
};

class Plain : public Decompressor {
 public:
  explicit Plain(const std::filesystem::path& file) : input_(file) {}
  size_t read(char* data, size_t size) override {
    for (;;) {
      ssize_t n = ::read(input_.fd(), data, size);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) throw input_.corrupt(std::strerror(errno));
    }
  }

 private:
  Input input_;
};

struct InflateEnd {
  void operator()(z_stream* s) const {
    inflateEnd(s);
    delete s;
  }
};

class Gzip : public Decompressor {
 public:
  explicit Gzip(const std::filesystem::path& file) : input_(file), stream_(new z_stream{}) {
    if (inflateInit2(stream_.get(), 16 + MAX_WBITS) != Z_OK) {
      stream_.release();  // nothing to end
      throw Error(ErrorKind::kIo, "Cannot start gzip decompression: out of memory");
    }
  }
  size_t read(char* data, size_t size) override {
    z_stream& s = *stream_;
    s.next_out = reinterpret_cast<Bytef*>(data);
    s.avail_out = static_cast<uInt>(size);
    while (s.avail_out == size) {
      if (s.avail_in == 0 && !eof_) {
        eof_ = !input_.refill();
        s.next_in = reinterpret_cast<Bytef*>(input_.data());
        s.avail_in = static_cast<uInt>(input_.size());
      }
      if (member_done_) {
        if (s.avail_in == 0) break;  // the end of the last member
        inflateReset(&s);            // another gzip member follows
        member_done_ = false;
      }
      int rc = inflate(&s, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        member_done_ = true;
      } else if (rc == Z_BUF_ERROR && s.avail_in == 0) {
        if (eof_) throw input_.corrupt("gzip data truncated");
      } else if (rc != Z_OK) {
        throw input_.corrupt(std::string("gzip: ") + (s.msg ? s.msg : "corrupt data"));
      }
    }
    return size - s.avail_out;
  }

 private:
  Input input_;
  std::unique_ptr<z_stream, InflateEnd> stream_;
  bool eof_ = false;
  bool member_done_ = false;
};

struct FreeDctx {
  void operator()(ZSTD_DCtx* ctx) const { ZSTD_freeDCtx(ctx); }
};

class Zstd : public Decompressor {
 public:
  explicit Zstd(const std::filesystem::path& file) : input_(file), ctx_(ZSTD_createDCtx()) {
    if (!ctx_) throw Error(ErrorKind::kIo, "Cannot start zstd decompression: out of memory");
  }
  size_t read(char* data, size_t size) override {
    ZSTD_outBuffer out{data, size, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size && !eof_) {
        eof_ = !input_.refill();
        in_ = ZSTD_inBuffer{input_.data(), eof_ ? 0 : input_.size(), 0};
      }
      if (in_.pos == in_.size && eof_ && frame_done_) break;
      size_t rc = ZSTD_decompressStream(ctx_.get(), &out, &in_);
      if (ZSTD_isError(rc)) throw input_.corrupt(std::string("zstd: ") + ZSTD_getErrorName(rc));
      frame_done_ = rc == 0;
      if (eof_ && in_.pos == in_.size && out.pos == 0 && !frame_done_) {
        throw input_.corrupt("zstd data truncated");
      }
    }
    return out.pos;
  }

 private:
  Input input_;
  std::unique_ptr<ZSTD_DCtx, FreeDctx> ctx_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool eof_ = false;
  bool frame_done_ = true;  // an empty file is an empty stream
};

}  // namespace

std::unique_ptr<Decompressor> open_decompressor(const std::filesystem::path& file,
                                                Compression compression) {
  switch (compression) {
    case Compression::kGzip:
      return std::make_unique<Gzip>(file);
    case Compression::kZstd:
      return std::make_unique<Zstd>(file);
    case Compression::kNone:
      break;
  }
  return std::make_unique<Plain>(file);
}

}  // namespace regfs::cache

#include "cache/decompress.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "cache/unique_fd.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kInputSize = 256 * 1024;
constexpr size_t kWindowSize = 32 * 1024;  // deflate's largest distance

// The compressed bytes of a file, read in chunks with pread from `offset`.
class Input {
 public:
  explicit Input(const std::filesystem::path& file)
      : name_(file.string()),
        own_(::open(file.c_str(), O_RDONLY | O_CLOEXEC)),
        fd_(own_.get()),
        buffer_(kInputSize) {
    if (!own_) throw io_error(errno);
  }
  Input(int fd, std::string name, uint64_t offset)
      : name_(std::move(name)), fd_(fd), buffer_(kInputSize), next_(offset), start_(offset) {}
  // Reads the next chunk into the buffer; false at the end of the file.
  bool refill() {
    size_ = read_at(buffer_.data(), buffer_.size(), next_);
    start_ = next_;
    next_ += size_;
    return size_ > 0;
  }
  // Reads up to `size` bytes at `offset` (short only at the end).
  size_t read_at(char* data, size_t size, uint64_t offset) const {
    for (;;) {
      ssize_t n = ::pread(fd_, data, size, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw io_error(errno);
      return static_cast<size_t>(n);
    }
  }
  char* data() { return buffer_.data(); }
  size_t size() const { return size_; }
  // The file offset of data()[0].
  uint64_t start() const { return start_; }
  // Plain reads straight into `data`, past the buffer.
  size_t read_plain(char* data, size_t size) {
    size_t n = read_at(data, size, next_);
    next_ += n;
    return n;
  }
  Error corrupt(const std::string& why) const {
    return Error(ErrorKind::kInvalid, "Cannot decompress layer " + name_ + ": " + why);
  }

 private:
  Error io_error(int err) const {
    return Error(ErrorKind::kIo, "Cannot read layer " + name_ + ": " + std::strerror(err));
  }
  std::string name_;
  UniqueFd own_;
  int fd_;
  std::vector<char> buffer_;
  size_t size_ = 0;
  uint64_t next_ = 0;   // file offset of the next refill
  uint64_t start_ = 0;  // file offset of the buffer
};

class Plain : public Decompressor {
 public:
  explicit Plain(Input input) : input_(std::move(input)) {}
  size_t read(char* data, size_t size) override { return input_.read_plain(data, size); }

 private:
  Input input_;
};

struct InflateEnd {
  void operator()(z_stream* s) const {
    inflateEnd(s);
    delete s;
  }
};

std::string deflate_window(const unsigned char* data, size_t size) {
  uLongf length = compressBound(static_cast<uLong>(size));
  std::string out(length, '\0');
  if (compress2(reinterpret_cast<Bytef*>(out.data()), &length, data, static_cast<uLong>(size), 1) !=
      Z_OK) {
    throw Error(ErrorKind::kIo, "Cannot keep a gzip access point: out of memory");
  }
  out.resize(length);
  return out;
}

// A gzip stream from its start (indexing: `spacing` > 0 records access
// points) or resumed at an access point (raw deflate until the member ends).
class Gzip : public Decompressor {
 public:
  Gzip(Input input, uint64_t spacing) : input_(std::move(input)), spacing_(spacing) {
    init(16 + MAX_WBITS);
  }
  Gzip(Input input, const AccessPoint& point) : input_(std::move(input)), raw_(true) {
    init(-MAX_WBITS);
    z_stream& s = *stream_;
    if (point.bits > 0) {
      char byte = 0;
      if (point.in == 0 || input_.read_at(&byte, 1, point.in - 1) != 1) {
        throw input_.corrupt("gzip access point past the end");
      }
      inflatePrime(&s, point.bits, static_cast<unsigned char>(byte) >> (8 - point.bits));
    }
    if (!point.window.empty()) {
      std::string window(kWindowSize, '\0');
      uLongf length = kWindowSize;
      if (uncompress(reinterpret_cast<Bytef*>(window.data()), &length,
                     reinterpret_cast<const Bytef*>(point.window.data()),
                     static_cast<uLong>(point.window.size())) != Z_OK ||
          inflateSetDictionary(&s, reinterpret_cast<const Bytef*>(window.data()),
                               static_cast<uInt>(length)) != Z_OK) {
        throw input_.corrupt("damaged gzip access point");
      }
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
        uInt skip = std::min<uInt>(skip_, s.avail_in);  // a raw member's trailer
        s.next_in += skip;
        s.avail_in -= skip;
        skip_ -= skip;
        if (s.avail_in == 0) {
          if (eof_) break;  // the end of the last member
          continue;
        }
        inflateReset2(&s, 16 + MAX_WBITS);  // another gzip member follows
        member_done_ = false;
      }
      uInt before = s.avail_out;
      int rc = inflate(&s, spacing_ > 0 ? Z_BLOCK : Z_NO_FLUSH);
      out_ += before - s.avail_out;
      if (rc == Z_STREAM_END) {
        member_done_ = true;
        if (raw_) skip_ = 8;  // CRC-32 and size: zlib checks them only in gzip mode
        raw_ = false;
      } else if (rc == Z_BUF_ERROR && s.avail_in == 0) {
        if (eof_) throw input_.corrupt("gzip data truncated");
      } else if (rc != Z_OK) {
        throw input_.corrupt(std::string("gzip: ") + (s.msg ? s.msg : "corrupt data"));
      } else if (spacing_ > 0 && (s.data_type & 128) && !(s.data_type & 64) &&
                 (points_.empty() || out_ - points_.back().out >= spacing_)) {
        add_point();
      }
    }
    return size - s.avail_out;
  }
  std::vector<AccessPoint> take_points() override { return std::move(points_); }

 private:
  void init(int window_bits) {
    stream_.reset(new z_stream{});
    if (inflateInit2(stream_.get(), window_bits) != Z_OK) {
      stream_.release();  // nothing to end
      throw Error(ErrorKind::kIo, "Cannot start gzip decompression: out of memory");
    }
  }
  // At a block boundary: where the next block starts and the window before it.
  void add_point() {
    z_stream& s = *stream_;
    AccessPoint point;
    point.in =
        input_.start() + static_cast<uint64_t>(reinterpret_cast<char*>(s.next_in) - input_.data());
    point.out = out_;
    point.bits = static_cast<uint8_t>(s.data_type & 7);
    unsigned char window[kWindowSize];
    uInt length = kWindowSize;
    if (inflateGetDictionary(&s, window, &length) == Z_OK && length > 0) {
      point.window = deflate_window(window, length);
    }
    points_.push_back(std::move(point));
  }

  Input input_;
  std::unique_ptr<z_stream, InflateEnd> stream_;
  uint64_t spacing_ = 0;
  std::vector<AccessPoint> points_;
  uint64_t out_ = 0;  // bytes given so far
  bool raw_ = false;  // resumed inside a member: raw deflate, trailer skipped by hand
  uInt skip_ = 0;
  bool eof_ = false;
  bool member_done_ = false;
};

struct FreeDctx {
  void operator()(ZSTD_DCtx* ctx) const { ZSTD_freeDCtx(ctx); }
};

// A zstd stream from its start or from a frame's; `spacing` > 0 records the
// starts of frames at least that far apart.
class Zstd : public Decompressor {
 public:
  Zstd(Input input, uint64_t spacing)
      : input_(std::move(input)), ctx_(ZSTD_createDCtx()), spacing_(spacing) {
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
      if (frame_done_ && spacing_ > 0 && in_.pos < in_.size &&
          (points_.empty() || out_ + out.pos - points_.back().out >= spacing_)) {
        points_.push_back(AccessPoint{input_.start() + in_.pos, out_ + out.pos, 0, {}});
      }
      size_t rc = ZSTD_decompressStream(ctx_.get(), &out, &in_);
      if (ZSTD_isError(rc)) throw input_.corrupt(std::string("zstd: ") + ZSTD_getErrorName(rc));
      frame_done_ = rc == 0;
      if (eof_ && in_.pos == in_.size && out.pos == 0 && !frame_done_) {
        throw input_.corrupt("zstd data truncated");
      }
    }
    out_ += out.pos;
    return out.pos;
  }
  std::vector<AccessPoint> take_points() override { return std::move(points_); }

 private:
  Input input_;
  std::unique_ptr<ZSTD_DCtx, FreeDctx> ctx_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  uint64_t spacing_ = 0;
  std::vector<AccessPoint> points_;
  uint64_t out_ = 0;
  bool eof_ = false;
  bool frame_done_ = true;  // an empty file is an empty stream
};

}  // namespace

std::unique_ptr<Decompressor> open_decompressor(const std::filesystem::path& file,
                                                Compression compression, uint64_t spacing) {
  switch (compression) {
    case Compression::kGzip:
      return std::make_unique<Gzip>(Input(file), spacing);
    case Compression::kZstd:
      return std::make_unique<Zstd>(Input(file), spacing);
    case Compression::kNone:
      break;
  }
  return std::make_unique<Plain>(Input(file));
}

std::unique_ptr<Decompressor> resume_decompressor(int fd, const std::string& name,
                                                  Compression compression,
                                                  const AccessPoint& point) {
  Input input(fd, name, point.in);
  switch (compression) {
    case Compression::kGzip:
      if (point.in == 0) return std::make_unique<Gzip>(std::move(input), 0);
      return std::make_unique<Gzip>(std::move(input), point);
    case Compression::kZstd:
      return std::make_unique<Zstd>(std::move(input), 0);
    case Compression::kNone:
      break;
  }
  return std::make_unique<Plain>(std::move(input));
}

}  // namespace regfs::cache

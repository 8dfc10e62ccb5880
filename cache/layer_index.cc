#include "cache/layer_index.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <type_traits>

namespace regfs::cache {

namespace {

// Version 2: sparse files (their data segments). Version 3: no uncompressed
// tar kept, but the blob's access points. A file of another version does not
// parse, so the layer is indexed again.
constexpr std::string_view kMagic = "regfs-layer-index-3\n";
constexpr uint32_t kMaxString = 1 << 20;

class Writer {
 public:
  template <typename T>
  void put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  void put(std::string_view s) {
    put(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// Reads what Writer wrote; every read is bounds-checked and sets ok_ = false
// on a short or oversized field.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  T get() {
    T value{};
    if (in_.size() < sizeof value) {
      ok_ = false;
      return value;
    }
    std::memcpy(&value, in_.data(), sizeof value);
    in_.remove_prefix(sizeof value);
    return value;
  }
  std::string get_string() {
    auto size = get<uint32_t>();
    if (!ok_ || size > kMaxString || size > in_.size()) {
      ok_ = false;
      return {};
    }
    std::string s(in_.substr(0, size));
    in_.remove_prefix(size);
    return s;
  }
  bool ok() const { return ok_; }
  bool at_end() const { return in_.empty(); }
  size_t left() const { return in_.size(); }

 private:
  std::string_view in_;
  bool ok_ = true;
};

// The entry's data lies in the tar; a sparse file's segments are in order,
// apart and within its size.
bool data_fits(const TarEntry& e, uint64_t tar_size) {
  if (!e.sparse) {
    return e.segments.empty() && e.offset <= tar_size && e.size <= tar_size - e.offset;
  }
  uint64_t end = 0;
  for (const auto& s : e.segments) {
    if (s.offset < end || s.length > e.size || s.offset > e.size - s.length) return false;
    if (s.data > tar_size || s.length > tar_size - s.data) return false;
    end = s.offset + s.length;
  }
  return true;
}

}  // namespace

bool is_current_index(std::string_view head) { return head.substr(0, kMagic.size()) == kMagic; }

std::string serialize_index(const LayerIndex& index) {
  Writer w;
  for (char c : kMagic) w.put(c);
  w.put(std::string_view(index.diff_id));
  w.put(index.tar_size);
  w.put(std::string_view(index.blob));
  w.put(static_cast<uint8_t>(index.compression));
  w.put(static_cast<uint8_t>(index.tar_copy));
  w.put(static_cast<uint64_t>(index.points.size()));
  for (const auto& point : index.points) {
    w.put(point.in);
    w.put(point.out);
    w.put(point.bits);
    w.put(std::string_view(point.window));
  }
  w.put(static_cast<uint64_t>(index.entries.size()));
  for (const auto& e : index.entries) {
    w.put(std::string_view(e.path));
    w.put(static_cast<uint8_t>(e.type));
    w.put(e.mode);
    w.put(e.uid);
    w.put(e.gid);
    w.put(e.mtime);
    w.put(e.mtime_nsec);
    w.put(e.size);
    w.put(e.offset);
    w.put(std::string_view(e.link));
    w.put(e.dev_major);
    w.put(e.dev_minor);
    w.put(static_cast<uint32_t>(e.xattrs.size()));
    for (const auto& [name, value] : e.xattrs) {
      w.put(std::string_view(name));
      w.put(std::string_view(value));
    }
    w.put(static_cast<uint8_t>(e.sparse));
    w.put(static_cast<uint64_t>(e.segments.size()));
    for (const auto& segment : e.segments) {
      w.put(segment.offset);
      w.put(segment.length);
      w.put(segment.data);
    }
  }
  return w.take();
}

std::optional<LayerIndex> parse_index(std::string_view bytes) {
  if (bytes.substr(0, kMagic.size()) != kMagic) return std::nullopt;
  Reader r(bytes.substr(kMagic.size()));
  LayerIndex index;
  index.diff_id = r.get_string();
  index.tar_size = r.get<uint64_t>();
  index.blob = r.get_string();
  auto compression = r.get<uint8_t>();
  if (compression > static_cast<uint8_t>(Compression::kZstd)) return std::nullopt;
  index.compression = static_cast<Compression>(compression);
  index.tar_copy = r.get<uint8_t>() != 0;
  auto points = r.get<uint64_t>();
  if (!r.ok() || points > r.left() / 21) return std::nullopt;  // a point takes 21+ bytes
  for (uint64_t j = 0; j < points; ++j) {
    AccessPoint point;
    point.in = r.get<uint64_t>();
    point.out = r.get<uint64_t>();
    point.bits = r.get<uint8_t>();
    point.window = r.get_string();
    bool in_order = index.points.empty() ? point.out == 0 : point.out > index.points.back().out;
    if (!r.ok() || !in_order || point.out > index.tar_size || point.bits > 7) return std::nullopt;
    index.points.push_back(std::move(point));
  }
  auto count = r.get<uint64_t>();
  if (!r.ok() || count > r.left()) return std::nullopt;  // an entry takes > 1 byte
  index.entries.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count && r.ok(); ++i) {
    TarEntry e;
    e.path = r.get_string();
    auto type = r.get<uint8_t>();
    if (type > static_cast<uint8_t>(EntryType::kFifo)) return std::nullopt;
    e.type = static_cast<EntryType>(type);
    e.mode = r.get<uint32_t>();
    e.uid = r.get<uint32_t>();
    e.gid = r.get<uint32_t>();
    e.mtime = r.get<int64_t>();
    e.mtime_nsec = r.get<uint32_t>();
    e.size = r.get<uint64_t>();
    e.offset = r.get<uint64_t>();
    e.link = r.get_string();
    e.dev_major = r.get<uint32_t>();
    e.dev_minor = r.get<uint32_t>();
    auto xattrs = r.get<uint32_t>();
    if (!r.ok() || xattrs > r.left()) return std::nullopt;
    for (uint32_t j = 0; j < xattrs && r.ok(); ++j) {
      auto name = r.get_string();
      auto value = r.get_string();
      e.xattrs.emplace_back(std::move(name), std::move(value));
    }
    e.sparse = r.get<uint8_t>() != 0;
    auto segments = r.get<uint64_t>();
    if (!r.ok() || segments > r.left() / 24) return std::nullopt;
    for (uint64_t j = 0; j < segments; ++j) {
      DataSegment segment;
      segment.offset = r.get<uint64_t>();
      segment.length = r.get<uint64_t>();
      segment.data = r.get<uint64_t>();
      e.segments.push_back(segment);
    }
    if (!r.ok() || !data_fits(e, index.tar_size)) return std::nullopt;
    index.entries.push_back(std::move(e));
  }
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return index;
}

}  // namespace regfs::cache

// Writes tar archives for tests, header by header, so that tests can make
// both well-formed archives (ustar, PAX, GNU long names, base-256 numbers)
// and hostile ones (bad checksums, lies about sizes, truncation).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace regfs::cache::testing {

struct Header {
  std::string name = {};
  char type = '0';
  uint32_t mode = 0644;
  uint64_t uid = 0;
  uint64_t gid = 0;
  uint64_t size = 0;
  int64_t mtime = 1704067200;
  std::string link = {};
  uint32_t major = 0;
  uint32_t minor = 0;
  std::string prefix = {};
  bool gnu = false;  // GNU magic ("ustar  ") instead of POSIX
  bool base256_ids = false;
};

class TarBuilder {
 public:
  // One 512-byte header block, with its checksum.
  static std::string header_block(const Header& h) {
    std::string b(512, '\0');
    put(b, 0, 100, h.name);
    octal(b, 100, 8, h.mode);
    if (h.base256_ids) {
      base256(b, 108, 8, h.uid);
      base256(b, 116, 8, h.gid);
    } else {
      octal(b, 108, 8, h.uid);
      octal(b, 116, 8, h.gid);
    }
    octal(b, 124, 12, h.size);
    octal(b, 136, 12, static_cast<uint64_t>(h.mtime));
    b[156] = h.type;
    put(b, 157, 100, h.link);
    if (h.gnu) {
      std::memcpy(&b[257], "ustar  ", 8);
    } else {
      std::memcpy(&b[257], "ustar", 6);
      std::memcpy(&b[263], "00", 2);
    }
    octal(b, 329, 8, h.major);
    octal(b, 337, 8, h.minor);
    put(b, 345, 155, h.prefix);
    std::memset(&b[148], ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : b) sum += c;
    char chk[8];
    std::snprintf(chk, sizeof chk, "%06o", sum);
    std::memcpy(&b[148], chk, 7);
    return b;
  }

  // A header and its data, padded.
  TarBuilder& add(Header h, const std::string& data = {}) {
    if (h.size == 0) h.size = data.size();
    out_ += header_block(h);
    out_ += data;
    pad();
    return *this;
  }
  TarBuilder& file(const std::string& name, const std::string& data, uint32_t mode = 0644) {
    Header h;
    h.name = name;
    h.mode = mode;
    return add(h, data);
  }
  TarBuilder& pax(const std::map<std::string, std::string>& records) {
    std::string data;
    for (const auto& [k, v] : records) data += record(k, v);
    Header h;
    h.name = "PaxHeaders/x";
    h.type = 'x';
    return add(h, data);
  }
  TarBuilder& gnu_long(char type, const std::string& value) {
    Header h;
    h.name = "././@LongLink";
    h.type = type;
    h.gnu = true;
    return add(h, value + std::string(1, '\0'));
  }
  // A run of a sparse file: `data` at `offset`.
  struct Run {
    uint64_t offset;
    std::string data;
  };
  // A PAX 1.0 sparse file (GNU tar --sparse --format=posix): its map, in
  // decimal lines, heads its data.
  TarBuilder& sparse_pax10(const std::string& name, uint64_t real_size,
                           const std::vector<Run>& runs) {
    pax({{"GNU.sparse.major", "1"},
         {"GNU.sparse.minor", "0"},
         {"GNU.sparse.name", name},
         {"GNU.sparse.realsize", std::to_string(real_size)}});
    std::string body = std::to_string(runs.size()) + "\n";
    for (const auto& r : runs) {
      body += std::to_string(r.offset) + "\n" + std::to_string(r.data.size()) + "\n";
    }
    body.resize((body.size() + 511) / 512 * 512, '\0');
    for (const auto& r : runs) body += r.data;
    Header h;
    h.name = "GNUSparseFile.0/" + name;
    return add(h, body);
  }
  // An old GNU sparse file (typeflag 'S', up to 4 runs in the header).
  TarBuilder& sparse_oldgnu(const std::string& name, uint64_t real_size,
                            const std::vector<Run>& runs) {
    std::string data;
    for (const auto& r : runs) data += r.data;
    Header h;
    h.name = name;
    h.type = 'S';
    h.gnu = true;
    h.size = data.size();
    std::string b = header_block(h);
    for (size_t i = 0; i < runs.size() && i < 4; ++i) {
      octal(b, 386 + i * 24, 12, runs[i].offset);
      octal(b, 386 + i * 24 + 12, 12, runs[i].data.size());
    }
    octal(b, 483, 12, real_size);
    std::memset(&b[148], ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : b) sum += c;
    char chk[8];
    std::snprintf(chk, sizeof chk, "%06o", sum);
    std::memcpy(&b[148], chk, 7);
    out_ += b;
    out_ += data;
    pad();
    return *this;
  }
  TarBuilder& raw(const std::string& bytes) {
    out_ += bytes;
    return *this;
  }
  TarBuilder& end() {
    out_ += std::string(1024, '\0');
    return *this;
  }
  const std::string& str() const { return out_; }

  // "<len> key=value\n" with len counting itself.
  static std::string record(const std::string& k, const std::string& v) {
    size_t body = 1 + k.size() + 1 + v.size() + 1;
    size_t len = body + 1;
    while (std::to_string(len).size() + body != len) ++len;
    return std::to_string(len) + " " + k + "=" + v + "\n";
  }

 private:
  void pad() { out_.resize((out_.size() + 511) / 512 * 512, '\0'); }
  static void put(std::string& b, size_t at, size_t n, const std::string& s) {
    std::memcpy(&b[at], s.data(), std::min(n, s.size()));
  }
  static void octal(std::string& b, size_t at, size_t n, uint64_t v) {
    std::string s(n - 1, '0');
    for (size_t i = n - 1; i-- > 0 && v;) {
      s[i] = static_cast<char>('0' + (v & 7));
      v >>= 3;
    }
    put(b, at, n - 1, s);
  }
  static void base256(std::string& b, size_t at, size_t n, uint64_t v) {
    for (size_t i = n; i-- > 1;) {
      b[at + i] = static_cast<char>(v & 0xff);
      v >>= 8;
    }
    b[at] = static_cast<char>(0x80);
  }
  std::string out_;
};

}  // namespace regfs::cache::testing

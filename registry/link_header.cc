// RFC 8288 Link header parser: comma-separated "<target>; param=value" links
// where values may be quoted (and hold commas) and rel may list several
// space-separated relation types.
#include "registry/link_header.h"

#include <algorithm>
#include <cctype>

namespace regfs::registry {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool rel_has_next(std::string_view rel) {
  size_t start = 0;
  while (start < rel.size()) {
    size_t space = rel.find(' ', start);
    if (space == std::string_view::npos) space = rel.size();
    if (iequals(rel.substr(start, space - start), "next")) return true;
    start = space + 1;
  }
  return false;
}

class LinkParser {
 public:
  explicit LinkParser(std::string_view text) : text_(text) {}

  std::optional<std::string> next() {
    while (true) {
      skip([](char c) { return c == ' ' || c == '\t' || c == ','; });
      if (done()) return std::nullopt;
      if (peek() != '<') {
        skip_link();  // malformed: no target
        continue;
      }
      ++pos_;
      size_t close = text_.find('>', pos_);
      if (close == std::string_view::npos) return std::nullopt;
      std::string target(text_.substr(pos_, close - pos_));
      pos_ = close + 1;
      if (read_params_has_next()) return target;
    }
  }

 private:
  bool done() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }
  template <typename Pred>
  void skip(Pred pred) {
    while (!done() && pred(peek())) ++pos_;
  }
  static bool is_space(char c) { return c == ' ' || c == '\t'; }

  std::string read_quoted() {
    std::string out;
    ++pos_;
    while (!done()) {
      char c = text_[pos_++];
      if (c == '"') break;
      if (c == '\\' && !done()) c = text_[pos_++];
      out.push_back(c);
    }
    return out;
  }

  // Skips to the comma that ends this link, outside quotes.
  void skip_link() {
    while (!done() && peek() != ',') {
      if (peek() == '"') {
        read_quoted();
      } else {
        ++pos_;
      }
    }
  }

  // Reads "; name=value" params up to the end of the link.
  bool read_params_has_next() {
    bool next = false;
    while (true) {
      skip(is_space);
      if (done() || peek() == ',') return next;
      if (peek() != ';') {
        skip_link();
        return next;
      }
      ++pos_;
      skip(is_space);
      size_t start = pos_;
      skip([](char c) { return c != '=' && c != ';' && c != ',' && !is_space(c); });
      std::string_view name = text_.substr(start, pos_ - start);
      skip(is_space);
      std::string value;
      if (!done() && peek() == '=') {
        ++pos_;
        skip(is_space);
        if (!done() && peek() == '"') {
          value = read_quoted();
        } else {
          size_t vstart = pos_;
          skip([](char c) { return c != ';' && c != ',' && !is_space(c); });
          value = std::string(text_.substr(vstart, pos_ - vstart));
        }
      }
      if (iequals(name, "rel") && rel_has_next(value)) next = true;
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<std::string> parse_next_link(std::string_view header) {
  return LinkParser(header).next();
}

}  // namespace regfs::registry

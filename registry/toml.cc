// See toml.h. A recursive-descent parser over the whole text with a line
// counter for messages; a header selects the table that later key/value
// pairs go into, as the TOML spec says.
#include "registry/toml.h"

#include <cctype>
#include <string>
#include <vector>

#include "registry/error.h"

namespace regfs::registry {
namespace {

using nlohmann::json;

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  json parse() {
    json root = json::object();
    json* table = &root;
    while (true) {
      skip_blank_lines();
      if (at_end()) return root;
      if (peek() == '[') {
        table = header(root);
      } else {
        key_value(*table);
      }
      end_of_line();
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(ErrorKind::kInvalid, "line " + std::to_string(line_) + ": " + why);
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }
  char next() {
    char c = text_[pos_++];
    if (c == '\n') ++line_;
    return c;
  }
  bool starts_with(std::string_view s) const { return text_.substr(pos_).starts_with(s); }

  void skip_spaces() {
    while (peek() == ' ' || peek() == '\t') ++pos_;
  }
  void skip_comment() {
    if (peek() == '#') {
      while (!at_end() && peek() != '\n') ++pos_;
    }
  }
  // Spaces, comments and newlines (between statements, inside arrays).
  void skip_blank_lines() {
    while (true) {
      skip_spaces();
      skip_comment();
      if (peek() == '\n' || peek() == '\r') {
        next();
      } else {
        return;
      }
    }
  }
  void end_of_line() {
    skip_spaces();
    skip_comment();
    if (peek() == '\r') ++pos_;
    if (at_end()) return;
    if (peek() != '\n') fail("expected the end of the line");
    next();
  }

  std::string bare_key() {
    size_t start = pos_;
    while (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '-' || peek() == '_') {
      ++pos_;
    }
    if (pos_ == start) fail("expected a key");
    return std::string(text_.substr(start, pos_ - start));
  }
  // a.b."c d" -> {"a", "b", "c d"}
  std::vector<std::string> dotted_key() {
    std::vector<std::string> parts;
    while (true) {
      skip_spaces();
      if (peek() == '"') {
        parts.push_back(basic_string());
      } else if (peek() == '\'') {
        parts.push_back(literal_string());
      } else {
        parts.push_back(bare_key());
      }
      skip_spaces();
      if (peek() != '.') return parts;
      ++pos_;
    }
  }

  // The table a dotted path names, made on the way; arrays of tables step
  // into their last element.
  json* descend(json& root, const std::vector<std::string>& path, size_t count) {
    json* node = &root;
    for (size_t i = 0; i < count; ++i) {
      json& child = (*node)[path[i]];
      if (child.is_null()) child = json::object();
      if (child.is_array() && !child.empty() && child.back().is_object()) {
        node = &child.back();
      } else if (child.is_object()) {
        node = &child;
      } else {
        fail("key \"" + path[i] + "\" is not a table");
      }
    }
    return node;
  }

  json* header(json& root) {
    ++pos_;
    bool array = peek() == '[';
    if (array) ++pos_;
    auto path = dotted_key();
    if (peek() != ']' || (array && peek(1) != ']')) fail("expected ']'");
    pos_ += array ? 2 : 1;
    json* parent = descend(root, path, path.size() - 1);
    json& slot = (*parent)[path.back()];
    if (array) {
      if (slot.is_null()) slot = json::array();
      if (!slot.is_array()) fail("\"" + path.back() + "\" is not an array of tables");
      slot.push_back(json::object());
      return &slot.back();
    }
    if (slot.is_null()) slot = json::object();
    if (!slot.is_object()) fail("\"" + path.back() + "\" is not a table");
    return &slot;
  }

  void key_value(json& table) {
    auto path = dotted_key();
    if (peek() != '=') fail("expected '=' after a key");
    ++pos_;
    skip_spaces();
    json* parent = descend(table, path, path.size() - 1);
    if (parent->contains(path.back())) fail("key \"" + path.back() + "\" is defined twice");
    (*parent)[path.back()] = value();
  }

  json value() {
    char c = peek();
    if (starts_with("\"\"\"")) return multiline_string('"');
    if (starts_with("'''")) return multiline_string('\'');
    if (c == '"') return basic_string();
    if (c == '\'') return literal_string();
    if (c == '[') return array();
    if (c == '{') return inline_table();
    if (starts_with("true")) {
      pos_ += 4;
      return true;
    }
    if (starts_with("false")) {
      pos_ += 5;
      return false;
    }
    return number();
  }

  json number() {
    size_t start = pos_;
    while (std::isalnum(static_cast<unsigned char>(peek())) || peek() == '+' || peek() == '-' ||
           peek() == '.' || peek() == '_') {
      ++pos_;
    }
    std::string digits;
    for (char c : text_.substr(start, pos_ - start)) {
      if (c != '_') digits.push_back(c);
    }
    if (digits.empty()) fail("expected a value");
    try {
      size_t used = 0;
      if (digits.find_first_of(".eE") == std::string::npos) {
        long long n = std::stoll(digits, &used, 0);
        if (used == digits.size()) return n;
      } else {
        double d = std::stod(digits, &used);
        if (used == digits.size()) return d;
      }
    } catch (const std::exception&) {
    }
    fail("unsupported value \"" + digits + "\"");
  }

  void append_utf8(std::string& out, unsigned long cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  void escape(std::string& out) {
    char e = at_end() ? '\0' : next();
    switch (e) {
      case 'b':
        out.push_back('\b');
        return;
      case 't':
        out.push_back('\t');
        return;
      case 'n':
        out.push_back('\n');
        return;
      case 'f':
        out.push_back('\f');
        return;
      case 'r':
        out.push_back('\r');
        return;
      case '"':
        out.push_back('"');
        return;
      case '\\':
        out.push_back('\\');
        return;
      case 'u':
      case 'U': {
        size_t n = e == 'u' ? 4 : 8;
        std::string hex(text_.substr(pos_, n));
        if (hex.size() != n ||
            hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
          fail("bad \\u escape");
        }
        pos_ += n;
        append_utf8(out, std::stoul(hex, nullptr, 16));
        return;
      }
      default:
        fail("bad escape in a string");
    }
  }

  std::string basic_string() {
    ++pos_;
    std::string out;
    while (true) {
      if (at_end() || peek() == '\n') fail("unterminated string");
      char c = next();
      if (c == '"') return out;
      if (c == '\\') {
        escape(out);
      } else {
        out.push_back(c);
      }
    }
  }

  std::string literal_string() {
    ++pos_;
    size_t end = text_.find_first_of("'\n", pos_);
    if (end == std::string_view::npos || text_[end] != '\'') fail("unterminated string");
    std::string out(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }

  std::string multiline_string(char quote) {
    pos_ += 3;
    if (peek() == '\n') next();
    std::string out;
    std::string close(3, quote);
    while (!starts_with(close)) {
      if (at_end()) fail("unterminated string");
      char c = next();
      if (quote == '"' && c == '\\') {
        if (peek() == '\n' || peek() == ' ' || peek() == '\r') {  // line-ending backslash
          while (std::isspace(static_cast<unsigned char>(peek()))) next();
        } else {
          escape(out);
        }
      } else {
        out.push_back(c);
      }
    }
    pos_ += 3;
    return out;
  }

  json array() {
    ++pos_;
    json out = json::array();
    while (true) {
      skip_blank_lines();
      if (peek() == ']') {
        ++pos_;
        return out;
      }
      out.push_back(value());
      skip_blank_lines();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ']') {
        fail("expected ',' or ']' in an array");
      }
    }
  }

  json inline_table() {
    ++pos_;
    json out = json::object();
    skip_spaces();
    if (peek() == '}') {
      ++pos_;
      return out;
    }
    while (true) {
      key_value(out);
      skip_spaces();
      if (peek() == '}') {
        ++pos_;
        return out;
      }
      if (peek() != ',') fail("expected ',' or '}' in an inline table");
      ++pos_;
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
};

}  // namespace

json parse_toml(std::string_view text) { return Parser(text).parse(); }

}  // namespace regfs::registry

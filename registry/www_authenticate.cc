// RFC 7235 challenge parser. A header value holds one or more challenges,
// each a scheme followed by comma-separated auth-params (token or quoted
// string values, backslash escapes). A token not followed by '=' starts the
// next challenge, which is how "Bearer realm=..., Basic realm=..." splits.
#include "registry/www_authenticate.h"

#include <algorithm>
#include <cctype>

namespace regfs::registry {
namespace {

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

class ChallengeParser {
 public:
  explicit ChallengeParser(std::string_view text) : text_(text) {}

  std::vector<Challenge> parse() {
    std::vector<Challenge> out;
    while (true) {
      skip_separators();
      if (done()) break;
      std::string scheme(read_token());
      if (scheme.empty()) {
        ++pos_;  // not a token character: skip it
        continue;
      }
      Challenge challenge{lowercase(scheme), {}};
      read_params(&challenge);
      out.push_back(std::move(challenge));
    }
    return out;
  }

 private:
  bool done() const { return pos_ >= text_.size(); }
  char peek() const { return done() ? '\0' : text_[pos_]; }
  static bool is_space(char c) { return c == ' ' || c == '\t'; }
  static bool is_token_char(char c) {
    return c > ' ' && c < 127 && c != ',' && c != '=' && c != '"' && c != ';';
  }

  void skip_spaces() {
    while (!done() && is_space(peek())) ++pos_;
  }
  void skip_separators() {
    while (!done() && (is_space(peek()) || peek() == ',')) ++pos_;
  }
  std::string_view read_token() {
    size_t start = pos_;
    while (!done() && is_token_char(peek())) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  // A token value may carry '=' (token68 padding, base64 in values).
  std::string read_value() {
    if (peek() == '"') return read_quoted();
    size_t start = pos_;
    while (!done() && !is_space(peek()) && peek() != ',') ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }
  std::string read_quoted() {
    std::string out;
    ++pos_;  // opening quote
    while (!done()) {
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c == '\\' && !done()) c = text_[pos_++];
      out.push_back(c);
    }
    return out;  // unterminated: keep what there is
  }

  void read_params(Challenge* challenge) {
    while (true) {
      size_t before = pos_;
      skip_separators();
      if (done()) return;
      std::string_view name = read_token();
      if (name.empty()) {
        if (peek() == '"') {
          read_quoted();  // stray quoted string: skip it
          continue;
        }
        pos_ = before;
        return;
      }
      skip_spaces();
      if (peek() != '=') {
        pos_ = before;  // a new challenge starts here
        return;
      }
      ++pos_;
      skip_spaces();
      std::string value = read_value();
      challenge->params.emplace(lowercase(name), std::move(value));
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<Challenge> parse_www_authenticate(std::string_view header) {
  return ChallengeParser(header).parse();
}

}  // namespace regfs::registry

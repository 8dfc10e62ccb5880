// Image references and names, parsed the way docker's reference package does:
// the first path component is a registry host only if it looks like one, Docker
// Hub is "docker.io" to users and registry-1.docker.io on the wire, and its
// one-component names live under "library/".
#include "registry/reference.h"

#include <algorithm>
#include <cctype>

#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::registry {
namespace {

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

// The host of "host", "host:port", "[v6]:port" or a bare IPv6 address.
std::string_view strip_port(std::string_view registry) {
  if (registry.starts_with('[')) {
    auto close = registry.find(']');
    return close == std::string_view::npos ? registry : registry.substr(1, close - 1);
  }
  auto colon = registry.find(':');
  if (colon != std::string_view::npos && registry.find(':', colon + 1) == std::string_view::npos) {
    return registry.substr(0, colon);
  }
  return registry;  // no port, or a bare IPv6 address
}

bool is_ipv4_loopback(std::string_view host) {
  int parts = 0;
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = host.find('.', start);
    if (dot == std::string_view::npos) dot = host.size();
    auto part = host.substr(start, dot - start);
    if (part.empty() || part.size() > 3 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(std::string(part)) > 255) {
      return false;
    }
    if (parts == 0 && part != "127") return false;
    ++parts;
    start = dot + 1;
  }
  return parts == 4;
}

// A registry host: letters, digits, '.', '-', '_', an optional :port, or a
// bracketed IPv6 address.
bool is_valid_host(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  return std::all_of(host.begin(), host.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
  });
}

}  // namespace

std::string api_host(std::string_view registry) {
  if (canonical_registry(registry) == kDockerHub) return "registry-1.docker.io";
  return std::string(registry);
}

std::string canonical_registry(std::string_view host) {
  std::string lower = lowercase(host);
  if (lower == "index.docker.io" || lower == "registry-1.docker.io" ||
      lower == "registry.hub.docker.com") {
    return std::string(kDockerHub);
  }
  return lower;
}

bool looks_like_registry(std::string_view component) {
  return component.find_first_of(".:") != std::string_view::npos || component == "localhost";
}

bool is_loopback(std::string_view registry) {
  std::string host = lowercase(strip_port(registry));
  return host == "localhost" || host == "::1" || is_ipv4_loopback(host);
}

bool is_valid_path_component(std::string_view component) {
  size_t i = 0;
  const size_t n = component.size();
  auto alnum_run = [&] {
    size_t start = i;
    while (i < n && is_lower_alnum(component[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < n) {
    // Separator: ".", "_", "__" or one or more "-".
    if (component[i] == '.') {
      ++i;
    } else if (component[i] == '_') {
      ++i;
      if (i < n && component[i] == '_') ++i;
    } else if (component[i] == '-') {
      while (i < n && component[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

std::string name_limit_problem(std::string_view repository, std::string_view tag) {
  if (repository.size() > kMaxRepositoryLength) {
    return "a repository name has at most " + std::to_string(kMaxRepositoryLength) +
           " characters; this one has " + std::to_string(repository.size());
  }
  if (tag.size() > kMaxTagLength) {
    return "a tag has at most " + std::to_string(kMaxTagLength) + " characters; this one has " +
           std::to_string(tag.size());
  }
  return "";
}

bool is_valid_repository(std::string_view repository) {
  if (repository.empty() || repository.size() > 255) return false;
  size_t start = 0;
  while (true) {
    size_t slash = repository.find('/', start);
    auto component = repository.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (!is_valid_path_component(component)) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool is_valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  for (size_t i = 0; i < tag.size(); ++i) {
    unsigned char c = tag[i];
    bool ok = std::isalnum(c) || c == '_' || (i > 0 && (c == '.' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

std::string Reference::to_string() const {
  std::string out = registry + "/" + repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

Reference parse_reference(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return Error(ErrorKind::kInvalid,
                 "Cannot parse image reference \"" + std::string(text) + "\": " + std::string(why));
  };
  if (text.empty()) throw invalid("empty reference");
  Reference ref;
  std::string_view rest = text;

  if (auto at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!is_valid_digest(ref.digest)) throw invalid("invalid digest");
  }
  auto last_slash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!is_valid_tag(ref.tag)) throw invalid("invalid tag");
  }

  auto first_slash = rest.find('/');
  std::string_view first = rest.substr(0, first_slash);
  // Docker treats an uppercase first component as a host, too.
  bool has_upper =
      std::any_of(first.begin(), first.end(), [](unsigned char c) { return std::isupper(c); });
  if (first_slash != std::string_view::npos && (looks_like_registry(first) || has_upper)) {
    if (!is_valid_host(first)) throw invalid("invalid registry host");
    ref.registry = canonical_registry(first);
    rest = rest.substr(first_slash + 1);
  } else {
    ref.registry = std::string(kDockerHub);
  }
  ref.repository = std::string(rest);
  if (ref.registry == kDockerHub && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  if (!is_valid_repository(ref.repository)) {
    bool upper = std::any_of(ref.repository.begin(), ref.repository.end(),
                             [](unsigned char c) { return std::isupper(c); });
    throw invalid(upper ? "repository name must be lowercase" : "invalid repository name");
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

}  // namespace regfs::registry

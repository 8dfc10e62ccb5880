// Registry hosts, repository names, tags and image references, with Docker
// Hub's conventions (docker.io is served by registry-1.docker.io and
// single-component names live under library/).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace regfs::registry {

inline constexpr std::string_view kDockerHub = "docker.io";

// The host the API is served from: docker.io -> registry-1.docker.io.
std::string api_host(std::string_view registry);
// The name shown to users: index.docker.io, registry-1.docker.io -> docker.io;
// lowercases the host part.
std::string canonical_registry(std::string_view host);
// True if a first path component names a registry host rather than a
// namespace: it contains '.' or ':', or is "localhost" (docker's rule).
bool looks_like_registry(std::string_view component);
// localhost, 127.0.0.0/8, ::1 (with or without a port).
bool is_loopback(std::string_view registry);

// The distribution spec's limits on names, in characters.
inline constexpr size_t kMaxRepositoryLength = 255;
inline constexpr size_t kMaxTagLength = 128;

// Why a name cannot be pushed to, for a message ("a tag has at most 128
// characters; this one has 130"), or empty if it can.
std::string name_limit_problem(std::string_view repository, std::string_view tag);

// Distribution spec grammar: path components [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
// separated by '/', 255 characters at most in all.
bool is_valid_repository(std::string_view repository);
bool is_valid_path_component(std::string_view component);
// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
bool is_valid_tag(std::string_view tag);
// The two grammars in words, for messages.
inline constexpr std::string_view kRepositoryGrammar =
    "lowercase letters and digits, separated by '.', '_', '__' or '-'";
inline constexpr std::string_view kTagGrammar =
    "letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 128";

struct Reference {
  std::string registry;    // canonical, e.g. "docker.io", "localhost:5000"
  std::string repository;  // e.g. "library/nginx"
  std::string tag;         // empty if none given and a digest was
  std::string digest;      // empty unless "@sha256:..." was given

  // The tag or digest, whichever the API path takes ("latest" by default).
  std::string identifier() const { return digest.empty() ? tag : digest; }
  std::string to_string() const;
};

// Parses "[host[:port]/]name[:tag][@digest]" the way docker does: no host
// means docker.io; a one-component Docker Hub name gets "library/"; no tag
// and no digest means "latest". Throws Error(kInvalid) with a clear message.
Reference parse_reference(std::string_view text);

}  // namespace regfs::registry

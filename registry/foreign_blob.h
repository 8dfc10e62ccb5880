// Foreign (non-distributable) layers: a Docker foreign layer or an OCI
// non-distributable one whose registry does not hold it is fetched from the
// URLs its descriptor lists, as docker and containers/image do. Those hosts
// are not the registry: nothing of the registry's credentials goes there (no
// Authorization, no cookies, redirects followed bare), only http and https
// URLs are used, and the caller verifies size and digest as for any blob.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>

#include "registry/http.h"

namespace regfs::registry {

// Whether `url` may be fetched: an absolute http:// or https:// URL.
bool is_fetchable_url(std::string_view url);

class Transport;

// Streams [offset, offset + length) of the blob at `url` (length 0: to the
// end) to `sink` through `transport`'s one retry loop (resuming after a
// reset, retrying transient failures, following redirects) but sent with
// `http`, bare. Throws Error: kInvalid (not an http/https URL, or a redirect
// to one), kNotFound (404), kIo/kUnavailable/kTimeout otherwise.
void fetch_foreign_blob(Transport& transport, HttpClient& http, std::string_view url,
                        uint64_t offset, uint64_t length, std::chrono::milliseconds stall_timeout,
                        const std::function<bool(const char*, size_t)>& sink);

}  // namespace regfs::registry

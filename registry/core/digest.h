// Content digests. regfs supports sha256, the algorithm every registry uses.
#pragma once

#include <memory>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace regfs::registry {

// Streaming SHA-256: update() as bytes arrive, then digest() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // "sha256:<64 hex>"; the hasher is finished afterwards.
  std::string digest();

 private:
  struct Deleter {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, Deleter> ctx_;
};

// "sha256:<hex>" of `data`.
std::string sha256_digest(std::string_view data);
// True for "sha256:" followed by 64 lowercase hex digits.
bool is_valid_digest(std::string_view digest);
// The hex part of a valid digest.
std::string_view digest_hex(std::string_view digest);

}  // namespace regfs::registry

// SHA-256 over OpenSSL's EVP interface; the context is owned by a unique_ptr.
#include "registry/core/digest.h"

#include <openssl/evp.h>

#include "registry/core/error.h"

namespace regfs::registry {

void Sha256::Deleter::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorKind::kIo, "Cannot start sha256: OpenSSL failed");
  }
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(const void* data, size_t size) {
  if (size == 0) return;
  if (!ctx_ || EVP_DigestUpdate(ctx_.get(), data, size) != 1) {
    throw Error(ErrorKind::kIo, "Cannot hash data: sha256 context not usable");
  }
}

std::string Sha256::digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!ctx_ || EVP_DigestFinal_ex(ctx_.get(), md, &length) != 1) {
    throw Error(ErrorKind::kIo, "Cannot finish sha256: context not usable");
  }
  ctx_.reset();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  out.reserve(7 + 2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0xf]);
  }
  return out;
}

std::string sha256_digest(std::string_view data) {
  Sha256 hasher;
  hasher.update(data);
  return hasher.digest();
}

bool is_valid_digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.size() != kPrefix.size() + 64 || !digest.starts_with(kPrefix)) {
    return false;
  }
  for (char c : digest.substr(kPrefix.size())) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string_view digest_hex(std::string_view digest) {
  auto colon = digest.find(':');
  return colon == std::string_view::npos ? digest : digest.substr(colon + 1);
}

}  // namespace regfs::registry

// The body of a blob GET that may take several attempts: each attempt asks
// for the bytes not yet delivered ("Range: bytes=<next>-<last>"), drops the
// prefix a server that ignores Range sends again (200), and stops at the
// length asked for. Used by the registry's blob streams (registry/client.cc)
// and foreign layers' URLs (registry/foreign_blob.cc) alike. No I/O here.
#pragma once

#include <cstdint>
#include <functional>

#include "registry/http.h"

namespace regfs::registry {

class RangedBody {
 public:
  // [offset, offset + length) of the blob (length 0: to its end), given in
  // order to `sink`, which returns false to stop the transfer.
  RangedBody(uint64_t offset, uint64_t length,
             std::function<bool(const char* data, size_t size)> sink);

  // Sets the Range header and the body callbacks of `request` for the next
  // attempt. With `check_content_range`, a 206 whose Content-Range starts
  // elsewhere delivers nothing (bad_range()).
  void prepare(HttpRequest* request, bool check_content_range);

  uint64_t delivered() const { return delivered_; }  // bytes given to the sink, all attempts
  bool done() const { return length_ != 0 && delivered_ >= length_; }
  // Of the last attempt: the sink said stop, or the length asked for arrived.
  bool stopped() const { return stopped_; }
  bool complete() const { return complete_; }
  bool bad_range() const { return bad_range_; }

 private:
  const uint64_t offset_, length_;
  std::function<bool(const char*, size_t)> sink_;
  uint64_t delivered_ = 0;
  uint64_t start_ = 0, skip_ = 0;  // of the current attempt
  bool stopped_ = false, complete_ = false, bad_range_ = false;
};

}  // namespace regfs::registry

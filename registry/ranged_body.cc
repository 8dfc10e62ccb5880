#include "registry/ranged_body.h"

#include <algorithm>
#include <string>
#include <utility>

namespace regfs::registry {
namespace {

// The first byte of a Content-Range value "bytes <first>-<last>/<size>".
bool range_first(const std::string& value, uint64_t* first) {
  constexpr std::string_view kUnit = "bytes ";
  if (value.rfind(kUnit, 0) != 0) return false;
  size_t i = kUnit.size();
  uint64_t n = 0;
  size_t digits = 0;
  for (; i < value.size() && value[i] >= '0' && value[i] <= '9'; ++i, ++digits) {
    n = n * 10 + static_cast<uint64_t>(value[i] - '0');
  }
  if (digits == 0 || i == value.size() || value[i] != '-') return false;
  *first = n;
  return true;
}

}  // namespace

RangedBody::RangedBody(uint64_t offset, uint64_t length,
                       std::function<bool(const char* data, size_t size)> sink)
    : offset_(offset), length_(length), sink_(std::move(sink)) {}

void RangedBody::prepare(HttpRequest* request, bool check_content_range) {
  start_ = offset_ + delivered_;
  skip_ = 0;
  stopped_ = complete_ = bad_range_ = false;
  if (start_ > 0 || length_ != 0) {
    std::string range = "Range: bytes=" + std::to_string(start_) + "-";
    if (length_ != 0) range += std::to_string(offset_ + length_ - 1);
    request->headers.push_back(range);
  }
  request->on_headers = [this, check_content_range](int status, const HttpHeaders& headers) {
    if (status == 200) skip_ = start_;  // Range ignored: drop the prefix
    if (status == 206 && check_content_range) {
      auto range = headers.get("Content-Range");
      uint64_t first = 0;
      bad_range_ = !range || !range_first(*range, &first) || first != start_;
    }
  };
  request->on_body = [this](const char* data, size_t size) {
    if (bad_range_) return false;
    size_t dropped = static_cast<size_t>(std::min<uint64_t>(skip_, size));
    data += dropped;
    size -= dropped;
    skip_ -= dropped;
    const size_t received = size;
    if (length_ != 0) size = static_cast<size_t>(std::min<uint64_t>(size, length_ - delivered_));
    if (size > 0 && !sink_(data, size)) {
      stopped_ = true;
      return false;
    }
    delivered_ += size;
    complete_ = length_ != 0 && delivered_ >= length_;
    // Bytes past the range (a registry that ignored it) end the transfer; a
    // range that ends with the body lets curl finish it, keeping the
    // connection for the next request (an aborted one closes it).
    return size == received;
  };
}

}  // namespace regfs::registry

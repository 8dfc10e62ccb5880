#include "cache/lazy_layer.h"

#include <algorithm>

#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

// Consecutive chunks closer than this in the blob are fetched in one range.
constexpr uint64_t kMaxGap = 64 * 1024;

}  // namespace

LazyLayer::LazyLayer(std::string blob_digest, TocFormat format, std::vector<TocFile> files,
                     ReadRange read, ChunkStore chunks)
    : blob_digest_(std::move(blob_digest)),
      format_(format),
      files_(std::move(files)),
      read_(std::move(read)),
      chunks_(std::move(chunks)) {}

std::string LazyLayer::read_file(size_t index, uint64_t size) const {
  if (index >= files_.size()) {
    throw Error(ErrorKind::kInvalid, "Cannot read entry " + std::to_string(index) + " of layer " +
                                         blob_digest_ + ": no such entry");
  }
  const auto& file = files_[index];
  if (file.inline_data) return *file.inline_data;
  const auto& chunks = file.chunks;
  // Each chunk's bytes: kept ones from the store, the others fetched below.
  std::vector<std::optional<std::string>> pieces(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i].zeros) {
      pieces[i] = std::string(chunks[i].size, '\0');
    } else if (chunks_.get && !chunks[i].digest.empty()) {
      pieces[i] = chunks_.get(chunks[i].digest);
      if (pieces[i] && pieces[i]->size() != chunks[i].size) pieces[i].reset();
    }
  }
  for (size_t i = 0; i < chunks.size();) {
    if (pieces[i]) {
      ++i;
      continue;
    }
    // A run of missing chunks lying together in the blob: one range.
    size_t j = i + 1;
    uint64_t start = chunks[i].offset, end = chunks[i].end;
    while (j < chunks.size() && !pieces[j] && chunks[j].offset >= start &&
           chunks[j].offset <= end + kMaxGap) {
      end = std::max(end, chunks[j].end);
      ++j;
    }
    std::string compressed = read_(start, end - start);
    if (compressed.size() != end - start) {
      throw Error(ErrorKind::kIo, "Cannot read layer " + blob_digest_ + ": short range");
    }
    for (; i < j; ++i) {
      const auto& c = chunks[i];
      std::string_view range(compressed.data() + (c.offset - start), c.end - c.offset);
      pieces[i] = decompress_chunk(format_, c, range);
      if (chunks_.put && !c.digest.empty() && c.size <= kMaxKeptChunk) {
        chunks_.put(c.digest, *pieces[i]);
      }
    }
  }
  std::string out;
  out.reserve(size);
  for (auto& piece : pieces) out += *piece;
  if (out.size() != size) {
    throw Error(ErrorKind::kIntegrity, "Cannot read a file of layer " + blob_digest_ + ": " +
                                           std::to_string(out.size()) + " bytes, not " +
                                           std::to_string(size));
  }
  if (!file.digest.empty()) {
    registry::Sha256 hash;
    hash.update(out);
    auto actual = hash.digest();
    if (actual != file.digest) {
      throw Error(ErrorKind::kIntegrity, "Cannot use a file of layer " + blob_digest_ +
                                             ": its digest is " + actual + ", the table says " +
                                             file.digest);
    }
  }
  return out;
}

}  // namespace regfs::cache

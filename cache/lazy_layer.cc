#include "cache/lazy_layer.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>

#include "registry/core/deadline.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

// Consecutive chunks closer than this in the blob are fetched in one range.
constexpr uint64_t kMaxGap = 64 * 1024;

// A chunk whose compressed data does not decompress is as wrong as one whose
// digest does not match: EIO, not EINVAL.
[[noreturn]] void rethrow_as_integrity() {
  try {
    throw;
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kInvalid) throw;
    throw Error(ErrorKind::kIntegrity, e.what());
  }
}

}  // namespace

// One open file of a lazy layer: READs fetch the chunks they cover (see the
// header), keeping the last kKeptChunks; a file verified only whole is held
// whole once read.
class LazyFile : public LayerData {
 public:
  LazyFile(std::shared_ptr<const LazyLayer> layer, size_t index, uint64_t size)
      : layer_(std::move(layer)),
        index_(index),
        size_(size),
        by_chunks_(layer_->reads_by_chunks(index)) {}

  size_t read_entry(const TarEntry&, uint64_t offset, char* out, size_t size) const override {
    if (offset >= size_) return 0;
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, size_ - offset));
    if (n == 0) return 0;
    const auto& file = layer_->files_[index_];
    if (file.inline_data) {
      std::memcpy(out, file.inline_data->data() + offset, n);
      return n;
    }
    if (!by_chunks_) {
      LazyLayer::Bytes whole;
      {
        std::lock_guard lock(mutex_);
        whole = whole_;
      }
      if (!whole) {
        auto pending = layer_->whole(index_, size_);
        wait({file.chunks.size()}, {pending});  // (one past the chunks: the whole file)
        whole = pending.get();
        std::lock_guard lock(mutex_);
        whole_ = whole;
      }
      std::memcpy(out, whole->data() + offset, n);
      return n;
    }
    const auto& chunks = file.chunks;
    auto after = [](uint64_t at, const TocChunk& c) { return at < c.file_offset; };
    size_t first = static_cast<size_t>(
        std::upper_bound(chunks.begin(), chunks.end(), offset, after) - chunks.begin() - 1);
    size_t last = static_cast<size_t>(
        std::upper_bound(chunks.begin(), chunks.end(), offset + n - 1, after) - chunks.begin() - 1);
    std::vector<LazyLayer::Bytes> pieces(last - first + 1);
    std::vector<size_t> missing;
    {
      std::lock_guard lock(mutex_);
      for (size_t i = first; i <= last; ++i) {
        if (chunks[i].zeros) continue;
        auto kept =
            std::find_if(kept_.begin(), kept_.end(), [i](const auto& k) { return k.first == i; });
        if (kept != kept_.end()) {
          pieces[i - first] = kept->second;
        } else {
          missing.push_back(i);
        }
      }
    }
    if (!missing.empty()) {
      auto pending = layer_->chunks(index_, missing);
      wait(missing, pending);
      for (size_t k = 0; k < missing.size(); ++k) pieces[missing[k] - first] = pending[k].get();
      std::lock_guard lock(mutex_);
      for (size_t k = 0; k < missing.size(); ++k) {
        kept_.emplace_back(missing[k], pieces[missing[k] - first]);
        if (kept_.size() > LazyLayer::kKeptChunks) kept_.pop_front();
      }
    }
    size_t done = 0;
    for (size_t i = first; i <= last; ++i) {
      const auto& c = chunks[i];
      uint64_t from = offset + done - c.file_offset;
      size_t take = static_cast<size_t>(std::min<uint64_t>(c.size - from, n - done));
      if (c.zeros) {
        std::memset(out + done, 0, take);
      } else {
        const auto& piece = *pieces[i - first];
        std::memcpy(out + done, piece.data() + from, take);
      }
      done += take;
    }
    return n;
  }

 private:
  // Waits for `pending` (of chunks `which`) within the thread's deadline.
  // The kernel repeats a READ that failed (its readahead's, then its own):
  // a repeat within kRepeat of a READ that gave up waiting for the same
  // chunk, still on its way, fails at once rather than waiting again.
  void wait(const std::vector<size_t>& which,
            const std::vector<LazyLayer::Pending>& pending) const {
    constexpr auto kRepeat = std::chrono::seconds(1);
    auto what = "reading a chunk of layer " + layer_->blob_digest();
    {
      std::lock_guard lock(mutex_);
      if (gave_up_chunk_ == which[0] && std::chrono::steady_clock::now() - gave_up_at_ < kRepeat &&
          pending[0].wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        throw Error(ErrorKind::kTimeout, "Cannot finish " + what +
                                             ": it is still on its way (the read before gave up "
                                             "at its deadline)");
      }
    }
    for (size_t k = 0; k < which.size(); ++k) {
      try {
        registry::wait_within_deadline(pending[k], what);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::kTimeout) {
          std::lock_guard lock(mutex_);
          gave_up_chunk_ = which[k];
          gave_up_at_ = std::chrono::steady_clock::now();
        }
        throw;
      }
    }
  }

  std::shared_ptr<const LazyLayer> layer_;
  size_t index_;
  uint64_t size_;
  bool by_chunks_;
  mutable std::mutex mutex_;  // guards kept_, whole_ and gave_up_*
  mutable std::deque<std::pair<size_t, LazyLayer::Bytes>> kept_;  // last chunks read, by index
  mutable LazyLayer::Bytes whole_;                                // a file verified only whole
  mutable size_t gave_up_chunk_ = SIZE_MAX;  // the chunk the last READ to give up waited for
  mutable std::chrono::steady_clock::time_point gave_up_at_{};
};

LazyLayer::LazyLayer(std::string blob_digest, TocFormat format, std::vector<TocFile> files,
                     ReadRange read, ChunkStore chunks, Submit submit)
    : blob_digest_(std::move(blob_digest)),
      format_(format),
      files_(std::move(files)),
      read_(std::move(read)),
      chunks_(std::move(chunks)),
      submit_(std::move(submit)) {}

bool LazyLayer::reads_by_chunks(size_t index) const {
  if (index >= files_.size()) return false;
  const auto& file = files_[index];
  if (file.inline_data) return true;
  return std::all_of(file.chunks.begin(), file.chunks.end(),
                     [](const TocChunk& c) { return c.zeros || !c.digest.empty(); });
}

std::shared_ptr<const LayerData> LazyLayer::open_file(size_t index, uint64_t size) const {
  if (index >= files_.size()) {
    throw Error(ErrorKind::kInvalid, "Cannot read entry " + std::to_string(index) + " of layer " +
                                         blob_digest_ + ": no such entry");
  }
  return std::make_shared<LazyFile>(shared_from_this(), index, size);
}

void LazyLayer::run(std::function<void()> task) const {
  if (submit_) {
    submit_(std::move(task));
  } else {
    task();
  }
}

std::vector<LazyLayer::Pending> LazyLayer::chunks(size_t index,
                                                  const std::vector<size_t>& which) const {
  const auto& chunks = files_[index].chunks;
  std::vector<Pending> out(which.size());
  std::vector<size_t> claimed;
  auto claims = std::make_shared<Claims>();
  for (size_t k = 0; k < which.size(); ++k) {
    auto [result, claim] = flights_.claim(chunks[which[k]].digest);
    out[k] = std::move(result);
    if (!claim) continue;  // joined to a fetch in flight
    claimed.push_back(which[k]);
    claims->push_back(std::move(claim));
  }
  if (!claimed.empty()) {
    auto self = shared_from_this();
    run([self, index, claimed, claims] { self->fetch(index, claimed, *claims); });
  }
  return out;
}

void LazyLayer::fetch(size_t index, const std::vector<size_t>& which, const Claims& claims) const {
  const auto& chunks = files_[index].chunks;
  std::vector<bool> set(which.size(), false);
  auto settle = [&](size_t k, Bytes bytes, std::exception_ptr error) {
    if (error) {
      claims[k]->set_exception(error);
    } else {
      claims[k]->set_value(std::move(bytes));
    }
    set[k] = true;
  };
  if (chunks_.get) {
    for (size_t k = 0; k < which.size(); ++k) {
      const auto& c = chunks[which[k]];
      try {
        auto kept = chunks_.get(c.digest);
        if (kept && kept->size() == c.size) {
          settle(k, std::make_shared<const std::string>(std::move(*kept)), nullptr);
        }
      } catch (const std::exception& e) {  // a store that cannot read: fetch it
        LOG(kWarning) << "Cannot read kept chunk " << c.digest << ": " << e.what();
      }
    }
  }
  for (size_t k = 0; k < which.size();) {
    if (set[k]) {
      ++k;
      continue;
    }
    // A run of missing chunks lying together in the blob: one range.
    size_t j = k + 1;
    uint64_t start = chunks[which[k]].offset, end = chunks[which[k]].end;
    while (j < which.size() && !set[j] && chunks[which[j]].offset >= start &&
           chunks[which[j]].offset <= end + kMaxGap) {
      end = std::max(end, chunks[which[j]].end);
      ++j;
    }
    std::string compressed;
    std::exception_ptr failed;
    try {
      compressed = read_(start, end - start);
      if (compressed.size() != end - start) {
        throw Error(ErrorKind::kIo, "Cannot read layer " + blob_digest_ + ": short range");
      }
    } catch (...) {
      failed = std::current_exception();
    }
    for (; k < j; ++k) {
      if (failed) {
        settle(k, nullptr, failed);
        continue;
      }
      const auto& c = chunks[which[k]];
      Bytes bytes;
      try {
        try {
          std::string_view range(compressed.data() + (c.offset - start), c.end - c.offset);
          bytes = std::make_shared<const std::string>(decompress_chunk(format_, c, range));
        } catch (...) {
          rethrow_as_integrity();
        }
      } catch (const std::exception& e) {
        LOG(kError) << "Cannot use a chunk of layer " << blob_digest_ << ": " << e.what();
        settle(k, nullptr, std::current_exception());
        continue;
      }
      if (chunks_.put && c.size <= kMaxKeptChunk) {
        try {
          chunks_.put(c.digest, *bytes);
        } catch (const std::exception& e) {  // served all the same, fetched again next time
          LOG(kWarning) << "Cannot keep chunk " << c.digest << ": " << e.what();
        }
      }
      settle(k, std::move(bytes), nullptr);
    }
  }
}

LazyLayer::Pending LazyLayer::whole(size_t index, uint64_t size) const {
  auto [out, claim] = flights_.claim("file:" + std::to_string(index));
  if (!claim) return out;  // joined
  auto self = shared_from_this();
  run([self, index, size, claim = std::shared_ptr(std::move(claim))] {
    try {
      try {
        claim->set_value(std::make_shared<const std::string>(self->read_file(index, size)));
      } catch (...) {
        rethrow_as_integrity();
      }
    } catch (...) {
      claim->set_exception(std::current_exception());
    }
  });
  return out;
}

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

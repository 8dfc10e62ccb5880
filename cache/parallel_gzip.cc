#include "cache/parallel_gzip.h"

#include <zlib.h>

#include <algorithm>
#include <string_view>

#include "registry/core/error.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kWindow = 32 << 10;  // deflate's window: the dictionary a block gets

void put_le32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Appends to `out` the raw deflate of `input` at `level` (0: stored blocks)
// with `dictionary` as the window before it, ended with a sync flush, or
// finished when `last`. False if zlib fails.
bool deflate_piece(std::string_view dictionary, std::string_view input, int level, bool last,
                   std::string& out) {
  z_stream z{};
  // Raw deflate (windowBits -15): the gzip framing is written once, around all blocks.
  if (deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return false;
  if (level != 0 && !dictionary.empty()) {
    deflateSetDictionary(&z, reinterpret_cast<const Bytef*>(dictionary.data()),
                         static_cast<uInt>(dictionary.size()));
  }
  size_t start = out.size();
  out.resize(start + deflateBound(&z, input.size()) + 16);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
  z.avail_in = static_cast<uInt>(input.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data() + start);
  z.avail_out = static_cast<uInt>(out.size() - start);
  int rc = deflate(&z, last ? Z_FINISH : Z_SYNC_FLUSH);
  bool ok = last ? rc == Z_STREAM_END : (rc == Z_OK && z.avail_in == 0 && z.avail_out > 0);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  return ok;
}

}  // namespace

ParallelGzip::ParallelGzip(int level, unsigned workers, Emit emit)
    : level_(level), emit_(std::move(emit)) {
  // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix), as zlib writes it.
  static const char kHeader[] = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 0, 3};
  emit_(kHeader, sizeof kHeader);
  block_.reserve(kBlock);
  for (unsigned i = 0; i < std::max(1u, workers); ++i) workers_.emplace_back([this] { work(); });
}

ParallelGzip::~ParallelGzip() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

void ParallelGzip::write(const char* data, size_t size) {
  while (size > 0) {
    size_t take = std::min(size, kBlock - block_.size());
    block_.append(data, take);
    data += take;
    size -= take;
    if (block_.size() == kBlock) submit(false);
  }
}

void ParallelGzip::finish() {
  if (finished_) return;
  finished_ = true;
  submit(true);
  while (!pending_.empty()) emit_oldest();
  std::string trailer;
  put_le32(trailer, crc_);
  put_le32(trailer, static_cast<uint32_t>(length_));
  emit_(trailer.data(), trailer.size());
}

void ParallelGzip::submit(bool last) {
  auto job = std::make_shared<Job>();
  job->input.swap(block_);
  job->dictionary = previous_;
  job->last = last;
  if (job->input.size() >= kWindow) {
    previous_.assign(job->input, job->input.size() - kWindow, kWindow);
  } else {
    previous_ += job->input;
    if (previous_.size() > kWindow) previous_.erase(0, previous_.size() - kWindow);
  }
  block_.clear();
  block_.reserve(kBlock);
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(job);
    pending_.push_back(job);
  }
  work_ready_.notify_one();
  while (pending_.size() > 2 * workers_.size()) emit_oldest();
}

void ParallelGzip::emit_oldest() {
  std::shared_ptr<Job> job = pending_.front();
  {
    std::unique_lock lock(mutex_);
    job_done_.wait(lock, [&] { return job->done; });
  }
  pending_.pop_front();
  if (job->failed) throw Error(ErrorKind::kIo, "Cannot gzip the layer");
  emit_(job->output.data(), job->output.size());
  crc_ =
      static_cast<uint32_t>(crc32_combine(crc_, job->crc, static_cast<z_off_t>(job->input.size())));
  length_ += job->input.size();
}

void ParallelGzip::work() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
    }
    deflate_block(*job, level_);
    {
      std::lock_guard lock(mutex_);
      job->done = true;
    }
    job_done_.notify_all();
  }
}

void ParallelGzip::deflate_block(Job& job, int level) {
  job.crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(job.input.data()),
                                        static_cast<uInt>(job.input.size())));
  const std::string_view input = job.input;
  if (input.size() <= kSample) {
    job.failed = !deflate_piece(job.dictionary, input, level, job.last, job.output);
    return;
  }
  const std::string_view sample = input.substr(0, kSample);
  if (!deflate_piece(job.dictionary, sample, level, false, job.output)) {
    job.failed = true;
    return;
  }
  // The rest's dictionary: the 32 KiB before it, from the block's dictionary and its sample.
  std::string dictionary = job.dictionary;
  dictionary.append(sample);
  if (dictionary.size() > kWindow) dictionary.erase(0, dictionary.size() - kWindow);
  bool compresses = job.output.size() < sample.size() - sample.size() / kStoreBelow;
  job.failed = !deflate_piece(dictionary, input.substr(kSample), compresses ? level : 0, job.last,
                              job.output);
}

}  // namespace regfs::cache

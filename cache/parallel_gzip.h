// gzip on every core, as pigz does it: the input is cut into blocks, each
// deflated on a worker thread with the 32 KiB before it as its dictionary
// and ended with a sync flush (the last one finished), so that the raw
// deflate streams, concatenated in order, are one deflate stream; one gzip
// header (no name, no time) and trailer (CRC-32 combined per block, the
// length mod 2^32) around them (RFC 1952, RFC 1951). Data that does not
// compress is stored: a block whose first kSample bytes do not shrink by
// 1/kStoreBelow at `level` has the rest of its bytes in stored deflate
// blocks (a copy, not a deflate: random bytes, compressed files), as
// decided from the block's bytes alone. The same input, level and block
// size always give the same bytes. At most two blocks per worker are in
// memory at once.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace regfs::cache {

class ParallelGzip {
 public:
  // Receives the compressed bytes, in order, on the thread that calls
  // write() or finish().
  using Emit = std::function<void(const char* data, size_t size)>;

  // `workers` threads (at least 1) at zlib `level`.
  ParallelGzip(int level, unsigned workers, Emit emit);
  ~ParallelGzip();
  ParallelGzip(const ParallelGzip&) = delete;
  ParallelGzip& operator=(const ParallelGzip&) = delete;

  void write(const char* data, size_t size);
  // Ends the stream (trailer included). Throws Error(kIo) if a block failed.
  void finish();

  static constexpr size_t kBlock = 256 << 10;
  // Deflated first in each block, to tell whether the rest compresses.
  static constexpr size_t kSample = 16 << 10;
  static constexpr size_t kStoreBelow = 32;

 private:
  struct Job {
    std::string input;
    std::string dictionary;  // the 32 KiB of input before this block (less at the start)
    bool last = false;
    std::string output;
    uint32_t crc = 0;
    bool done = false;
    bool failed = false;
  };

  void submit(bool last);
  void emit_oldest();
  void work();
  static void deflate_block(Job& job, int level);

  const int level_;
  const Emit emit_;
  std::string block_;     // input gathered for the next job
  std::string previous_;  // the last 32 KiB of input submitted
  uint32_t crc_ = 0;      // of all input emitted
  uint64_t length_ = 0;   // input bytes emitted
  bool finished_ = false;

  std::mutex mutex_;  // guards queue_, the jobs' output fields and stopping_
  std::condition_variable work_ready_;
  std::condition_variable job_done_;
  std::deque<std::shared_ptr<Job>> queue_;    // submitted, not yet taken by a worker
  std::deque<std::shared_ptr<Job>> pending_;  // submitted, not yet emitted, in order
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace regfs::cache

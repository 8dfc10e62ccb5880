// A layer read through its table of contents (cache/toc.h) instead of whole:
// its entries come from the table, and a regular file's bytes are the
// decompressed chunks of the compressed ranges the table gives, fetched when
// READs need them (by the caller's ReadRange: HTTP ranges).
//
// A READ of a file (LazyFile, one per open file) fetches only the chunks
// covering the bytes asked for: those kept by the caller's ChunkStore (the
// blob cache, keyed by chunk digest, so a chunk is fetched once whichever
// file or layer holds it) are read from it, consecutive missing ones lying
// together in the blob in one range. The fetching, decompressing and hashing
// run on the caller's Submit (a worker pool), one task per chunk in flight
// however many READs need it (single flight by chunk digest); the READ waits
// within the thread's deadline (registry/core/deadline.h: ETIMEDOUT when it
// passes, the fetch going on so that a later READ gets its result).
//
// Verification: every chunk is checked against its chunk digest (eStargz
// and zstd:chunked `chunkDigest`) before a byte of it is served or kept; the
// table itself was checked against the layer's annotation, which the
// manifest digest covers. A file read by chunks is therefore not hashed
// whole: its file `digest` is checked only when the file is read whole. A
// file one of whose chunks has no chunk digest can only be verified whole:
// it is fetched whole at its first READ, checked against its file digest,
// and held in memory by its open file (a single-chunk file without a
// chunkDigest has its file digest stand for the chunk's, cache/toc.cc).
// A chunk that does not match is EIO (kIntegrity) for the READs that need
// it, and only those: the rest of the file still reads.
//
// Memory: an open file holds the last kKeptChunks chunks it read (reads in
// order use each chunk once), never the whole file unless it is read whole.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/layer_data.h"
#include "cache/toc.h"
#include "registry/core/single_flight.h"

namespace regfs::cache {

class LazyLayer : public std::enable_shared_from_this<LazyLayer> {
 public:
  // `length` bytes of the layer blob at `offset`; throws Error.
  using ReadRange = std::function<std::string(uint64_t offset, uint64_t length)>;
  // Verified uncompressed chunks by their sha256: get (nullopt if absent)
  // and put; unset functions keep nothing.
  struct ChunkStore {
    std::function<std::optional<std::string>(const std::string& digest)> get;
    std::function<void(const std::string& digest, std::string_view bytes)> put;
  };
  // Runs a task off the calling thread (a worker pool's submit); unset: the
  // task runs on the calling thread.
  using Submit = std::function<void(std::function<void()>)>;
  // Chunks larger than this are not kept (fetched again when read again).
  static constexpr uint64_t kMaxKeptChunk = 16 << 20;
  // Chunks an open file holds in memory (the last ones it read).
  static constexpr size_t kKeptChunks = 2;

  // `files` is parallel to the entries of the layer's LayerIndex. Made with
  // std::make_shared (open_file shares it with the files it opens).
  LazyLayer(std::string blob_digest, TocFormat format, std::vector<TocFile> files, ReadRange read,
            ChunkStore chunks = {}, Submit submit = {});

  const std::string& blob_digest() const { return blob_digest_; }
  TocFormat format() const { return format_; }
  // The bytes of regular file `index` (of the LayerIndex's entries), of size
  // `size`, fetched now on this thread. Throws Error(kIntegrity) for a chunk
  // or file digest mismatch, kInvalid for compressed data that does not
  // decompress, what read throws.
  std::string read_file(size_t index, uint64_t size) const;
  // Whether file `index` is read by chunks (every chunk has a digest or is a
  // hole) rather than whole.
  bool reads_by_chunks(size_t index) const;
  // A reader of regular file `index` of `size` bytes: LayerData::read_entry
  // (its entry argument ignored) fetches the chunks a read covers, as above.
  // Throws Error(kInvalid) if `index` is not a file of the layer.
  std::shared_ptr<const LayerData> open_file(size_t index, uint64_t size) const;

 private:
  friend class LazyFile;
  using Bytes = std::shared_ptr<const std::string>;
  using Pending = std::shared_future<Bytes>;

  // Chunks `which` (indexes into file `index`'s chunks, ascending): the
  // results to come of each, joined to fetches in flight or started now as
  // one task. A result holds the verified bytes, or Error(kIntegrity) for a
  // chunk that does not match, what the fetch threw.
  std::vector<Pending> chunks(size_t index, const std::vector<size_t>& which) const;
  // The whole of file `index`, verified, on the same terms.
  Pending whole(size_t index, uint64_t size) const;
  using Claims = std::vector<std::unique_ptr<registry::SharedFlight<Bytes>::Claim>>;
  // On a Submit task: fetches chunks `which` of file `index` (from the store
  // or by ranges) and settles their `claims` (parallel).
  void fetch(size_t index, const std::vector<size_t>& which, const Claims& claims) const;
  void run(std::function<void()> task) const;

  std::string blob_digest_;
  TocFormat format_;
  std::vector<TocFile> files_;
  ReadRange read_;
  ChunkStore chunks_;
  Submit submit_;
  // Fetches in flight, by chunk digest ("file:<index>" for a whole file).
  mutable registry::SharedFlight<Bytes> flights_;
};

}  // namespace regfs::cache

#include "cache/layer_store.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cache/layout.h"
#include "cache/tar_reader.h"
#include "cache/temp_file.h"
#include "cache/unique_fd.h"
#include "registry/core/deadline.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kMaxIndexFile = 1u << 30;

}  // namespace

LayerStore::LayerStore(std::filesystem::path root, FileHooks hooks, uint64_t spacing,
                       uint64_t max_span)
    : root_(std::move(root)), hooks_(std::move(hooks)), spacing_(spacing), max_span_(max_span) {
  make_private_dir(CacheLayout::layer_digests(root_));
  make_private_dir(CacheLayout::layer_tmp(root_));
}

void LayerStore::remove_older_version(const std::string& diff_id) const {
  LOG(kInfo) << "Removing the layer index of " << diff_id
             << " of an older version (and its uncompressed copy)";
  std::error_code ec;
  for (const auto& path : {tar_path(diff_id), index_path(diff_id)}) {
    std::filesystem::remove(path, ec);
    hook(hooks_.track, path);  // forgotten
  }
}

std::filesystem::path LayerStore::tar_path(const std::string& diff_id) const {
  if (!registry::is_valid_digest(diff_id)) {
    throw Error(ErrorKind::kInvalid, "Cannot use diff_id " + diff_id + ": not a sha256 digest");
  }
  return CacheLayout::layer_tar(root_, diff_id);
}

std::filesystem::path LayerStore::index_path(const std::string& diff_id) const {
  tar_path(diff_id);  // validates
  return CacheLayout::layer_index(root_, diff_id);
}

void LayerStore::hook(const std::function<void(const std::filesystem::path&)>& f,
                      const std::filesystem::path& path) const {
  if (f) f(path);
}

std::shared_ptr<const LayerIndex> LayerStore::opened(LayerIndex index,
                                                     const std::filesystem::path& blob) const {
  auto tar = tar_path(index.diff_id);
  auto idx = index_path(index.diff_id);
  const auto& source = index.tar_copy ? tar : blob;
  UniqueFd fd(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    throw Error(ErrorKind::kIo,
                "Cannot open layer " + source.string() + ": " + std::strerror(errno));
  }
  struct stat st;
  if (index.points.empty() &&
      (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != index.tar_size)) {
    throw Error(ErrorKind::kIo, "Cannot use layer " + source.string() + ": not its indexed size");
  }
  if (index.points.empty()) {
    index.data = std::make_shared<TarFileData>(std::move(fd), source.string());
  } else {
    index.data = std::make_shared<SeekableData>(std::move(fd), blob.string(), index.compression,
                                                index.points, index.tar_size);
    index.points.clear();  // SeekableData has them
    index.points.shrink_to_fit();
  }
  bool copy = index.tar_copy;
  hook(hooks_.pin, idx);
  hook(copy ? hooks_.pin : hooks_.hold_blob, copy ? tar : blob);
  return std::shared_ptr<const LayerIndex>(
      new LayerIndex(std::move(index)), [this, tar, idx, blob, copy](const LayerIndex* p) {
        delete p;  // closes the file first
        hook(hooks_.unpin, idx);
        hook(copy ? hooks_.unpin : hooks_.release_blob, copy ? tar : blob);
      });
}

std::shared_ptr<const LayerIndex> LayerStore::load(const std::string& diff_id,
                                                   Compression compression,
                                                   const std::filesystem::path& blob) const {
  auto tar = tar_path(diff_id);
  auto idx = index_path(diff_id);
  if (!std::filesystem::exists(idx)) return nullptr;
  hook(hooks_.pin, tar);  // before looking, so that they cannot go once seen
  hook(hooks_.pin, idx);
  std::shared_ptr<const LayerIndex> result;
  auto bytes = read_small_file(idx, kMaxIndexFile);
  bool older = bytes && !is_current_index(*bytes);
  auto index = bytes && !older ? parse_index(*bytes) : std::nullopt;
  if (older) {
    // Removed below, with the copy older versions kept of every layer.
  } else if (!index || index->diff_id != diff_id) {
    LOG(kWarning) << "Cannot use the layer index of " << diff_id
                  << ": incomplete or damaged; re-indexing";
  } else if (index->compression != compression || index->blob != blob.filename().string()) {
    LOG(kInfo) << "The layer index of " << diff_id << " is of another blob; re-indexing";
  } else {
    try {
      result = opened(std::move(*index), blob);
    } catch (const Error& e) {
      LOG(kWarning) << e.what() << "; re-indexing";
    }
  }
  hook(hooks_.unpin, tar);
  hook(hooks_.unpin, idx);
  if (older) remove_older_version(diff_id);
  return result;
}

std::shared_ptr<const LayerIndex> LayerStore::find(const std::string& diff_id) {
  std::lock_guard lock(mutex_);
  auto it = loaded_.find(diff_id);
  return it == loaded_.end() ? nullptr : it->second.lock();
}

std::shared_ptr<const LayerIndex> LayerStore::get(
    const std::string& diff_id, Compression compression,
    const std::function<std::filesystem::path()>& blob, std::atomic<uint64_t>* entries) {
  if (auto index = find(diff_id)) return index;
  // Loaded or made on this thread, unless another caller does it already.
  auto work = indexing_.run_here(diff_id, [&]() -> std::shared_ptr<const LayerIndex> {
    auto path = blob();
    if (auto index = load(diff_id, compression, path)) {
      std::lock_guard lock(mutex_);
      loaded_[diff_id] = index;
      return index;
    }
    return this->index(path, compression, diff_id, entries);
  });
  registry::wait_within_deadline(work, "index layer " + diff_id + " (another reader indexes it)");
  return work.get();
}

std::shared_ptr<const LayerIndex> LayerStore::index(const std::filesystem::path& blob,
                                                    Compression compression,
                                                    const std::string& diff_id,
                                                    std::atomic<uint64_t>* entries) {
  std::string hex(registry::digest_hex(diff_id));
  std::string suffix = unique_suffix();
  auto input =
      open_decompressor(blob, compression, compression == Compression::kNone ? 0 : spacing_);
  registry::Sha256 hash;
  uint64_t total = 0;
  auto source = [&](char* data, size_t size) {
    size_t n = input->read(data, size);
    hash.update(data, n);
    total += n;
    return n;
  };
  LayerIndex index;
  index.diff_id = diff_id;
  index.blob = blob.filename().string();
  index.compression = compression;
  TarReader reader(source);
  while (auto entry = reader.next()) {
    entry->path = clean_path(entry->path);
    if (entry->type == EntryType::kHardlink) entry->link = clean_path(entry->link);
    index.entries.push_back(std::move(*entry));
    if (entries) entries->fetch_add(1, std::memory_order_relaxed);
  }
  std::vector<char> rest(64 * 1024);
  while (source(rest.data(), rest.size()) > 0) {
  }  // what follows the archive's end counts in the diff_id too
  std::string actual = hash.digest();
  if (actual != diff_id) {
    throw Error(ErrorKind::kIntegrity, "Cannot use layer " + blob.filename().string() +
                                           ": its uncompressed digest is " + actual +
                                           ", the config's diff_id " + diff_id);
  }
  index.tar_size = total;
  index.points = input->take_points();
  uint64_t widest = 0;
  for (size_t i = 0; i < index.points.size(); ++i) {
    uint64_t end = i + 1 < index.points.size() ? index.points[i + 1].out : total;
    widest = std::max(widest, end - index.points[i].out);
  }
  if (widest > max_span_ || (compression != Compression::kNone && index.points.empty())) {
    index.tar_copy = true;
    index.points.clear();
    write_copy(blob, compression, diff_id, suffix);
  } else if (std::error_code ec; std::filesystem::remove(tar_path(diff_id), ec)) {
    hook(hooks_.track, tar_path(diff_id));  // a copy an older index had: forgotten
  }
  TempFile index_file(CacheLayout::layer_tmp(root_) / (hex + "." + suffix + ".index.tmp"));
  auto bytes = serialize_index(index);
  index_file.write(bytes.data(), bytes.size());
  index_file.commit(index_path(diff_id));
  LOG(kInfo) << "Indexed layer " << diff_id << ": " << index.entries.size() << " entries, " << total
             << " bytes, "
             << (index.tar_copy ? "a decompressed copy kept"
                                : std::to_string(index.points.size()) + " access points");
  bool copy = index.tar_copy;
  auto result = opened(std::move(index), blob);  // before tracking, which may evict
  if (copy) hook(hooks_.track, tar_path(diff_id));
  hook(hooks_.track, index_path(diff_id));
  std::lock_guard lock(mutex_);
  loaded_[diff_id] = result;
  return result;
}

void LayerStore::write_copy(const std::filesystem::path& blob, Compression compression,
                            const std::string& diff_id, const std::string& suffix) const {
  std::string hex(registry::digest_hex(diff_id));
  TempFile tar(CacheLayout::layer_tmp(root_) / (hex + "." + suffix + ".tar.tmp"));
  auto input = open_decompressor(blob, compression);
  std::vector<char> buffer(256 * 1024);
  while (size_t n = input->read(buffer.data(), buffer.size())) tar.write(buffer.data(), n);
  tar.commit(tar_path(diff_id));
}

}  // namespace regfs::cache

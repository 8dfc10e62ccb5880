#include "cache/layer_store.h"

#include <sys/stat.h>

#include "cache/tar_reader.h"
#include "cache/temp_file.h"
#include "registry/deadline.h"
#include "registry/digest.h"
#include "registry/error.h"
#include "registry/log.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kMaxIndexFile = 1u << 30;

}  // namespace

LayerStore::LayerStore(std::filesystem::path root, FileHooks hooks)
    : root_(std::move(root)), hooks_(std::move(hooks)) {
  make_private_dir(root_ / "sha256");
  make_private_dir(root_ / "tmp");
}

std::filesystem::path LayerStore::tar_path(const std::string& diff_id) const {
  if (!registry::is_valid_digest(diff_id)) {
    throw Error(ErrorKind::kInvalid, "Cannot use diff_id " + diff_id + ": not a sha256 digest");
  }
  return root_ / "sha256" / (std::string(registry::digest_hex(diff_id)) + ".tar");
}

std::filesystem::path LayerStore::index_path(const std::string& diff_id) const {
  auto path = tar_path(diff_id);
  path.replace_extension(".index");
  return path;
}

void LayerStore::hook(const std::function<void(const std::filesystem::path&)>& f,
                      const std::filesystem::path& path) const {
  if (f) f(path);
}

std::shared_ptr<const LayerIndex> LayerStore::pinned(LayerIndex index) const {
  auto tar = tar_path(index.diff_id);
  auto idx = index_path(index.diff_id);
  hook(hooks_.pin, tar);
  hook(hooks_.pin, idx);
  return std::shared_ptr<const LayerIndex>(new LayerIndex(std::move(index)),
                                           [this, tar, idx](const LayerIndex* p) {
                                             hook(hooks_.unpin, tar);
                                             hook(hooks_.unpin, idx);
                                             delete p;
                                           });
}

std::shared_ptr<const LayerIndex> LayerStore::load(const std::string& diff_id) const {
  auto tar = tar_path(diff_id);
  auto idx = index_path(diff_id);
  if (!std::filesystem::exists(idx)) return nullptr;
  hook(hooks_.pin, tar);  // before looking, so that it cannot go once seen
  hook(hooks_.pin, idx);
  std::shared_ptr<const LayerIndex> result;
  auto bytes = read_small_file(idx, kMaxIndexFile);
  auto index = bytes ? parse_index(*bytes) : std::nullopt;
  struct stat st;
  if (!index || index->diff_id != diff_id || ::stat(tar.c_str(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != index->tar_size) {
    LOG(kWarning) << "Cannot use the layer index of " << diff_id
                  << ": incomplete or of an older version; re-indexing";
  } else {
    index->tar = tar;
    result = pinned(std::move(*index));
  }
  hook(hooks_.unpin, tar);
  hook(hooks_.unpin, idx);
  return result;
}

std::shared_ptr<const LayerIndex> LayerStore::find(const std::string& diff_id) {
  {
    std::lock_guard lock(mutex_);
    auto it = loaded_.find(diff_id);
    if (it != loaded_.end()) {
      if (auto index = it->second.lock()) return index;
    }
  }
  auto index = load(diff_id);
  if (index) {
    std::lock_guard lock(mutex_);
    loaded_[diff_id] = index;
  }
  return index;
}

std::shared_ptr<const LayerIndex> LayerStore::get(
    const std::string& diff_id, Compression compression,
    const std::function<std::filesystem::path()>& blob, std::atomic<uint64_t>* entries) {
  if (auto index = find(diff_id)) return index;
  std::promise<std::shared_ptr<const LayerIndex>> promise;
  std::shared_future<std::shared_ptr<const LayerIndex>> work;
  bool leader = false;
  {
    std::lock_guard lock(mutex_);
    auto it = in_flight_.find(diff_id);
    if (it != in_flight_.end()) {
      work = it->second;
    } else {
      work = promise.get_future().share();
      in_flight_.emplace(diff_id, work);
      leader = true;
    }
  }
  if (leader) {
    try {
      promise.set_value(index(blob(), compression, diff_id, entries));
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    std::lock_guard lock(mutex_);
    in_flight_.erase(diff_id);
  }
  registry::wait_within_deadline(work, "index layer " + diff_id + " (another reader indexes it)");
  return work.get();
}

std::shared_ptr<const LayerIndex> LayerStore::index(const std::filesystem::path& blob,
                                                    Compression compression,
                                                    const std::string& diff_id,
                                                    std::atomic<uint64_t>* entries) {
  auto final_tar = tar_path(diff_id);
  std::string hex(registry::digest_hex(diff_id));
  std::string suffix = unique_suffix();
  TempFile tar(root_ / "tmp" / (hex + "." + suffix + ".tar.tmp"));
  auto input = open_decompressor(blob, compression);
  registry::Sha256 hash;
  uint64_t total = 0;
  auto source = [&](char* data, size_t size) {
    size_t n = input->read(data, size);
    hash.update(data, n);
    tar.write(data, n);
    total += n;
    return n;
  };
  LayerIndex index;
  index.diff_id = diff_id;
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
  TempFile index_file(root_ / "tmp" / (hex + "." + suffix + ".index.tmp"));
  auto bytes = serialize_index(index);
  index_file.write(bytes.data(), bytes.size());
  tar.commit(final_tar);
  index_file.commit(index_path(diff_id));
  index.tar = final_tar;
  LOG(kInfo) << "Indexed layer " << diff_id << ": " << index.entries.size() << " entries, " << total
             << " bytes";
  auto result = pinned(std::move(index));  // before tracking, which may evict
  hook(hooks_.track, final_tar);
  hook(hooks_.track, index_path(diff_id));
  std::lock_guard lock(mutex_);
  loaded_[diff_id] = result;
  return result;
}

}  // namespace regfs::cache

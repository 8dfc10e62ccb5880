#include "fs/source/merge_progress.h"

namespace regfs::fs {

MergeProgress::Merge::Merge(std::string image,
                            const std::vector<std::pair<std::string, uint64_t>>& layers)
    : image_(std::move(image)),
      started_(std::chrono::steady_clock::now()),
      entries_(new std::atomic<uint64_t>[layers.size()]),
      fetched_(layers.size()) {
  for (size_t i = 0; i < layers.size(); ++i) {
    entries_[i] = 0;
    LayerInfo layer;
    layer.digest = layers[i].first;
    layer.size = layers[i].second;
    layers_.push_back(std::move(layer));
  }
}

void MergeProgress::Merge::fetching(size_t i, std::function<uint64_t()> fetched_bytes) {
  std::lock_guard lock(mutex_);
  layers_[i].state = LayerState::kFetching;
  fetched_[i] = std::move(fetched_bytes);
}

void MergeProgress::Merge::indexing(size_t i) {
  std::lock_guard lock(mutex_);
  layers_[i].state = LayerState::kIndexing;
  layers_[i].fetched = layers_[i].size;
  fetched_[i] = nullptr;
}

void MergeProgress::Merge::done(size_t i, uint64_t entries) {
  entries_[i] = entries;
  std::lock_guard lock(mutex_);
  layers_[i].state = LayerState::kDone;
  layers_[i].fetched = layers_[i].size;
  fetched_[i] = nullptr;
}

void MergeProgress::Merge::failed(size_t i) {
  std::lock_guard lock(mutex_);
  layers_[i].state = LayerState::kFailed;
  fetched_[i] = nullptr;
}

MergeProgress::ImageInfo MergeProgress::Merge::snapshot() const {
  ImageInfo info;
  info.image = image_;
  info.started = started_;
  std::lock_guard lock(mutex_);
  info.layers = layers_;
  for (size_t i = 0; i < info.layers.size(); ++i) {
    if (fetched_[i]) info.layers[i].fetched = fetched_[i]();
    info.layers[i].entries = entries_[i].load(std::memory_order_relaxed);
  }
  return info;
}

std::shared_ptr<MergeProgress::Merge> MergeProgress::begin(
    std::string image, const std::vector<std::pair<std::string, uint64_t>>& layers) {
  auto merge = std::make_shared<Merge>(std::move(image), layers);
  std::lock_guard lock(mutex_);
  merges_.push_back(merge);
  return merge;
}

void MergeProgress::end(const Merge* merge) {
  std::lock_guard lock(mutex_);
  merges_.remove_if([merge](const std::weak_ptr<Merge>& m) {
    auto live = m.lock();
    return !live || live.get() == merge;
  });
}

std::vector<MergeProgress::ImageInfo> MergeProgress::snapshot() {
  std::vector<std::shared_ptr<Merge>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto it = merges_.begin(); it != merges_.end();) {
      if (auto merge = it->lock()) {
        live.push_back(std::move(merge));
        ++it;
      } else {
        it = merges_.erase(it);
      }
    }
  }
  std::vector<ImageInfo> infos;
  for (const auto& merge : live) infos.push_back(merge->snapshot());
  return infos;
}

const char* to_string(MergeProgress::LayerState state) {
  switch (state) {
    case MergeProgress::LayerState::kQueued:
      return "queued";
    case MergeProgress::LayerState::kFetching:
      return "fetching";
    case MergeProgress::LayerState::kIndexing:
      return "indexing";
    case MergeProgress::LayerState::kDone:
      return "done";
    case MergeProgress::LayerState::kFailed:
      return "failed";
  }
  return "?";
}

}  // namespace regfs::fs

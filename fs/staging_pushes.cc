// StagingTree's push schedule (fs/staging_tree.h): builds wait for their
// quiet time (--push-delay) on a builder thread, `regfs push` and an fsync
// push at once, the state each staged tag shows, and the pushes resumed at
// mount and when a registry comes back.
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "fs/staging_tree.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

fsys::path StagingTree::build_dir(const cache::StagedTag& tag) const {
  auto name = registry::sha256_digest(tag.registry + "/" + tag.repository + ":" + tag.tag);
  return build_.work_dir / std::string(registry::digest_hex(name));
}

void StagingTree::while_building(const cache::StagedTag& tag, const std::function<void()>& work) {
  {
    std::lock_guard lock(builds_mutex_);
    building_.insert(tag);
  }
  struct Done {
    StagingTree& tree;
    const cache::StagedTag& tag;
    ~Done() {
      std::lock_guard lock(tree.builds_mutex_);
      tree.building_.erase(tag);
    }
  } done{*this, tag};
  work();
}

void StagingTree::changed(const cache::StagedTag& tag) {
  if (!is_build(area_.tag_dir(tag)) && !has_rootfs_changes(tag)) return;
  {
    std::lock_guard lock(builds_mutex_);
    pending_[tag] = std::chrono::steady_clock::now() + push_delay_;
  }
  builds_changed_.notify_all();
}

bool StagingTree::being_written(const cache::StagedTag& tag) {
  std::vector<std::shared_ptr<StagedFile::PathState>> open;
  {
    std::lock_guard lock(mutex_);
    // The tag's files and its rootfs/ upper files.
    for (const auto& dir : {area_.tag_dir(tag), area_.upper_dir(tag)}) {
      std::string prefix = dir.string() + "/";
      for (auto it = open_paths_.lower_bound(prefix);
           it != open_paths_.end() && it->first.starts_with(prefix); ++it) {
        if (auto state = it->second.lock()) open.push_back(state);
      }
    }
  }
  for (auto& state : open) {
    std::lock_guard lock(state->mutex);
    if (state->dirty) return true;
  }
  return false;
}

void StagingTree::run_builds() {
  std::unique_lock lock(builds_mutex_);
  while (!stopping_) {
    auto now = std::chrono::steady_clock::now();
    std::vector<cache::StagedTag> due;
    auto next = std::chrono::steady_clock::time_point::max();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second <= now) {
        due.push_back(it->first);
        it = pending_.erase(it);
      } else {
        next = std::min(next, it->second);
        ++it;
      }
    }
    if (due.empty()) {
      if (next == std::chrono::steady_clock::time_point::max()) {
        builds_changed_.wait(lock);
      } else {
        builds_changed_.wait_until(lock, next);
      }
      continue;
    }
    lock.unlock();
    for (auto& tag : due) {
      try {
        push_if_complete(tag, /*resuming=*/false, /*build_now=*/true);
      } catch (const std::exception&) {
        // Recorded in the tag's state and logged; a change or `regfs push` retries.
      }
    }
    lock.lock();
  }
}

void StagingTree::push_now(const Node& dir) {
  if (dir.kind == NodeKind::kStaged && dir.staged_path.empty() && area_.has_tag(tag_of(dir))) {
    auto tag = tag_of(dir);
    {
      std::lock_guard lock(builds_mutex_);
      pending_.erase(tag);
    }
    push_if_complete(tag, /*resuming=*/false, /*build_now=*/true);
    auto state = state_of(tag);
    if (being_written(tag)) state = "files are still being written (" + state + ")";
    if (!state.starts_with("pushed ")) {
      throw Error(ErrorKind::kInvalid, "Cannot push " + tag.registry + "/" + tag.repository + ":" +
                                           tag.tag + ": " + state);
    }
    return;
  }
  if (dir.key != "/") return;
  // The mount's root (regfs umount): every pending build, now.
  std::vector<cache::StagedTag> due;
  {
    std::lock_guard lock(builds_mutex_);
    for (auto& [tag, _] : pending_) due.push_back(tag);
    pending_.clear();
  }
  std::exception_ptr first;
  for (auto& tag : due) {
    try {
      push_if_complete(tag, /*resuming=*/false, /*build_now=*/true);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

StagingTree::~StagingTree() {
  content_.on_registry_up(nullptr);
  {
    std::scoped_lock lock(builds_mutex_, resume_mutex_);
    stopping_ = true;
  }
  builds_changed_.notify_all();
  resume_ready_.notify_all();
  if (resumer_.joinable()) resumer_.join();
  if (builder_.joinable()) builder_.join();
  // Unmounted: the builds still waiting for their quiet time go now.
  std::vector<cache::StagedTag> due;
  for (auto& [tag, _] : pending_) due.push_back(tag);
  pending_.clear();
  for (auto& tag : due) {
    try {
      push_if_complete(tag, /*resuming=*/false, /*build_now=*/true);
    } catch (const std::exception&) {
      // Recorded and logged; the next mount resumes it.
    }
  }
  // Nothing staged is silently left behind: say what was not pushed.
  for (auto& [name, state] : states()) {
    if (state.starts_with("pushed ")) continue;
    LOG(kWarning) << "Staged tag " << name << " is not pushed (" << state << "); it is kept in "
                  << area_.root().string() << " and the next mount resumes it";
  }
}

std::string StagingTree::state_of(const cache::StagedTag& tag) {
  {
    std::lock_guard lock(builds_mutex_);
    if (building_.count(tag)) return "building";
  }
  auto state = area_.state(tag);
  if (!state.pushing.empty()) return "pushing " + state.pushing;
  {
    std::lock_guard lock(builds_mutex_);
    if (pending_.count(tag)) return "pending build";
  }
  if (!state.error.empty()) return "error: " + state.error;
  if (!state.pushed_digest.empty()) return "pushed " + state.pushed_digest;
  {
    std::lock_guard lock(mutex_);
    if (auto it = waiting_.find(tag); it != waiting_.end()) {
      if (it->second.starts_with("no ")) return "incomplete: " + it->second;
      return "waiting for " + it->second;
    }
  }
  std::error_code ec;
  if (!fsys::exists(area_.file(tag, "index.json"), ec) &&
      !fsys::exists(area_.file(tag, "manifest.json"), ec)) {
    return "incomplete: no index.json or manifest.json";
  }
  return "pending";
}

std::vector<std::pair<std::string, std::string>> StagingTree::states() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& tag : area_.all_tags()) {
    out.emplace_back(tag.registry + "/" + tag.repository + ":" + tag.tag, state_of(tag));
  }
  return out;
}

void StagingTree::resume_pushes(const std::string& registry, bool only_failed) {
  {
    std::lock_guard lock(resume_mutex_);
    if (stopping_) return;
    resume_queue_.emplace_back(registry, only_failed);
    if (!resumer_.joinable()) resumer_ = std::thread([this] { resume_loop(); });
  }
  resume_ready_.notify_one();
}

void StagingTree::resume_loop() {
  while (true) {
    std::pair<std::string, bool> next;
    {
      std::unique_lock lock(resume_mutex_);
      resume_ready_.wait(lock, [&] { return stopping_ || !resume_queue_.empty(); });
      if (stopping_) return;
      next = std::move(resume_queue_.front());
      resume_queue_.pop_front();
    }
    resume_all(next.first, next.second);
  }
}

void StagingTree::resume_all(const std::string& registry, bool only_failed) {
  for (auto& tag : area_.all_tags()) {
    if (stopping_) return;
    if (!registry.empty() && tag.registry != registry) continue;
    if (only_failed && area_.state(tag).error.empty()) continue;
    try {
      push_if_complete(tag, /*resuming=*/true);
    } catch (const std::exception&) {
      // Recorded and logged; the next flush of a file in it or the next
      // mount tries again.
    }
  }
}

}  // namespace regfs::fs

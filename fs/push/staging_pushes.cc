// StagingTree's push schedule (fs/push/staging_tree.h): every push goes
// through the push queue (fs/push/push_queue.h); builds wait for their quiet
// time (--push-delay) as delayed tasks of background_, `regfs push` and an
// fsync push at once, the state each staged tag shows, and the pushes
// resumed at mount and when a registry comes back (tasks of background_).
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "fs/push/staging_tree.h"
#include "registry/digest.h"
#include "registry/error.h"
#include "registry/log.h"

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

namespace {

std::string name_of(const cache::StagedTag& tag) {
  return tag.registry + "/" + tag.repository + ":" + tag.tag;
}

}  // namespace

PushTicket StagingTree::queue_push(const cache::StagedTag& tag, bool resuming, bool build_now) {
  return pushes_.submit(name_of(tag), [this, tag, resuming, build_now] {
    push_if_complete(tag, resuming, build_now);
  });
}

void StagingTree::push_and_wait(const cache::StagedTag& tag, bool build_now) {
  PushQueue::wait(queue_push(tag, /*resuming=*/false, build_now), "push " + name_of(tag));
}

void StagingTree::changed(const cache::StagedTag& tag) {
  if (!is_build(area_.tag_dir(tag)) && !has_rootfs_changes(tag)) return;
  std::lock_guard lock(builds_mutex_);
  if (stopping_) return;  // the destructor pushes pending_
  auto [it, inserted] =
      pending_.insert_or_assign(tag, std::chrono::steady_clock::now() + push_delay_);
  // One timer per pending build; it looks at pending_ again when it fires.
  if (inserted) background_->submit_after(push_delay_, [this, tag] { build_when_due(tag); });
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

void StagingTree::build_when_due(const cache::StagedTag& tag) {
  {
    std::lock_guard lock(builds_mutex_);
    if (stopping_) return;
    auto it = pending_.find(tag);
    if (it == pending_.end()) return;  // pushed meanwhile (regfs push)
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(it->second - std::chrono::steady_clock::now());
    if (left.count() > 0) {  // changed meanwhile: wait the rest of its quiet time
      background_->submit_after(left, [this, tag] { build_when_due(tag); });
      return;
    }
    pending_.erase(it);
  }
  // Not waited for: a failure is recorded in the tag's state and logged; a
  // change or `regfs push` retries.
  queue_push(tag, /*resuming=*/false, /*build_now=*/true);
}

void StagingTree::push_now(const Node& dir) {
  if (dir.kind == NodeKind::kStaged && dir.staged_path.empty() && area_.has_tag(tag_of(dir))) {
    auto tag = tag_of(dir);
    {
      std::lock_guard lock(builds_mutex_);
      pending_.erase(tag);
    }
    push_and_wait(tag, /*build_now=*/true);
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
  // Queued together (they push side by side), then waited for in turn.
  std::vector<std::pair<cache::StagedTag, PushTicket>> tickets;
  for (auto& tag : due) tickets.emplace_back(tag, queue_push(tag, false, /*build_now=*/true));
  std::exception_ptr first;
  for (auto& [tag, ticket] : tickets) {
    try {
      PushQueue::wait(ticket, "push " + name_of(tag));
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

StagingTree::~StagingTree() {
  content_.on_registry_up(nullptr);
  {
    std::lock_guard lock(builds_mutex_);
    stopping_ = true;
  }
  // The resumed push in flight ends, no other starts; timers are dropped.
  background_.reset();
  // Unmounted: the builds still waiting for their quiet time go now.
  std::vector<std::pair<cache::StagedTag, PushTicket>> tickets;
  {
    std::lock_guard lock(builds_mutex_);
    for (auto& [tag, _] : pending_) tickets.emplace_back(tag, PushTicket{});
    pending_.clear();
  }
  for (auto& [tag, ticket] : tickets) ticket = queue_push(tag, false, /*build_now=*/true);
  // Every push queued (by close()s still waiting, or above) runs to its end.
  pushes_.drain();
  // (Failures are recorded and logged; the next mount resumes them.)
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
  std::lock_guard lock(builds_mutex_);
  if (stopping_) return;
  // background_ has one thread: resumes run in turn, as they were asked for.
  background_->submit([this, registry, only_failed] { resume_all(registry, only_failed); });
}

void StagingTree::resume_all(const std::string& registry, bool only_failed) {
  for (auto& tag : area_.all_tags()) {
    if (stopping_) return;
    if (!registry.empty() && tag.registry != registry) continue;
    if (only_failed && area_.state(tag).error.empty()) continue;
    try {
      // One tag at a time: waits for it (background_ has no deadline).
      queue_push(tag, /*resuming=*/true).get();
    } catch (const std::exception&) {
      // Recorded and logged; the next flush of a file in it or the next
      // mount tries again.
    }
  }
}

}  // namespace regfs::fs

// StagingTree's push schedule (fs/push/staging_tree.h): every push goes
// through the push queue (fs/push/push_queue.h); builds wait for their quiet
// time (--push-delay) as delayed tasks of build_timers_, `regfs push` and
// an fsync push at once, the state each staged tag shows, and the pushes
// resumed at mount and when a registry comes back (tasks of resumes_).
#include <algorithm>
#include <chrono>
#include <filesystem>

#include "fs/push/staged_helpers.h"
#include "fs/push/staging_tree.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::fs {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;
using namespace staged;  // NOLINT: fs/push/staged_helpers.h

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
  if (inserted) build_timers_->submit_after(push_delay_, [this, tag] { build_when_due(tag); });
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
      build_timers_->submit_after(left, [this, tag] { build_when_due(tag); });
      return;
    }
    pending_.erase(it);
  }
  // Not waited for: a failure is recorded in the tag's state and logged; a
  // change or `regfs push` retries.
  queue_push(tag, /*resuming=*/false, /*build_now=*/true);
}

void StagingTree::push_now(const Node& dir) {
  if (dir.kind == NodeKind::kStaged && dir.staged().path.empty() && area_.has_tag(tag_of(dir))) {
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
  resumes_.reset();
  build_timers_.reset();
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
  auto state = area_.current_state(tag);  // another mount may have pushed it
  if (!state.pushing.empty()) return "pushing " + state.pushing;
  bool pending;
  {
    std::lock_guard lock(builds_mutex_);
    pending = pending_.count(tag) > 0;
  }
  // Not once the tag turned out an image (a docker save directory copied
  // file by file looks like a build until its manifest.json comes).
  const bool build = is_build(area_.tag_dir(tag));
  if (pending && (build || has_rootfs_changes(tag))) return "pending build";
  if (!state.error.empty()) return "error: " + state.error;
  if (!state.pushed_digest.empty()) return "pushed " + state.pushed_digest;
  {
    std::lock_guard lock(mutex_);
    if (auto it = waiting_.find(tag); it != waiting_.end()) {
      if (it->second.starts_with("no ")) return "incomplete: " + it->second;
      return "waiting for " + it->second;
    }
  }
  // A build waiting in another mount sharing the cache, or for this
  // mount's resume.
  if (build) return "pending build";
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
  if (!only_failed && !alone_on_cache_) return;
  std::lock_guard lock(builds_mutex_);
  if (stopping_) return;
  // resumes_ has one thread: resumes run in turn, as they were asked for.
  resumes_->submit([this, registry, only_failed] { resume_all(registry, only_failed); });
}

void StagingTree::resume_all(const std::string& registry, bool only_failed) {
  for (auto& tag : area_.all_tags()) {
    if (stopping_) return;
    if (!registry.empty() && tag.registry != registry) continue;
    if (only_failed) {
      std::lock_guard lock(mutex_);
      if (!mine_.contains(tag)) continue;
    }
    if (only_failed && area_.state(tag).error.empty()) continue;
    try {
      // One tag at a time: waits for it (resumes_ has no deadline).
      queue_push(tag, /*resuming=*/true).get();
    } catch (const std::exception&) {
      // Recorded and logged; the next flush of a file in it or the next
      // mount tries again.
    }
  }
}

// The planner's view of one staged tag (fs/push/push_plan.h).
class StagingTree::Layout : public StagedLayout {
 public:
  Layout(StagingTree& tree, const cache::StagedTag& tag)
      : tree_(tree), tag_(tag), state_(tree.area_.state(tag)) {}

  std::optional<std::string> read_file(const std::string& path) override {
    auto file = tree_.area_.file(tag_, path);
    if (being_written(file)) return std::nullopt;
    std::error_code ec;
    auto size = fsys::file_size(file, ec);
    if (!ec) check_manifest_size(path, static_cast<int64_t>(size));
    return read_small(file);
  }

  std::optional<FileInfo> file_info(const std::string& path) override {
    auto file = tree_.area_.file(tag_, path);
    struct stat st;
    if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || being_written(file)) {
      return std::nullopt;
    }
    return FileInfo{file, st.st_size, tree_.file_digest(file, st)};
  }

  std::optional<PlanBlob> staged_blob(const std::string& digest) override {
    std::string path = std::string(kBlobDir) + std::string(registry::digest_hex(digest));
    if (auto ref = state_.references.find(path); ref != state_.references.end()) {
      return PlanBlob{digest, ref->second.size, PlanBlob::Source::kReference, {}, ref->second};
    }
    auto info = file_info(path);
    if (!info) return std::nullopt;
    if (info->digest != digest) {
      LOG(kWarning) << "Cannot push staged " << path << ": its content is " << info->digest;
      return std::nullopt;
    }
    return PlanBlob{digest, info->size, PlanBlob::Source::kStaged, info->path, {}};
  }

  std::string manifest_bytes(const PlanBlob& blob) override {
    if (blob.source == PlanBlob::Source::kReference) {
      return tree_.content_.registry(blob.reference.registry)
          .manifest(blob.reference.repository, blob.digest);
    }
    check_manifest_size("manifest " + blob.digest, blob.size);
    auto bytes = read_small(blob.file);
    if (!bytes || registry::sha256_digest(*bytes) != blob.digest) {
      throw Error(ErrorKind::kIo, "Cannot read staged manifest " + blob.file.string());
    }
    return *bytes;
  }

  std::string config_bytes(const PlanBlob& blob) override {
    constexpr size_t kMaxConfig = 8 << 20;
    switch (blob.source) {
      case PlanBlob::Source::kInline:
        return blob.bytes;
      case PlanBlob::Source::kReference:
        return tree_.content_.registry(blob.reference.registry)
            .small_blob(blob.reference.repository, blob.digest, blob.size);
      case PlanBlob::Source::kStaged:
        if (auto bytes = read_small(blob.file); bytes && bytes->size() <= kMaxConfig) return *bytes;
        break;
      case PlanBlob::Source::kTarget: {
        std::string bytes;
        tree_.pusher_.client(tag_.registry)
            .get_blob(tag_.repository, blob.digest, 0, 0, [&](const char* data, size_t size) {
              bytes.append(data, size);
              return bytes.size() <= kMaxConfig;
            });
        if (registry::sha256_digest(bytes) == blob.digest) return bytes;
        break;
      }
    }
    throw Error(ErrorKind::kIo, "Cannot read config " + blob.digest);
  }

  bool in_target(const std::string& digest) override {
    auto [it, added] = in_target_.try_emplace(digest, false);
    if (added) {
      it->second = tree_.pusher_.client(tag_.registry).blob_exists(tag_.repository, digest);
    }
    return it->second;
  }

  std::optional<std::string> target_manifest(const std::string& digest) override {
    try {
      return tree_.pusher_.client(tag_.registry).get_manifest(tag_.repository, digest).bytes;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNotFound) return std::nullopt;
      throw;
    }
  }

 private:
  bool being_written(const fsys::path& file) {
    std::shared_ptr<StagedFile::PathState> state;
    {
      std::lock_guard lock(tree_.mutex_);
      auto it = tree_.open_paths_.find(file.string());
      if (it != tree_.open_paths_.end()) state = it->second.lock();
    }
    if (!state) return false;
    std::lock_guard lock(state->mutex);
    return state->dirty;
  }

  StagingTree& tree_;
  const cache::StagedTag tag_;
  const cache::StagedTagState state_;
  std::map<std::string, bool> in_target_;
};

// A staged copy of an image whose config.json was written back: the plan
// pushes that config (fs/push/config_edit.h) unless it is one the plan has.
// Of a multi-platform tag, config.json is the --platform image's: an edit
// pushes that image alone (narrow_to_platform).
void StagingTree::apply_edited_config(StagedLayout& layout, PushPlan& plan) {
  auto edited = layout.read_file("config.json");
  if (!edited) return;
  PushPlan image = plan;
  std::string platform = narrow_to_platform(image, build_.platform);
  auto config = registry::parse_manifest(image.manifests.back().bytes).config.digest;
  if (registry::sha256_digest(*edited) == config) return;
  std::string original;
  for (const auto& blob : image.blobs) {
    if (blob.digest == config) original = layout.config_bytes(blob);
  }
  if (!apply_config_edit(image, *edited, original)) return;
  if (!platform.empty()) {
    LOG(kInfo) << "config.json of a multi-platform tag was edited: pushing its " << platform
               << " image alone, as docker build does FROM a multi-platform base";
  }
  plan = std::move(image);
  LOG(kInfo) << "config.json was edited: pushing manifest " << plan.digest();
}

void StagingTree::push_if_complete(const cache::StagedTag& tag, bool resuming, bool build_now) {
  // One push at a time of a tag in this mount (the push queue), and one
  // mount at a time of those sharing the cache directory.
  auto shared_lock = area_.lock_push(tag);
  if (!shared_lock || !area_.has_tag(tag)) return;
  {
    std::lock_guard lock(mutex_);
    mine_.insert(tag);
  }
  const std::string name = tag.registry + "/" + tag.repository + ":" + tag.tag;
  std::string pushed;
  try {
    std::string waiting_for;
    std::optional<PushPlan> plan;
    if (is_build(area_.tag_dir(tag))) {
      // A build waits for its quiet time, and for its files to be closed.
      if ((!build_now && !resuming) || being_written(tag)) {
        changed(tag);
        return;
      }
      // An image layout one level down means the tag was meant as a
      // repository: refused, rather than pushed as an image of files.
      std::error_code ec;
      for (const auto& entry : fsys::directory_iterator(area_.tag_dir(tag), ec)) {
        auto has = [&](const char* name) { return fsys::exists(entry.path() / name, ec); };
        if (entry.is_directory(ec) && (has("oci-layout") || has("index.json"))) {
          throw Error(ErrorKind::kInvalid,
                      "Cannot build " + tag.repository + ":" + tag.tag + ": " +
                          entry.path().filename().string() +
                          "/ is an image layout; copy a layout to a tag of its own "
                          "(mkdir -p NAMESPACE/REPO, then cp -r LAYOUT NAMESPACE/REPO/TAG)");
        }
      }
      while_building(tag, [&] {
        auto options = build_;
        options.work_dir = build_dir(tag);
        auto state = area_.state(tag);
        plan = plan_build(area_.tag_dir(tag), state.modes, options, state.xattrs);
      });
    } else {
      // Changes in rootfs/ make a layer: pushed as a build is.
      bool edits = has_rootfs_changes(tag);
      if (edits && ((!build_now && !resuming) || being_written(tag))) {
        changed(tag);
        return;
      }
      // The tag's state is copied here: not for a build, whose every
      // close() comes here (cp -a of n files was quadratic).
      Layout layout(*this, tag);
      plan = plan_push(layout, tag.tag, &waiting_for);
      if (plan) apply_edited_config(layout, *plan);
      if (plan && edits) {
        while_building(tag, [&] { add_rootfs_layer(tag, layout, *plan); });
      }
    }
    {
      std::lock_guard lock(mutex_);
      if (plan) {
        waiting_.erase(tag);
      } else {
        waiting_[tag] = waiting_for;
      }
    }
    if (!plan) return;
    auto state = area_.state(tag);
    if (state.pushed_digest == plan->digest() && state.error.empty() && state.pushing.empty()) {
      return;
    }
    if (resuming) {
      LOG(kInfo) << "Resuming push of " << name << " (" << plan->digest() << ")";
    }
    area_.update_state(tag, [&](cache::StagedTagState& s) { s.pushing = plan->digest(); });
    pusher_.push(tag, *plan);
    pushed = plan->digest();
  } catch (const std::exception& e) {
    std::string reason = e.what();
    // As docker says it, with the account that was used (EACCES for cp).
    if (auto* error = dynamic_cast<const Error*>(&e);
        error && error->kind() == ErrorKind::kUnauthorized) {
      reason = "denied: requested access to the resource is denied (pushing as " +
               content_.account(tag.registry) + "): " + reason;
    }
    area_.update_state(tag, [&](cache::StagedTagState& s) {
      s.error = reason;
      s.pushing.clear();
    });
    LOG(kWarning) << "Cannot " << (resuming ? "resume push of " : "push ") << name << ": " << reason
                  << " (the staged tag is kept; touch a file in it to retry)";
    throw;
  }
  area_.update_state(tag, [&](cache::StagedTagState& s) {
    s.error.clear();
    s.pushing.clear();
    s.pushed_digest = pushed;
    s.uploads.clear();
  });
  if (resuming) {
    LOG(kInfo) << "Resumed push of " << name << ": pushed as " << pushed;
  }
}

}  // namespace regfs::fs

// Pushes a PushPlan to a registry (SPEC §4): blobs first, several at once
// (the calling thread, and helpers on the Pusher's WorkerPool), each skipped
// when the repository has it (HEAD), resumed where an earlier process left
// its upload session (the staged tag's state keeps it), mounted when it is a
// reference to another repository of the same registry, else uploaded: from
// its staged file, or for a reference to another registry streamed from
// there through the cache (BlobReader). Then the child manifests by digest,
// and the tag's manifest last, by tag.
//
// The Pusher keeps its own registry::Client per registry (same options as
// Content's): pushes need push tokens and never go through mirrors, and
// Content's clients stay private to it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cache/staging.h"
#include "fs/push/push_plan.h"
#include "fs/source/content.h"
#include "fs/source/worker_pool.h"
#include "registry/client.h"

namespace regfs::fs {

class Pusher {
 public:
  // `area`, if given, keeps each chunked upload's session in the staged
  // tag's state, so that a push the daemon did not finish resumes each blob
  // where the registry holds it (registry::UploadJournal).
  explicit Pusher(Content& content, cache::StagingArea* area = nullptr, size_t parallel = 4);

  // Pushes `plan` as target.tag, on the calling thread (the push queue's,
  // fs/push/push_queue.h) and uploads_. Throws Error. Afterwards the tag's cached
  // answers say what was pushed.
  void push(const cache::StagedTag& target, const PushPlan& plan);
  // Deletes a remote tag (--allow-delete): by tag where the registry can,
  // else by digest, refused with Error(kBusy) when other tags
  // share the manifest.
  void delete_tag(const std::string& registry, const std::string& repository,
                  const std::string& tag);
  registry::Client& client(const std::string& registry);

 private:
  void push_plan(const cache::StagedTag& target, const PushPlan& plan);
  void push_blob(registry::Client& client, const cache::StagedTag& target, const PlanBlob& blob);
  registry::BlobSource source_of(const PlanBlob& blob);

  Content& content_;
  cache::StagingArea* const area_;
  const size_t parallel_;
  std::mutex mutex_;  // guards clients_
  std::map<std::string, std::unique_ptr<registry::Client>> clients_;
  // Uploads blobs beside the pushing thread (parallel - 1 threads); last, so
  // it is joined before the rest goes.
  WorkerPool uploads_;
};

}  // namespace regfs::fs

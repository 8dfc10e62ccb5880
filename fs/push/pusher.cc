#include "fs/push/pusher.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <memory>
#include <system_error>

#include "cache/unique_fd.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

ssize_t pread_full(int fd, char* buffer, size_t size, uint64_t offset) {
  while (true) {
    ssize_t n = ::pread(fd, buffer, size, static_cast<off_t>(offset));
    if (n >= 0 || errno != EINTR) return n;
  }
}

// A registry's error as a push's (SPEC §7): a failed push is EIO, EACCES
// when denied, EINVAL only for content that can never be pushed; never
// ENOENT (an upload session the registry lost is no missing file).
Error as_push_error(const Error& e) {
  const std::string& code = e.oci_code();
  bool content = code == "MANIFEST_INVALID" || code == "TAG_INVALID" || code == "NAME_INVALID" ||
                 code == "MANIFEST_UNVERIFIED" || e.http_status() == 0;
  if (e.kind() == ErrorKind::kNotFound || (e.kind() == ErrorKind::kInvalid && !content)) {
    return Error(ErrorKind::kIo, e.what(), e.http_status(), code);
  }
  return e;
}

}  // namespace

Pusher::Pusher(Content& content, cache::StagingArea* area, size_t parallel)
    : content_(content),
      area_(area),
      parallel_(std::max<size_t>(parallel, 1)),
      uploads_(std::max<size_t>(parallel, 2) - 1) {}

registry::Client& Pusher::client(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto& slot = clients_[name];
  if (!slot) {
    auto client = client_options(content_.options(), name, ClientUse::kPush);
    client.health = content_.health(name);  // one view of whether it answers
    slot = std::make_unique<registry::Client>(std::move(client));
  }
  return *slot;
}

registry::BlobSource Pusher::source_of(const PlanBlob& blob) {
  if (blob.source == PlanBlob::Source::kInline) {
    return [bytes = blob.bytes](uint64_t offset, char* buffer, size_t max) -> size_t {
      size_t n = std::min<size_t>(max, bytes.size() - std::min<size_t>(offset, bytes.size()));
      if (n == 0) throw Error(ErrorKind::kIo, "Cannot read an edited config: it is shorter");
      std::memcpy(buffer, bytes.data() + offset, n);
      return n;
    };
  }
  if (blob.source == PlanBlob::Source::kStaged) {
    auto fd = std::make_shared<cache::UniqueFd>(::open(blob.file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!*fd) {
      throw Error(ErrorKind::kIo,
                  "Cannot read staged blob " + blob.file.string() + ": " + std::strerror(errno));
    }
    return [fd, file = blob.file](uint64_t offset, char* buffer, size_t max) -> size_t {
      ssize_t n = pread_full(fd->get(), buffer, max, offset);
      if (n <= 0) {
        throw Error(ErrorKind::kIo, "Cannot read staged blob " + file.string() + ": " +
                                        (n < 0 ? std::strerror(errno) : "it is shorter"));
      }
      return static_cast<size_t>(n);
    };
  }
  // A blob of another registry: read through the cache, chunk by chunk.
  const auto& ref = blob.reference;
  auto reader = content_.registry(ref.registry).open_blob(ref.repository, ref.digest, ref.size);
  return [reader](uint64_t offset, char* buffer, size_t max) -> size_t {
    auto lease = reader->read(offset, max);
    ssize_t n = pread_full(lease.fd(), buffer, lease.length(), lease.offset());
    if (n <= 0) throw Error(ErrorKind::kIo, "Cannot read a cached blob");
    return static_cast<size_t>(n);
  };
}

void Pusher::push_blob(registry::Client& client, const cache::StagedTag& target,
                       const PlanBlob& blob) {
  if (blob.source == PlanBlob::Source::kTarget) return;
  if (client.blob_exists(target.repository, blob.digest)) {
    LOG(kDebug) << "Blob " << blob.digest << " is in " << target.repository << " already";
    return;
  }
  const auto& ref = blob.reference;
  if (blob.source == PlanBlob::Source::kReference && ref.registry == target.registry &&
      ref.repository != target.repository &&
      client.mount_blob(target.repository, blob.digest, ref.repository)) {
    LOG(kDebug) << "Mounted blob " << blob.digest << " from " << ref.repository;
    return;
  }
  auto& transfers = content_.transfers();
  auto id = transfers.begin("push " + target.registry + "/" + target.repository + "@" + blob.digest,
                            static_cast<uint64_t>(blob.size));
  try {
    auto source = source_of(blob);
    registry::UploadJournal journal;
    const auto size = static_cast<uint64_t>(blob.size);
    if (area_) {
      auto state = area_->state(target);
      if (auto it = state.uploads.find(blob.digest);
          it != state.uploads.end() && it->second.size == size) {
        journal.resume = registry::UploadProgress{it->second.url, it->second.offset};
      }
      journal.record = [this, &target, &blob, size](const auto& progress) {
        area_->update_state(target, [&](cache::StagedTagState& s) {
          if (progress) {
            s.uploads[blob.digest] = cache::UploadSession{progress->url, progress->offset, size};
          } else {
            s.uploads.erase(blob.digest);
          }
        });
      };
    }
    client.upload_blob(
        target.repository, blob.digest, size,
        [&](uint64_t offset, char* buffer, size_t max) {
          size_t n = source(offset, buffer, max);
          transfers.progress(id, n);
          return n;
        },
        &journal);
  } catch (...) {
    transfers.end(id);
    throw;
  }
  transfers.end(id);
}

void Pusher::push(const cache::StagedTag& target, const PushPlan& plan) {
  // Names the registry would refuse after the uploads: refused before them.
  if (auto limit = registry::name_limit_problem(target.repository, target.tag); !limit.empty()) {
    throw Error(ErrorKind::kInvalid, "Cannot push " + target.registry + "/" + target.repository +
                                         ":" + target.tag + ": " + limit);
  }
  try {
    push_plan(target, plan);
  } catch (const Error& e) {
    throw as_push_error(e);
  }
}

void Pusher::push_plan(const cache::StagedTag& target, const PushPlan& plan) {
  auto& client = this->client(target.registry);
  // Blobs on a few threads; the first error wins and stops the others.
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto work = [&] {
    for (size_t i; (i = next++) < plan.blobs.size();) {
      {
        std::lock_guard lock(error_mutex);
        if (error) return;
      }
      try {
        push_blob(client, target, plan.blobs[i]);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  };
  // Helpers on uploads_ take blobs as this thread does; it waits for them
  // (a helper that starts late finds nothing left and ends at once).
  std::vector<std::future<void>> helpers;
  size_t count = std::min(parallel_, plan.blobs.size());
  for (size_t i = 1; i < count; ++i) {
    auto done = std::make_shared<std::promise<void>>();
    helpers.push_back(done->get_future());
    uploads_.submit([&work, done] {
      work();
      done->set_value();
    });
  }
  work();
  for (auto& helper : helpers) helper.wait();
  if (error) std::rethrow_exception(error);

  for (size_t i = 0; i + 1 < plan.manifests.size(); ++i) {
    const auto& m = plan.manifests[i];
    client.put_manifest(target.repository, m.digest, m.bytes, m.media_type);
  }
  const auto& top = plan.manifests.back();
  client.put_manifest(target.repository, target.tag, top.bytes, top.media_type);
  content_.registry(target.registry)
      .tag_changed(
          target.repository, target.tag,
          cache::TagRecord{top.digest, top.media_type, static_cast<int64_t>(top.bytes.size()),
                           std::chrono::system_clock::now()});
  LOG(kInfo) << "Pushed " << target.registry << "/" << target.repository << ":" << target.tag
             << " (" << top.digest << ", " << plan.blobs.size() << " blobs)";
}

void Pusher::delete_tag(const std::string& registry, const std::string& repository,
                        const std::string& tag) {
  auto& client = this->client(registry);
  auto head = client.head_manifest(repository, tag);
  bool deleted = false;
  try {
    client.delete_manifest(repository, tag);  // registries that delete tags
    deleted = true;
  } catch (const Error& e) {
    // Distribution 2.x takes digests only; it refuses a tag as invalid.
    if (e.kind() == ErrorKind::kUnauthorized || e.kind() == ErrorKind::kUnavailable ||
        e.kind() == ErrorKind::kTimeout) {
      throw;
    }
    LOG(kDebug) << "Cannot delete by tag (" << e.what() << "); deleting by digest";
  }
  if (!deleted) {
    for (auto& other : client.list_tags(repository)) {
      if (other == tag) continue;
      try {
        if (client.head_manifest(repository, other).digest == head.digest) {
          LOG(kWarning) << "Cannot delete " << registry << "/" << repository << ":" << tag
                        << ": tag " << other << " shares its manifest " << head.digest
                        << " and the registry deletes manifests, not tags";
          throw Error(ErrorKind::kBusy, "Cannot delete tag " + tag + ": shared with " + other);
        }
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::kNotFound) throw;
      }
    }
    client.delete_manifest(repository, head.digest);
  }
  content_.registry(registry).tag_changed(repository, tag, cache::TagRecord{});
  LOG(kInfo) << "Deleted " << registry << "/" << repository << ":" << tag;
}

}  // namespace regfs::fs

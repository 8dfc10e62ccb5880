// What the cache remembers of tags: tag -> manifest digest (and media type),
// with the time the registry last said so. The fs layer trusts an answer for
// --tag-ttl seconds, and past that still uses it while the registry cannot be
// reached (offline reads). Stored one small JSON file per tag:
//   <root>/refs/<registry>/<repository>/@<tag>
//   <root>/refs/<registry>/<repository>/@@tags, <root>/refs/<registry>/@@catalog
// ('@' cannot appear in a repository component, so tags and namespaces never
// collide), written to a temporary name and renamed.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace regfs::cache {

struct TagRecord {
  std::string digest;
  std::string media_type;
  int64_t size = 0;
  std::chrono::system_clock::time_point fetched;
};

class TagStore {
 public:
  explicit TagStore(std::filesystem::path root);

  std::optional<TagRecord> get(std::string_view registry, std::string_view repository,
                               std::string_view tag) const;
  // Records what the registry answered now. Failures to write are logged,
  // not thrown: the record is an optimisation.
  void put(std::string_view registry, std::string_view repository, std::string_view tag,
           const TagRecord& record);

  // The last listing the registry gave (a repository's tags, or with an
  // empty repository the catalog), kept for offline use.
  std::optional<std::vector<std::string>> get_listing(std::string_view registry,
                                                      std::string_view repository) const;
  void put_listing(std::string_view registry, std::string_view repository,
                   const std::vector<std::string>& names);
  // Repositories of `registry` something was recorded for (a tag list or a
  // tag answered by the registry): the names a mount used before. Sorted.
  std::vector<std::string> repositories(std::string_view registry) const;

 private:
  void write_json(const std::filesystem::path& path, const std::string& text);
  std::filesystem::path listing_path(std::string_view registry, std::string_view repository) const;
  std::filesystem::path path_of(std::string_view registry, std::string_view repository,
                                std::string_view tag) const;
  std::filesystem::path root_;
};

}  // namespace regfs::cache

#include "cache/tag_store.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cache/layout.h"
#include "registry/core/log.h"

namespace regfs::cache {

TagStore::TagStore(std::filesystem::path root) : root_(CacheLayout(std::move(root)).refs()) {}

std::filesystem::path TagStore::path_of(std::string_view registry, std::string_view repository,
                                        std::string_view tag) const {
  return root_ / std::string(registry) / std::string(repository) / ("@" + std::string(tag));
}

std::optional<TagRecord> TagStore::get(std::string_view registry, std::string_view repository,
                                       std::string_view tag) const {
  std::ifstream in(path_of(registry, repository, tag));
  if (!in) return std::nullopt;
  auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json["digest"].is_string() || !json["fetched"].is_number_integer()) {
    return std::nullopt;
  }
  TagRecord record;
  record.digest = json["digest"].get<std::string>();
  record.media_type = json.value("mediaType", "");
  record.size = json.value("size", int64_t{0});
  record.fetched =
      std::chrono::system_clock::time_point(std::chrono::seconds(json["fetched"].get<int64_t>()));
  return record;
}

void TagStore::put(std::string_view registry, std::string_view repository, std::string_view tag,
                   const TagRecord& record) {
  nlohmann::json json = {{"digest", record.digest},
                         {"mediaType", record.media_type},
                         {"size", record.size},
                         {"fetched", std::chrono::duration_cast<std::chrono::seconds>(
                                         record.fetched.time_since_epoch())
                                         .count()}};
  write_json(path_of(registry, repository, tag), json.dump());
}

std::filesystem::path TagStore::listing_path(std::string_view registry,
                                             std::string_view repository) const {
  return repository.empty() ? root_ / std::string(registry) / "@@catalog"
                            : root_ / std::string(registry) / std::string(repository) / "@@tags";
}

std::optional<std::vector<std::string>> TagStore::get_listing(std::string_view registry,
                                                              std::string_view repository) const {
  std::ifstream in(listing_path(registry, repository));
  if (!in) return std::nullopt;
  auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!json.is_array()) return std::nullopt;
  std::vector<std::string> names;
  for (auto& name : json) {
    if (name.is_string()) names.push_back(name.get<std::string>());
  }
  return names;
}

void TagStore::put_listing(std::string_view registry, std::string_view repository,
                           const std::vector<std::string>& names) {
  write_json(listing_path(registry, repository), nlohmann::json(names).dump());
}

std::vector<std::string> TagStore::repositories(std::string_view registry) const {
  constexpr size_t kMaxEntries = 100000;  // a bound on the walk, not a limit users meet
  std::vector<std::string> out;
  auto base = root_ / std::string(registry);
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(base, ec), end;
  for (size_t seen = 0; !ec && it != end && seen < kMaxEntries; it.increment(ec), ++seen) {
    if (it->is_directory(ec)) continue;
    auto name = it->path().filename().string();
    if (!name.starts_with("@") || name.find(".tmp.") != std::string::npos) continue;
    auto repository = it->path().parent_path().lexically_relative(base).string();
    if (!repository.empty() && repository != "." && (out.empty() || out.back() != repository)) {
      out.push_back(repository);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Writes to a temporary name and renames. Failures are logged, not thrown:
// the records are an optimisation and an offline fallback.
void TagStore::write_json(const std::filesystem::path& path, const std::string& text) {
  static std::atomic<uint64_t> counter{0};
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  auto tmp = path;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) {
      LOG(kWarning) << "Cannot record " << path << " in the cache";
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    LOG(kWarning) << "Cannot record " << path << ": " << ec.message();
    std::filesystem::remove(tmp, ec);
  }
}

}  // namespace regfs::cache

#include "cache/tag_store.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "registry/log.h"

namespace regfs::cache {

TagStore::TagStore(std::filesystem::path root) : root_(std::move(root) / "refs") {}

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
  record.fetched = std::chrono::system_clock::time_point(
      std::chrono::seconds(json["fetched"].get<int64_t>()));
  return record;
}

void TagStore::put(std::string_view registry, std::string_view repository, std::string_view tag,
                   const TagRecord& record) {
  static std::atomic<uint64_t> counter{0};
  auto path = path_of(registry, repository, tag);
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  nlohmann::json json = {
      {"digest", record.digest},
      {"mediaType", record.media_type},
      {"size", record.size},
      {"fetched", std::chrono::duration_cast<std::chrono::seconds>(
                      record.fetched.time_since_epoch())
                      .count()}};
  auto tmp = path;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json.dump();
    if (!out) {
      LOG(kWarning) << "Cannot record tag " << repository << ":" << tag << " in " << tmp;
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    LOG(kWarning) << "Cannot record tag " << repository << ":" << tag << ": " << ec.message();
    std::filesystem::remove(tmp, ec);
  }
}

}  // namespace regfs::cache

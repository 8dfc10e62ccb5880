#include "fs/source/status.h"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cache/blob_cache.h"
#include "registry/core/log.h"

namespace regfs::fs {

using nlohmann::json;

std::string status_json(Content& content, const std::string& what,
                        const std::vector<std::pair<std::string, std::string>>& staged,
                        bool read_only) {
  auto usage = content.cache().usage();
  json doc = {{"serving", what},
              {"read_only", read_only},
              {"pid", static_cast<int64_t>(::getpid())},
              {"log", log::log_file()},
              {"cache",
               {{"dir", content.options().cache_dir.string()},
                {"capacity", usage.capacity},
                {"complete_bytes", usage.complete_bytes},
                {"partial_bytes", usage.partial_bytes},
                {"derived_bytes", usage.derived_bytes},
                {"complete_blobs", usage.complete_blobs},
                {"partial_blobs", usage.partial_blobs}}}};
  json transfers = json::array();
  auto now = std::chrono::steady_clock::now();
  for (const auto& t : content.transfers().snapshot()) {
    double seconds = std::chrono::duration<double>(now - t.started).count();
    transfers.push_back(
        {{"what", t.what}, {"done", t.done}, {"total", t.total}, {"seconds", seconds}});
  }
  doc["transfers"] = transfers;
  json merges = json::array();
  for (const auto& m : content.merges().snapshot()) {
    json layers = json::array();
    for (const auto& l : m.layers) {
      layers.push_back({{"digest", l.digest},
                        {"size", l.size},
                        {"fetched", l.fetched},
                        {"entries", l.entries},
                        {"state", to_string(l.state)}});
    }
    double seconds = std::chrono::duration<double>(now - m.started).count();
    merges.push_back({{"image", m.image}, {"seconds", seconds}, {"layers", layers}});
  }
  doc["merges"] = merges;
  json registries = json::array();
  for (const auto& [name, health] : content.health_states()) {
    registries.push_back(
        {{"registry", name},
         {"state", health.up ? "up" : "down"},
         {"since", std::chrono::duration_cast<std::chrono::seconds>(health.since.time_since_epoch())
                       .count()},
         {"last_error", health.last_error}});
  }
  doc["registries"] = registries;
  json tags = json::array();
  for (const auto& [name, state] : staged) tags.push_back({{"tag", name}, {"state", state}});
  doc["staged"] = tags;
  doc["errors"] = log::recent_problems();
  return doc.dump(2) + "\n";
}

namespace {

std::string bar(uint64_t done, uint64_t total) {
  constexpr int kWidth = 20;
  // Resent bytes (a retried part) can take `done` past `total`.
  int filled = total == 0 ? kWidth : static_cast<int>(kWidth * std::min(done, total) / total);
  return "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "]";
}

}  // namespace

std::string format_status(const std::string& text, const std::string& mountpoint) {
  auto doc = json::parse(text);
  std::ostringstream out;
  const auto& cache = doc.at("cache");
  uint64_t used = cache.value("complete_bytes", uint64_t{0}) +
                  cache.value("partial_bytes", uint64_t{0}) +
                  cache.value("derived_bytes", uint64_t{0});
  out << "regfs at " << mountpoint << " serving " << doc.value("serving", "?") << " (pid "
      << doc.value("pid", 0) << ")\n";
  out << "cache " << cache.value("dir", "") << ": " << cache::human_size(used) << " of "
      << cache::human_size(cache.value("capacity", uint64_t{0})) << " ("
      << cache.value("complete_blobs", 0) << " whole blobs "
      << cache::human_size(cache.value("complete_bytes", uint64_t{0})) << ", "
      << cache.value("partial_blobs", 0) << " partial "
      << cache::human_size(cache.value("partial_bytes", uint64_t{0})) << ", derived "
      << cache::human_size(cache.value("derived_bytes", uint64_t{0})) << ")\n";
  const auto& transfers = doc.value("transfers", json::array());
  out << "transfers in flight: " << (transfers.empty() ? "none" : "") << "\n";
  for (const auto& t : transfers) {
    uint64_t done = t.value("done", uint64_t{0});
    uint64_t total = t.value("total", uint64_t{0});
    double seconds = t.value("seconds", 0.0);
    uint64_t rate = seconds > 0 ? static_cast<uint64_t>(static_cast<double>(done) / seconds) : 0;
    out << "  " << bar(done, total) << " " << cache::human_size(done) << "/"
        << cache::human_size(total) << " " << cache::human_size(rate) << "/s  "
        << t.value("what", "") << "\n";
  }
  const auto& merges = doc.value("merges", json::array());
  out << "rootfs merges: " << (merges.empty() ? "none" : "") << "\n";
  for (const auto& m : merges) {
    const auto& layers = m.value("layers", json::array());
    out << "  " << m.value("image", "") << "  " << layers.size() << " layers, "
        << static_cast<int64_t>(m.value("seconds", 0.0)) << " s\n";
    for (const auto& l : layers) {
      uint64_t fetched = l.value("fetched", uint64_t{0});
      uint64_t size = l.value("size", uint64_t{0});
      std::string digest = l.value("digest", "");
      out << "    " << bar(fetched, size) << " " << cache::human_size(fetched) << "/"
          << cache::human_size(size) << "  " << l.value("entries", uint64_t{0}) << " entries  "
          << l.value("state", "") << "  " << digest.substr(0, 19) << "\n";
    }
  }
  const auto& registries = doc.value("registries", json::array());
  out << "registries: " << (registries.empty() ? "none used yet" : "") << "\n";
  for (const auto& r : registries) {
    out << "  " << r.value("registry", "") << "  " << r.value("state", "") << " since "
        << log::utc_text(r.value("since", int64_t{0}), "%Y-%m-%d %H:%M:%S UTC");
    std::string error = r.value("last_error", "");
    if (!error.empty()) {
      out << (r.value("state", "") == "down" ? "  (" : "  (last error: ") << error << ")";
    }
    out << "\n";
  }
  const auto& staged = doc.value("staged", json::array());
  out << "staged tags:" << (staged.empty() ? " none" : "") << "\n";
  for (const auto& t : staged) {
    out << "  " << t.value("tag", "") << "  " << t.value("state", "") << "\n";
  }
  const auto& errors = doc.value("errors", json::array());
  out << "recent errors: " << (errors.empty() ? "none" : "") << "\n";
  for (const auto& line : errors) out << "  " << line.get<std::string>() << "\n";
  return out.str();
}

std::string format_unpushed(const std::string& text) {
  auto doc = json::parse(text);
  std::ostringstream out;
  size_t unpushed = 0;
  for (const auto& t : doc.value("staged", json::array())) {
    std::string state = t.value("state", "");
    if (state.starts_with("pushed ")) continue;
    out << "  " << t.value("tag", "") << "  " << state << "\n";
    ++unpushed;
  }
  if (unpushed == 0) return {};
  std::string dir = doc.value("cache", json::object()).value("dir", "");
  std::string log_file = doc.value("log", "");
  out << (unpushed == 1 ? "It stays" : "They stay") << " staged in " << dir
      << "/staging: a mount of " << (unpushed == 1 ? "its" : "their")
      << " registry with this cache shows " << (unpushed == 1 ? "it" : "them")
      << " again and pushes what is complete. The log: "
      << (log_file.empty() ? "the mount's stderr" : log_file) << "\n";
  return out.str();
}

int64_t status_pid(const std::string& text) {
  auto doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return doc.is_object() ? doc.value("pid", int64_t{0}) : 0;
}

}  // namespace regfs::fs

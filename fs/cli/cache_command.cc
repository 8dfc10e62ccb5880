#include "fs/cli/cache_command.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "cache/blob_cache.h"
#include "cache/cache_use.h"
#include "cache/layout.h"
#include "fs/cli/options.h"

namespace regfs::fs {
namespace {

namespace fsys = std::filesystem;

constexpr const char* kUsage =
    "Usage: regfs cache du|prune|clear [--cache-dir DIR] [--cache-size SIZE]\n"
    "\n"
    "  du      show what the cache holds, by kind, with sizes on disk\n"
    "  prune   evict least recently used content until within --cache-size (10G)\n"
    "  clear   remove all cached content (staged pushes are kept); refused while a\n"
    "          mount uses the cache\n";

struct Tally {
  size_t files = 0;
  uint64_t bytes = 0;  // allocated on disk
};

Tally tally(const fsys::path& dir, bool skip_logs = false) {
  Tally t;
  std::error_code ec;
  for (auto it = fsys::recursive_directory_iterator(dir, ec);
       it != fsys::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (skip_logs && it->path().extension() == cache::CacheLayout::kChunkLogExtension) continue;
    ++t.files;
    t.bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return t;
}

void print_row(const char* what, const Tally& t) {
  std::printf("  %-16s %6zu  %s\n", what, t.files, cache::human_size(t.bytes).c_str());
}

int du(const fsys::path& dir) {
  cache::CacheLayout layout(dir);
  Tally blobs = tally(layout.blobs()), partial = tally(layout.partials(), true),
        layers = tally(layout.layers()), staged = tally(layout.staging()),
        tmp = tally(layout.tmp());
  std::printf("cache %s\n", dir.c_str());
  print_row("whole blobs", blobs);
  print_row("partial blobs", partial);
  print_row("layer indexes", layers);
  print_row("staged pushes", staged);
  if (tmp.files) print_row("being written", tmp);
  std::printf(
      "  %-16s %6s  %s\n", "total", "",
      cache::human_size(blobs.bytes + partial.bytes + layers.bytes + staged.bytes + tmp.bytes)
          .c_str());
  return 0;
}

int prune(const fsys::path& dir, uint64_t capacity) {
  auto staging = cache::CacheLayout(dir).staging();
  uint64_t before = tally(dir).bytes - tally(staging).bytes;
  cache::BlobCache cache(dir, capacity);  // evicts to the bound as it opens
  uint64_t after = tally(dir).bytes - tally(staging).bytes;
  std::printf("pruned %s: %s -> %s (bound %s)\n", dir.c_str(), cache::human_size(before).c_str(),
              cache::human_size(after).c_str(), cache::human_size(capacity).c_str());
  return 0;
}

// Why `regfs cache clear` is refused: the mounts using the cache.
void refuse_clear(const fsys::path& dir, const std::vector<cache::CacheUser>& users) {
  std::string who;
  for (const auto& user : users) {
    if (!who.empty()) who += ", ";
    who += (user.mountpoint.empty() ? "a regfs mount" : "the regfs mount at " + user.mountpoint) +
           " (pid " + std::to_string(user.pid) + ")";
  }
  if (who.empty()) who = "a regfs mount";
  std::fprintf(stderr,
               "regfs: Cannot clear %s: it is in use by %s; unmount %s first (regfs umount "
               "MOUNTPOINT), nothing was removed\n",
               dir.c_str(), who.c_str(), users.size() > 1 ? "them" : "it");
}

int clear(const fsys::path& dir) {
  uint64_t freed = 0;
  cache::CacheLayout layout(dir);
  // Held while removing: a mount that starts meanwhile waits for it.
  auto exclusive = cache::CacheExclusive::try_take(layout);
  if (!exclusive) {
    refuse_clear(dir, cache::cache_users(layout));
    return 1;
  }
  for (const auto& sub : layout.content_dirs()) {
    freed += tally(sub).bytes;
    std::error_code ec;
    fsys::remove_all(sub, ec);
    if (ec) {
      std::fprintf(stderr, "regfs: Cannot remove %s: %s\n", sub.c_str(), ec.message().c_str());
      return 1;
    }
  }
  std::printf("cleared %s: freed %s%s\n", dir.c_str(), cache::human_size(freed).c_str(),
              fsys::exists(layout.staging()) ? " (staged pushes kept)" : "");
  return 0;
}

}  // namespace

int run_cache_command(const std::vector<std::string>& args) {
  std::string verb;
  std::string dir = default_cache_dir();
  uint64_t capacity = 10ull << 30;
  try {
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      auto value = [&] {
        if (i + 1 >= args.size()) throw UsageError("option " + a + " needs a value");
        return args[++i];
      };
      if (a == "--help" || a == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (a == "--cache-dir") {
        dir = value();
      } else if (a.rfind("--cache-dir=", 0) == 0) {
        dir = a.substr(12);
      } else if (a == "--cache-size") {
        capacity = parse_size(value());
      } else if (a.rfind("--cache-size=", 0) == 0) {
        capacity = parse_size(a.substr(13));
      } else if (verb.empty() && (a == "du" || a == "prune" || a == "clear")) {
        verb = a;
      } else {
        throw UsageError("unexpected argument '" + a + "' (see regfs cache --help)");
      }
    }
    if (verb.empty()) throw UsageError("missing du, prune or clear (see regfs cache --help)");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "regfs: %s\n", e.what());
    return 2;
  }
  if (!fsys::is_directory(dir)) {
    std::fprintf(stderr, "regfs: Cannot use cache %s: no such directory\n", dir.c_str());
    return 1;
  }
  try {
    if (verb == "du") return du(dir);
    if (verb == "prune") return prune(dir, capacity);
    return clear(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "regfs: Cannot %s %s: %s\n", verb.c_str(), dir.c_str(), e.what());
    return 1;
  }
}

}  // namespace regfs::fs

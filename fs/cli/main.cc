// regfs: the command line. Thin: parses, checks what can be checked before
// mounting (so a bad argument or an unreachable registry is one clear line
// and a non-zero exit), then hands over to the FUSE glue.
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache_use.h"
#include "cache/layout.h"
#include "cache/unique_fd.h"
#include "fs/cli/cache_command.h"
#include "fs/cli/login_command.h"
#include "fs/cli/options.h"
#include "fs/fuse/fuse_ops.h"
#include "fs/push/mount_tree.h"
#include "fs/source/content.h"
#include "fs/source/status.h"
#include "fs/tree/tree.h"
#include "registry/client.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/credentials.h"
#include "registry/manifest.h"

extern char** environ;

namespace regfs::fs {
namespace {

constexpr const char* kUsage =
    "Usage: regfs <command> [options]\n"
    "\n"
    "Container registries as directories.\n"
    "\n"
    "Commands:\n"
    "  mount [OPTIONS] [REGISTRY] MOUNTPOINT   mount (returns once the mount is ready)\n"
    "  umount MOUNTPOINT                       unmount (after pending builds are pushed)\n"
    "  push PATH                               push the staged tag at PATH now and wait\n"
    "  login REGISTRY [-u USER] [--password-stdin]  check and save credentials\n"
    "  logout REGISTRY                         remove saved credentials\n"
    "  status MOUNTPOINT                       transfers in flight, cache use, recent errors\n"
    "  cache du|prune|clear [--cache-dir DIR]  report and trim a cache directory\n"
    "\n"
    "  regfs --version | --help | <command> --help\n";

constexpr const char* kMountUsage =
    "Usage: regfs mount [OPTIONS] [REGISTRY] MOUNTPOINT\n"
    "       regfs REGISTRY MOUNTPOINT -o OPTS      (the form mount.fuse3 runs)\n"
    "\n"
    "Shows REGISTRY (host[:port], e.g. localhost:5000, ghcr.io, docker.io) at MOUNTPOINT as\n"
    "namespace/repo/tag/ directories, each an OCI image layout. Without REGISTRY, MOUNTPOINT\n"
    "shows every registry by name (MOUNTPOINT/docker.io/library/alpine/...).\n"
    "\n"
    "Options (each also as -o name_with_underscores=VALUE):\n"
    "  --cache-dir DIR        where fetched content lives ($XDG_CACHE_HOME/regfs or "
    "~/.cache/regfs)\n"
    "  --cache-size SIZE      bound for cached content, e.g. 512M, 20G (10G)\n"
    "  --insecure REGISTRY    allow plain HTTP / unverified TLS for REGISTRY (repeatable)\n"
    "  --ca-cert FILE         extra CA certificate to trust (also read: /etc/docker/certs.d/HOST/\n"
    "                         and /etc/containers/certs.d/HOST/ ca.crt, client "
    "NAME.cert/NAME.key)\n"
    "  --auth-file FILE       credentials file (docker config.json format; default: podman's\n"
    "                         auth.json, then ~/.docker/config.json, as `regfs login` writes)\n"
    "  --mirror REGISTRY=MIRROR  read REGISTRY through a pull-through mirror first (repeatable;\n"
    "                         [[registry.mirror]] in registries.conf works too)\n"
    "  --platform OS/ARCH[/VARIANT]  platform shown for multi-platform tags (the host's)\n"
    "  --tag-ttl SECONDS      how long tag lists and tag answers are trusted (30); past it\n"
    "                         the last answer is given at once while it is asked again in\n"
    "                         the background; 0 asks every time\n"
    "  --request-timeout SECONDS  the most one file operation waits for a registry, whatever\n"
    "                         it chains (30); while a registry is down, what is cached is\n"
    "                         served at once and the rest fails at once (EIO, ETIMEDOUT)\n"
    "  --upload-chunk-size SIZE  push blobs larger than SIZE in parts of SIZE, at least 5M\n"
    "                         (8M in one request, then 16M parts)\n"
    "  --push-delay SECONDS   push a build (a plain directory copied into a tag) after this\n"
    "                         long without a write (2); `regfs push PATH` pushes at once\n"
    "  --layer-compression gzip|zstd|estargz  how built layers are compressed (gzip)\n"
    "  --layer-compression-level N  gzip 1-9 (1, as crane), zstd 1-19 (3); data that does\n"
    "                         not compress is stored\n"
    "  --allow-delete         let rm/rmdir delete tags (else EROFS)\n"
    "  --read-only, -o ro     browse only: nothing can be written (EROFS); files open\n"
    "                         without a request to the daemon, so warm reads of many\n"
    "                         small files cost what local ones do\n"
    "  --no-urls              never fetch a foreign layer the registry lacks from its urls\n"
    "  -f, --foreground       stay attached, log to stderr\n"
    "  -d, --debug            log every request\n"
    "  -o OPTS                the options above, and FUSE options such as allow_other\n"
    "\n"
    "mount(8) and /etc/fstab (with regfs on the standard PATH; source \"regfs\": every registry):\n"
    "  mount -t fuse.regfs localhost:5000 /mnt/reg -o cache_size=20G,allow_other\n"
    "  localhost:5000  /mnt/reg  fuse.regfs  noauto,_netdev,cache_size=20G,allow_other  0 0\n";

constexpr const char* kUmountUsage =
    "Usage: regfs umount MOUNTPOINT\n"
    "\n"
    "Unmounts a regfs mount.\n";

int fail(const std::string& message) {
  std::fprintf(stderr, "regfs: %s\n", message.c_str());
  return 1;
}

bool wants_help(const std::vector<std::string>& args) {
  for (auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

std::string absolute(const std::string& path) {
  return path.empty() ? path : std::filesystem::absolute(path).lexically_normal().string();
}

// fsync of a directory of the mount: the daemon pushes (fuse_ops.cc).
int fsync_dir(const std::string& path) {
  cache::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno;
  return ::fsync(fd.get()) == 0 ? 0 : errno;
}

std::string xattr_of(const std::string& path, const char* name) {
  std::string value(4096, '\0');
  ssize_t n = ::getxattr(path.c_str(), name, value.data(), value.size());
  value.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return value;
}

// A mount point whose daemon died (kill -9, crash) answers ENOTCONN until it
// is unmounted: detach it so that the new mount can take its place.
void clean_stale_mount(const std::string& mountpoint) {
  std::fprintf(stderr, "regfs: warning: %s is a stale mount (its daemon is gone); unmounting it\n",
               mountpoint.c_str());
  const char* argv[] = {"fusermount3", "-u", "-z", mountpoint.c_str(), nullptr};
  pid_t pid;
  int status = 1;
  if (posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv), environ) == 0) {
    waitpid(pid, &status, 0);
  }
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) ::umount2(mountpoint.c_str(), MNT_DETACH);
}

// Whether a regfs mount (fstype fuse.regfs, proc(5) mountinfo) sits at `mountpoint` already,
// so that a second `regfs mount` there is refused rather than stacked on the first.
bool regfs_mounted_at(const std::string& mountpoint) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point, field;
    fields >> id >> parent >> device >> root >> point;
    while (fields >> field && field != "-") {
    }
    std::string fstype;
    fields >> fstype;
    // Mount points escape space, tab, newline and backslash as \ooo octal.
    std::string unescaped;
    for (size_t i = 0; i < point.size(); ++i) {
      if (point[i] == '\\' && i + 3 < point.size()) {
        unescaped += static_cast<char>(std::stoi(point.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        unescaped += point[i];
      }
    }
    if (unescaped == mountpoint && fstype == "fuse.regfs") return true;
  }
  return false;
}

// What the mount's content is made from (the clients too: see client_options).
ContentOptions content_options(const MountOptions& options,
                               std::shared_ptr<const registry::CredentialStore> creds,
                               std::shared_ptr<const registry::RegistriesConf> registries_conf) {
  ContentOptions content;
  content.cache_dir = options.cache_dir;
  content.cache_size = options.cache_size;
  content.tag_ttl = options.tag_ttl;
  content.insecure = options.insecure;
  content.ca_cert = options.ca_cert;
  content.credentials = std::move(creds);
  content.mirrors = options.mirrors;
  content.registries_conf = std::move(registries_conf);
  content.request_timeout = options.request_timeout;
  content.upload_chunk_size = options.upload_chunk_size;
  content.follow_urls = !options.no_urls;
  return content;
}

int run_mount(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::fputs(kMountUsage, stdout);
    return 0;
  }
  MountOptions options;
  std::shared_ptr<const registry::CredentialStore> creds;
  registry::Platform platform;
  try {
    options = parse_mount_args(args);
    options.mountpoint = absolute(options.mountpoint);
    options.cache_dir = absolute(options.cache_dir);
    options.ca_cert = absolute(options.ca_cert);
    options.auth_file = absolute(options.auth_file);
    platform = options.platform.empty() ? registry::host_platform()
                                        : registry::parse_platform(options.platform);
    creds = registry::CredentialStore::load(options.auth_file);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (options.debug) log::set_level(log::kDebug);
  auto registries_conf =
      std::make_shared<const registry::RegistriesConf>(registry::RegistriesConf::load());
  if (!options.registry.empty() && registries_conf->insecure(options.registry)) {
    options.insecure.push_back(options.registry);
  }
  struct stat st;
  // statfs, unlike stat, always reaches a FUSE daemon (no attribute cache).
  struct statfs fs_stat;
  if (::statfs(options.mountpoint.c_str(), &fs_stat) != 0 && errno == ENOTCONN) {
    clean_stale_mount(options.mountpoint);
  }
  if (::stat(options.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail("Cannot mount on " + options.mountpoint + ": not a directory");
  }
  if (regfs_mounted_at(std::filesystem::weakly_canonical(options.mountpoint).string())) {
    return fail("Cannot mount on " + options.mountpoint +
                ": regfs is mounted there already (regfs umount " + options.mountpoint + " first)");
  }
  if (!options.ca_cert.empty() && ::access(options.ca_cert.c_str(), R_OK) != 0) {
    return fail("Cannot read --ca-cert " + options.ca_cert + ": " + std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.cache_dir, ec);
  if (ec) return fail("Cannot create cache directory " + options.cache_dir + ": " + ec.message());
  ::chmod(options.cache_dir.c_str(), 0700);
  // Held for the mount's whole life (the daemon inherits it), so that
  // `regfs cache clear` refuses to empty the cache under it.
  std::optional<cache::CacheUse> cache_use;
  try {
    cache_use.emplace(cache::CacheLayout(options.cache_dir));
  } catch (const std::exception& e) {
    return fail(std::string("Cannot use cache directory ") + options.cache_dir + ": " + e.what());
  }
  std::optional<registry::Error> unreachable;  // why the registry did not answer the ping
  if (!options.registry.empty()) {
    try {
      registry::Client(client_options(content_options(options, creds, registries_conf),
                                      options.registry, ClientUse::kRead))
          .ping();
    } catch (const std::exception& e) {
      if (auto* error = dynamic_cast<const registry::Error*>(&e)) unreachable = *error;
      // Offline: what is cached stays readable (SPEC §7), so mount anyway if
      // the cache knows this registry.
      if (!std::filesystem::exists(
              cache::CacheLayout(options.cache_dir).refs_of(options.registry))) {
        return fail(std::string("Cannot reach registry ") + options.registry + ": " + e.what());
      }
      std::fprintf(stderr, "regfs: warning: %s is unreachable (%s); serving cached content\n",
                   options.registry.c_str(), e.what());
    }
  }
  if (!options.foreground) log::set_log_file(cache::CacheLayout(options.cache_dir).log_file());
  return mount_and_serve(options, [&] {
    cache_use->announce(options.mountpoint);
    ContentOptions content = content_options(options, creds, registries_conf);
    TreeOptions tree;
    tree.registry = options.registry;
    tree.platform = platform;
    tree.read_only = options.read_only;
    tree.listed_registries = creds ? creds->registries() : std::vector<std::string>{};
    tree.listed_registries.insert(tree.listed_registries.end(), options.insecure.begin(),
                                  options.insecure.end());
    Served served;
    served.content = std::make_unique<Content>(content);
    // Known down from the start: cached answers at once, probes behind.
    if (unreachable && (unreachable->kind() == registry::ErrorKind::kUnavailable ||
                        unreachable->kind() == registry::ErrorKind::kTimeout)) {
      served.content->health(options.registry)->failed(*unreachable);
    }
    StagingOptions staging;
    staging.root = cache::CacheLayout(served.content->options().cache_dir).staging();
    staging.allow_delete = options.allow_delete;
    staging.alone_on_cache = cache_use->alone();
    staging.push_delay = options.push_delay;
    staging.build.platform = platform;
    staging.build.compression = options.layer_compression == "zstd" ? cache::LayerCompression::kZstd
                                : options.layer_compression == "estargz"
                                    ? cache::LayerCompression::kEstargz
                                    : cache::LayerCompression::kGzip;
    staging.build.compression_level = options.layer_compression_level;
    staging.build.work_dir = cache::CacheLayout(served.content->options().cache_dir).builds();
    served.tree = std::make_unique<MountTree>(tree, *served.content, staging);
    LOG(kInfo) << "Serving " << (options.registry.empty() ? "all registries" : options.registry)
               << " at " << options.mountpoint << " (cache " << options.cache_dir << ")";
    // The mount is up: staged pushes to what it shows that a failure or a
    // dead daemon left behind go on in the background.
    served.tree->resume_pushes(served.tree->root()->registry);
    return served;
  });
}

// The status document of the mount at `mountpoint` (empty if none answers).
std::string read_status(const std::string& mountpoint) {
  std::ifstream in(mountpoint + "/" + std::string(kControlDirName) + "/status");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// What is left unpushed at unmount, said while the mount can still tell
// (regfs status cannot once it is gone): each staged tag not pushed (an
// incomplete one, one whose push failed now or before), where it stays, the
// log. `err`: why the pushes before unmounting failed, 0 if they did not.
void warn_unpushed(const std::string& mountpoint, int err, const std::string& status) {
  std::string report;
  try {
    report = format_unpushed(status);
  } catch (const std::exception&) {
  }
  if (err == 0) {
    if (!report.empty()) {
      std::fprintf(stderr, "regfs: warning: staged tags not pushed before unmounting %s:\n%s",
                   mountpoint.c_str(), report.c_str());
    }
    return;
  }
  if (report.empty()) {
    std::fprintf(stderr,
                 "regfs: warning: pushing before unmounting %s failed (%s); what is staged stays "
                 "in the cache dir for the next mount, the mount's log says why\n",
                 mountpoint.c_str(), std::strerror(err));
    return;
  }
  std::fprintf(stderr, "regfs: warning: staged tags not pushed before unmounting %s (%s):\n%s",
               mountpoint.c_str(), std::strerror(err), report.c_str());
}

// Waits (at most `limit`) for the daemon `pid` to end once unmounted, so
// that what follows (`regfs cache clear`, a new mount) finds its cache free.
void wait_for_daemon(int64_t pid, std::chrono::seconds limit) {
  if (pid <= 0) return;
  // proc(5) stat: "pid (comm) state ..."; a zombie has ended (its files,
  // the cache's lock with them, are closed) and waits only to be reaped.
  auto running = [&] {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    std::getline(stat, text);
    auto paren = text.rfind(')');
    return text.find("(regfs)") != std::string::npos && paren != std::string::npos &&
           paren + 2 < text.size() && text[paren + 2] != 'Z' && text[paren + 2] != 'X';
  };
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

int run_umount(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::fputs(kUmountUsage, stdout);
    return 0;
  }
  if (args.size() != 1) return fail("usage: regfs umount MOUNTPOINT");
  std::string mountpoint = absolute(args[0]);
  {
    // Symlinks resolved where they can be: a dead daemon's mount point
    // answers ENOTCONN, and is still one to unmount.
    std::error_code ec;
    std::string canonical = std::filesystem::weakly_canonical(mountpoint, ec).string();
    if (ec) canonical = mountpoint;
    while (canonical.size() > 1 && canonical.back() == '/') canonical.pop_back();
    if (!regfs_mounted_at(canonical)) {
      return fail("Cannot unmount " + mountpoint + ": no regfs mount there");
    }
  }
  // Pending builds and pushes first: umount returns once they are done.
  int err = fsync_dir(mountpoint);
  std::string status = read_status(mountpoint);  // while the mount can tell
  if (err != ENOTCONN) warn_unpushed(mountpoint, err, status);
  int64_t daemon = status_pid(status);
  const char* argv[] = {"fusermount3", "-u", mountpoint.c_str(), nullptr};
  pid_t pid;
  if (posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv), environ) == 0) {
    int exit_status = 0;
    waitpid(pid, &exit_status, 0);
    if (WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) {
      wait_for_daemon(daemon, std::chrono::seconds(10));
      return 0;
    }
  }
  if (::umount2(mountpoint.c_str(), 0) == 0) {
    wait_for_daemon(daemon, std::chrono::seconds(10));
    return 0;
  }
  return fail("Cannot unmount " + mountpoint + ": " + std::strerror(errno));
}

int run_push(const std::vector<std::string>& args) {
  if (wants_help(args) || args.size() != 1) {
    std::fputs(
        "Usage: regfs push PATH\n\nPushes the staged tag at PATH (a tag directory under a regfs\n"
        "mount) now, without waiting for --push-delay, and waits: prints the pushed digest and\n"
        "exits 0, or prints the reason and exits 1.\n",
        wants_help(args) ? stdout : stderr);
    return wants_help(args) ? 0 : 2;
  }
  const std::string& path = args[0];
  if (xattr_of(path, "user.regfs.state").empty()) {
    return fail(path + " is not a staged tag of a regfs mount (no user.regfs.state)");
  }
  // Progress on a terminal while the daemon pushes.
  std::atomic<bool> done{false};
  std::thread progress;
  if (::isatty(STDERR_FILENO)) {
    progress = std::thread([&] {
      std::string last;
      while (!done) {
        std::string state = xattr_of(path, "user.regfs.state");
        if (state != last) std::fprintf(stderr, "regfs: %s: %s\n", path.c_str(), state.c_str());
        last = state;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  }
  int err = fsync_dir(path);
  std::string state = xattr_of(path, "user.regfs.state");
  // The daemon's wait ended at --request-timeout, its push goes on (the push
  // queue): wait for the state to say how it ended.
  while (err == ETIMEDOUT && (state.starts_with("pushing ") || state == "building")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    state = xattr_of(path, "user.regfs.state");
    if (state.starts_with("pushed ")) err = 0;
  }
  done = true;
  if (progress.joinable()) progress.join();
  if (err == 0 && state.starts_with("pushed ")) {
    std::printf("%s\n", state.substr(7).c_str());
    return 0;
  }
  return fail("Cannot push " + path + ": " + (state.empty() ? std::strerror(err) : state));
}

// The status document of the mount whose status file is `path`, read whole
// with O_DIRECT: a read-only mount (whose kernel keeps files' pages) makes it
// anew for a direct read from its start. Empty if it cannot be read.
std::string read_status_file(const std::string& path) {
  cache::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  if (!fd) fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  constexpr size_t kChunk = 1 << 20;
  void* raw = nullptr;
  if (::posix_memalign(&raw, 4096, kChunk) != 0) return {};
  std::unique_ptr<char, decltype(&std::free)> buffer(static_cast<char*>(raw), &std::free);
  std::string text;
  while (true) {
    ssize_t n = ::pread(fd.get(), buffer.get(), kChunk, static_cast<off_t>(text.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer.get(), static_cast<size_t>(n));
  }
  return text;
}

int run_status(const std::vector<std::string>& args) {
  if (wants_help(args)) {
    std::fputs(
        "Usage: regfs status MOUNTPOINT\n\nShows transfers in flight with progress, cache "
        "use and recent errors of a regfs mount.\n",
        stdout);
    return 0;
  }
  if (args.size() != 1) return fail("usage: regfs status MOUNTPOINT");
  std::string path = absolute(args[0]) + "/" + std::string(kControlDirName) + "/status";
  std::string text = read_status_file(path);
  if (text.empty()) return fail("Cannot read status of " + args[0] + ": not a regfs mount");
  try {
    std::string shown = format_status(text, absolute(args[0]));
    struct statvfs st {};
    auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    bool read_only = doc.is_object() && doc.value("read_only", false);
    if (read_only || (::statvfs(absolute(args[0]).c_str(), &st) == 0 && (st.f_flag & ST_RDONLY))) {
      // The first line names the mount: say it is read-only there (a
      // --read-only mount stays so after mount -o remount,rw).
      shown.insert(shown.find('\n'), ", read-only");
    }
    std::fputs(shown.c_str(), stdout);
  } catch (const std::exception& e) {
    return fail("Cannot read status of " + args[0] + ": " + e.what());
  }
  return 0;
}

int run(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string& command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "--version" || command == "version") {
    std::printf("regfs %s\n", REGFS_VERSION);
    return 0;
  }
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "mount") return run_mount(rest);
  if (command == "umount" || command == "unmount") return run_umount(rest);
  if (command == "status") return run_status(rest);
  if (command == "push") return run_push(rest);
  if (command == "cache") return run_cache_command(rest);
  if (command == "login") return run_login(rest);
  if (command == "logout") return run_logout(rest);
  if (command.empty() || command[0] == '-')
    return fail("unknown option " + command + " (see regfs --help)");
  // mount.fuse3 runs "regfs REGISTRY MOUNTPOINT -o OPTS".
  if (args.size() >= 2 && (command.find_first_of(".:") != std::string::npos ||
                           std::filesystem::is_directory(args[1]))) {
    return run_mount(args);
  }
  return fail("unknown command '" + command + "' (see regfs --help)");
}

}  // namespace
}  // namespace regfs::fs

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return regfs::fs::run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "regfs: %s\n", e.what());
    return 1;
  }
}

#include "cache/staging.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cache/temp_file.h"
#include "cache/unique_fd.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

namespace fsys = std::filesystem;
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr char kTagPrefix = '@';
constexpr char kStatePrefix = '%';
// In a namespace directory: the namespace was made as a repository.
constexpr std::string_view kRepositoryMark = "%%repository";

[[noreturn]] void throw_io(const std::string& what, const std::error_code& ec) {
  throw io_error(what, ec.value());
}

std::string to_hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string from_hex(const std::string& text) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    out.push_back(static_cast<char>(nibble(text[i]) << 4 | nibble(text[i + 1])));
  }
  return out;
}

nlohmann::json to_json(const StagedTagState& state) {
  nlohmann::json doc = nlohmann::json::object();
  doc["modes"] = state.modes;
  auto& refs = doc["references"] = nlohmann::json::object();
  for (auto& [path, ref] : state.references) {
    refs[path] = {{"registry", ref.registry},
                  {"repository", ref.repository},
                  {"digest", ref.digest},
                  {"size", ref.size}};
  }
  auto& xattrs = doc["xattrs"] = nlohmann::json::object();
  for (auto& [path, names] : state.xattrs) {
    auto& entry = xattrs[path] = nlohmann::json::object();
    for (auto& [name, value] : names) entry[name] = to_hex(value);  // values may be binary
  }
  doc["error"] = state.error;
  doc["pushed"] = state.pushed_digest;
  doc["pushing"] = state.pushing;
  if (state.made_by_copy) doc["made_by_copy"] = true;
  const auto& changes = state.rootfs;
  if (!changes.whiteouts.empty() || !changes.opaque.empty() || !changes.entries.empty()) {
    auto& rootfs = doc["rootfs"] = nlohmann::json::object();
    rootfs["whiteouts"] = changes.whiteouts;
    rootfs["opaque"] = changes.opaque;
    auto& entries = rootfs["entries"] = nlohmann::json::object();
    for (auto& [path, meta] : changes.entries) {
      auto& entry = entries[path] = {{"mode", meta.mode}, {"uid", meta.uid}, {"gid", meta.gid}};
      auto& xattrs = entry["xattrs"] = nlohmann::json::object();
      for (auto& [name, value] : meta.xattrs) xattrs[name] = to_hex(value);
    }
  }
  auto& uploads = doc["uploads"] = nlohmann::json::object();
  for (auto& [digest, u] : state.uploads) {
    uploads[digest] = {{"url", u.url}, {"offset", u.offset}, {"size", u.size}};
  }
  return doc;
}

StagedTagState from_json(const nlohmann::json& doc) {
  StagedTagState state;
  if (!doc.is_object()) return state;
  if (auto it = doc.find("modes"); it != doc.end() && it->is_object()) {
    for (auto& [path, mode] : it->items()) {
      if (mode.is_number_unsigned()) state.modes[path] = mode.get<uint32_t>();
    }
  }
  if (auto it = doc.find("references"); it != doc.end() && it->is_object()) {
    for (auto& [path, ref] : it->items()) {
      BlobReference r;
      r.registry = ref.value("registry", "");
      r.repository = ref.value("repository", "");
      r.digest = ref.value("digest", "");
      r.size = ref.value("size", int64_t{0});
      if (registry::is_valid_digest(r.digest)) state.references[path] = r;
    }
  }
  if (auto it = doc.find("xattrs"); it != doc.end() && it->is_object()) {
    for (auto& [path, names] : it->items()) {
      if (!names.is_object()) continue;
      for (auto& [name, value] : names.items()) {
        if (value.is_string()) state.xattrs[path][name] = from_hex(value.get<std::string>());
      }
    }
  }
  state.error = doc.value("error", "");
  state.pushed_digest = doc.value("pushed", "");
  state.pushing = doc.value("pushing", "");
  state.made_by_copy = doc.value("made_by_copy", false);
  if (auto it = doc.find("rootfs"); it != doc.end() && it->is_object()) {
    for (const char* key : {"whiteouts", "opaque"}) {
      auto& set = std::string_view(key) == "opaque" ? state.rootfs.opaque : state.rootfs.whiteouts;
      if (auto list = it->find(key); list != it->end() && list->is_array()) {
        for (auto& path : *list) {
          if (path.is_string()) set.insert(path.get<std::string>());
        }
      }
    }
    if (auto entries = it->find("entries"); entries != it->end() && entries->is_object()) {
      for (auto& [path, entry] : entries->items()) {
        if (!entry.is_object()) continue;
        RootfsEntryMeta meta;
        meta.mode = entry.value("mode", uint32_t{0});
        meta.uid = entry.value("uid", uint32_t{0});
        meta.gid = entry.value("gid", uint32_t{0});
        if (auto x = entry.find("xattrs"); x != entry.end() && x->is_object()) {
          for (auto& [name, value] : x->items()) {
            if (value.is_string()) meta.xattrs[name] = from_hex(value.get<std::string>());
          }
        }
        state.rootfs.entries[path] = meta;
      }
    }
  }
  if (auto uploads = doc.find("uploads"); uploads != doc.end() && uploads->is_object()) {
    for (auto& [digest, u] : uploads->items()) {
      if (!registry::is_valid_digest(digest) || !u.is_object()) continue;
      UploadSession session{u.value("url", ""), u.value("offset", uint64_t{0}),
                            u.value("size", uint64_t{0})};
      if (!session.url.empty()) state.uploads[digest] = session;
    }
  }
  return state;
}

}  // namespace

StagingArea::StagingArea(fsys::path root) : root_(std::move(root)) {
  std::error_code ec;
  fsys::create_directories(root_, ec);
  if (ec) throw_io("create " + root_.string(), ec);
  ::chmod(root_.c_str(), 0700);
}

fsys::path StagingArea::namespace_dir(std::string_view registry, std::string_view path) const {
  fsys::path dir = root_ / std::string(registry);
  return path.empty() ? dir : dir / std::string(path);
}

fsys::path StagingArea::tag_dir(const StagedTag& tag) const {
  return namespace_dir(tag.registry, tag.repository) / (kTagPrefix + tag.tag);
}

fsys::path StagingArea::upper_dir(const StagedTag& tag) const {
  return namespace_dir(tag.registry, tag.repository) / (kStatePrefix + tag.tag + ".upper");
}

fsys::path StagingArea::file(const StagedTag& tag, std::string_view relative) const {
  return relative.empty() ? tag_dir(tag) : tag_dir(tag) / std::string(relative);
}

fsys::path StagingArea::state_path(const StagedTag& tag) const {
  return namespace_dir(tag.registry, tag.repository) / (kStatePrefix + tag.tag + ".json");
}

bool StagingArea::has_namespace(std::string_view registry, std::string_view path) const {
  // Not the upper directory of a tag's rootfs/ ('%' starts no repository name).
  auto last = path.rfind('/');
  if (path.substr(last == std::string_view::npos ? 0 : last + 1).starts_with(kStatePrefix)) {
    return false;
  }
  std::error_code ec;
  return fsys::is_directory(namespace_dir(registry, path), ec);
}

void StagingArea::make_namespace(std::string_view registry, std::string_view path) {
  std::error_code ec;
  fsys::create_directories(namespace_dir(registry, path), ec);
  if (ec) throw_io("stage namespace " + std::string(path), ec);
}

bool StagingArea::remove_namespace(std::string_view registry, std::string_view path) {
  auto dir = namespace_dir(registry, path);
  std::error_code ec;
  for (auto& entry : fsys::directory_iterator(dir, ec)) {
    if (entry.path().filename() != kRepositoryMark) return false;
  }
  fsys::remove(dir / kRepositoryMark, ec);
  return ::rmdir(dir.c_str()) == 0;
}

bool StagingArea::is_staged_repository(std::string_view registry, std::string_view path) const {
  std::error_code ec;
  return fsys::exists(namespace_dir(registry, path) / kRepositoryMark, ec);
}

std::vector<std::string> StagingArea::child_namespaces(std::string_view registry,
                                                       std::string_view path) const {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto& entry : fsys::directory_iterator(namespace_dir(registry, path), ec)) {
    std::string name = entry.path().filename();
    // Not tags, nor the upper directories of their rootfs/ ('%').
    if (entry.is_directory(ec) && name[0] != kTagPrefix && name[0] != kStatePrefix) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> StagingArea::tags(std::string_view registry,
                                           std::string_view repository) const {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto& entry : fsys::directory_iterator(namespace_dir(registry, repository), ec)) {
    std::string name = entry.path().filename();
    if (name[0] == kTagPrefix && entry.is_directory(ec)) {
      names.push_back(name.substr(1));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool StagingArea::has_tag(const StagedTag& tag) const {
  std::error_code ec;
  return fsys::is_directory(tag_dir(tag), ec);
}

void StagingArea::make_tag(const StagedTag& tag) {
  std::error_code ec;
  fsys::create_directories(tag_dir(tag), ec);
  if (ec) throw_io("stage tag " + tag.repository + ":" + tag.tag, ec);
}

void StagingArea::discard_tag(const StagedTag& tag) {
  std::lock_guard lock(mutex_);
  std::error_code ec;
  fsys::remove_all(tag_dir(tag), ec);
  fsys::remove_all(upper_dir(tag), ec);
  fsys::remove(state_path(tag), ec);
  states_.erase(tag);
}

void StagingArea::tag_to_namespace(const StagedTag& tag) {
  std::lock_guard lock(mutex_);
  std::error_code ec;
  fsys::path ns = namespace_dir(tag.registry, tag.repository) / tag.tag;
  fsys::rename(tag_dir(tag), ns, ec);
  if (ec) throw_io("make " + tag.tag + " a namespace", ec);
  std::ofstream(ns / kRepositoryMark).close();
  fsys::remove(state_path(tag), ec);
  states_.erase(tag);
}

std::vector<StagedTag> StagingArea::all_tags() const {
  std::vector<StagedTag> out;
  std::error_code ec;
  for (auto& reg : fsys::directory_iterator(root_, ec)) {
    if (!reg.is_directory(ec)) continue;
    auto it = fsys::recursive_directory_iterator(reg.path(), ec);
    for (; !ec && it != fsys::recursive_directory_iterator(); it.increment(ec)) {
      std::string name = it->path().filename();
      if (!it->is_directory(ec)) continue;
      if (name[0] == kStatePrefix) it.disable_recursion_pending();  // a rootfs/ upper
      if (name[0] != kTagPrefix) continue;
      it.disable_recursion_pending();
      std::string repo = it->path().parent_path().lexically_relative(reg.path()).string();
      out.push_back({reg.path().filename(), repo, name.substr(1)});
    }
  }
  return out;
}

StagedTagState StagingArea::read_state(const StagedTag& tag) const {
  if (auto it = states_.find(tag); it != states_.end()) return it->second;
  StagedTagState state;
  if (std::ifstream in(state_path(tag)); in) {
    state = from_json(nlohmann::json::parse(in, nullptr, false));
  }
  states_[tag] = state;
  return state;
}

UniqueFd StagingArea::lock_push(const StagedTag& tag) {
  UniqueFd dir(::open(tag_dir(tag).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto fail = [&] {
    throw_io("lock staged tag " + tag.tag, std::error_code(errno, std::generic_category()));
  };
  if (!dir) {
    if (errno == ENOENT) return {};
    fail();
  }
  while (::flock(dir.get(), LOCK_EX) != 0) {
    if (errno != EINTR) fail();
  }
  std::lock_guard lock(mutex_);
  states_.erase(tag);
  return dir;
}

StagedTagState StagingArea::state(const StagedTag& tag) const {
  std::lock_guard lock(mutex_);
  return read_state(tag);
}

void StagingArea::update_state(const StagedTag& tag,
                               const std::function<void(StagedTagState&)>& change) {
  std::lock_guard lock(mutex_);
  if (!has_tag(tag)) return;
  StagedTagState state = read_state(tag);
  change(state);
  write_state(tag, state);
}

void StagingArea::update_state_if(const StagedTag& tag,
                                  const std::function<bool(StagedTagState&)>& change) {
  std::lock_guard lock(mutex_);
  if (!has_tag(tag)) return;
  StagedTagState state = read_state(tag);
  if (change(state)) write_state(tag, state);
}

void StagingArea::write_state(const StagedTag& tag, const StagedTagState& state) {
  fsys::path path = state_path(tag);
  fsys::path tmp = path;
  tmp += ".tmp";
  std::string text = to_json(state).dump();
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      throw Error(ErrorKind::kIo, "Cannot write " + tmp.string());
    }
  }
  std::error_code ec;
  fsys::rename(tmp, path, ec);
  if (ec) throw_io("write " + path.string(), ec);
  states_[tag] = state;
}

void WriteHasher::wrote(uint64_t offset, const char* data, size_t size) {
  if (!in_order_ || offset != hashed_) {
    in_order_ = false;
    return;
  }
  hash_.update(data, size);
  hashed_ += size;
}

void WriteHasher::truncated(uint64_t size) {
  if (size == 0) {
    hash_ = registry::Sha256();
    hashed_ = 0;
    in_order_ = true;
  } else if (size != hashed_) {
    in_order_ = false;
  }
}

std::optional<std::string> WriteHasher::digest(uint64_t file_size) {
  if (!in_order_ || hashed_ != file_size) return std::nullopt;
  in_order_ = false;  // digest() finishes the hash: later writes rehash
  return hash_.digest();
}

std::string hash_file(const fsys::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    throw Error(ErrorKind::kIo, "Cannot read " + path.string() + ": " + std::strerror(errno));
  }
  registry::Sha256 hash;
  std::vector<char> buffer(1 << 20);
  while (true) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw Error(ErrorKind::kIo, "Cannot read " + path.string() + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    hash.update(buffer.data(), static_cast<size_t>(n));
  }
  return hash.digest();
}

}  // namespace regfs::cache

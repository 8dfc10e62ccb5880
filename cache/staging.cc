#include "cache/staging.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
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

fsys::path StagingArea::journal_path(const StagedTag& tag) const {
  return namespace_dir(tag.registry, tag.repository) / (kStatePrefix + tag.tag + ".journal");
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
  fsys::remove(journal_path(tag), ec);
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
  fsys::remove(journal_path(tag), ec);
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

StagingArea::HeldState& StagingArea::held_state(const StagedTag& tag) const {
  if (auto it = states_.find(tag); it != states_.end()) return it->second;
  HeldState held;
  held.on_disk = files_of(tag);
  if (std::ifstream in(state_path(tag)); in) {
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    held.state = state_from_json(nlohmann::json::parse(text, nullptr, false), &held.generation);
  }
  if (std::ifstream in(journal_path(tag)); in) {
    std::string line;
    while (std::getline(in, line)) {
      // A torn last line (a crash mid-append) does not parse; lines of an
      // older generation were left by a crash right after a rewrite.
      auto change = nlohmann::json::parse(line, nullptr, false);
      if (change.is_discarded()) break;
      apply_state_change(held.state, change, held.generation);
    }
  }
  return states_[tag] = std::move(held);
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
  forget_if_changed(tag);
  return dir;
}

void StagingArea::forget_if_changed(const StagedTag& tag) const {
  if (auto it = states_.find(tag); it != states_.end() && !(it->second.on_disk == files_of(tag))) {
    states_.erase(it);
  }
}

StagedTagState StagingArea::state(const StagedTag& tag) const {
  std::lock_guard lock(mutex_);
  return held_state(tag).state;
}

StagedTagState StagingArea::current_state(const StagedTag& tag) const {
  std::lock_guard lock(mutex_);
  forget_if_changed(tag);
  return held_state(tag).state;
}

void StagingArea::update_state(const StagedTag& tag,
                               const std::function<void(StagedTagState&)>& change) {
  update_state_if(tag, [&](StagedTagState& s) {
    change(s);
    return true;
  });
}

void StagingArea::update_state_if(const StagedTag& tag,
                                  const std::function<bool(StagedTagState&)>& change) {
  std::lock_guard lock(mutex_);
  if (!has_tag(tag)) return;
  HeldState& held = held_state(tag);
  StagedTagState next = held.state;
  if (!change(next)) return;
  auto line = state_change(held.state, next, held.generation);
  if (line && line->empty()) return;  // nothing changed
  std::string text = line ? line->dump() + "\n" : std::string();
  // The journal may grow to the document's size (at least kMinJournal), so
  // appends and rewrites together write O(n) bytes for n changes.
  if (line && held.on_disk.journal_bytes + text.size() <=
                  std::max(held.on_disk.document_bytes, kMinJournal)) {
    append_journal(tag, text);
    held.on_disk.journal_bytes += text.size();
  } else {
    write_document(tag, next, held);
  }
  held.state = std::move(next);
}

namespace {

// What `state` keeps for `path` alone, and the tag-wide scalars.
StagedTagState path_slice(const StagedTagState& state, const std::string& path) {
  StagedTagState slice;
  if (auto it = state.modes.find(path); it != state.modes.end()) slice.modes.insert(*it);
  if (auto it = state.references.find(path); it != state.references.end()) {
    slice.references.insert(*it);
  }
  if (auto it = state.xattrs.find(path); it != state.xattrs.end()) slice.xattrs.insert(*it);
  if (auto it = state.rootfs.entries.find(path); it != state.rootfs.entries.end()) {
    slice.rootfs.entries.insert(*it);
  }
  if (state.rootfs.whiteouts.count(path)) slice.rootfs.whiteouts.insert(path);
  if (state.rootfs.opaque.count(path)) slice.rootfs.opaque.insert(path);
  slice.error = state.error;
  slice.pushed_digest = state.pushed_digest;
  slice.pushing = state.pushing;
  slice.made_by_copy = state.made_by_copy;
  return slice;
}

// Puts back into `state` what `slice` (of path_slice) kept for `path`.
void restore_slice(StagedTagState& state, const std::string& path, StagedTagState slice) {
  auto put = [&path](auto& into, auto& from) {
    into.erase(path);
    into.merge(from);
  };
  put(state.modes, slice.modes);
  put(state.references, slice.references);
  put(state.xattrs, slice.xattrs);
  put(state.rootfs.entries, slice.rootfs.entries);
  put(state.rootfs.whiteouts, slice.rootfs.whiteouts);
  put(state.rootfs.opaque, slice.rootfs.opaque);
  state.error = std::move(slice.error);
  state.pushed_digest = std::move(slice.pushed_digest);
  state.pushing = std::move(slice.pushing);
  state.made_by_copy = slice.made_by_copy;
}

}  // namespace

void StagingArea::update_path_state_if(const StagedTag& tag, const std::string& path,
                                       const std::function<bool(StagedTagState&)>& change) {
  std::lock_guard lock(mutex_);
  if (!has_tag(tag)) return;
  HeldState& held = held_state(tag);
  auto before = path_slice(held.state, path);
  size_t uploads = held.state.uploads.size();
  try {
    if (!change(held.state)) return;
  } catch (...) {
    restore_slice(held.state, path, std::move(before));
    throw;
  }
  auto after = path_slice(held.state, path);
  // Whiteouts, opaque marks and tag-wide fields have no journal line:
  // state_change gives none, and the document is rewritten.
  auto line = uploads == held.state.uploads.size() ? state_change(before, after, held.generation)
                                                   : std::nullopt;
  if (line && line->empty()) return;  // nothing changed
  std::string text = line ? line->dump() + "\n" : std::string();
  try {
    if (line && held.on_disk.journal_bytes + text.size() <=
                    std::max(held.on_disk.document_bytes, kMinJournal)) {
      append_journal(tag, text);
      held.on_disk.journal_bytes += text.size();
    } else {
      write_document(tag, held.state, held);
    }
  } catch (...) {  // not written: not changed
    restore_slice(held.state, path, std::move(before));
    throw;
  }
}

void StagingArea::read_state(const StagedTag& tag,
                             const std::function<void(const StagedTagState&)>& read) const {
  std::lock_guard lock(mutex_);
  read(held_state(tag).state);
}

void StagingArea::append_journal(const StagedTag& tag, const std::string& text) {
  fsys::path path = journal_path(tag);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_io("write " + path.string(), std::error_code(errno, std::generic_category()));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_io("write " + path.string(), std::error_code(errno, std::generic_category()));
    done += static_cast<size_t>(n);
  }
}

void StagingArea::write_document(const StagedTag& tag, const StagedTagState& state,
                                 HeldState& held) {
  fsys::path path = state_path(tag);
  fsys::path tmp = path;
  tmp += ".tmp";
  std::string text = state_to_json(state, held.generation + 1).dump();
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
  // Lines left now are of the old generation: ignored if a crash keeps them.
  fsys::remove(journal_path(tag), ec);
  held.generation += 1;
  held.on_disk = files_of(tag);
}

StagingArea::StateFiles StagingArea::files_of(const StagedTag& tag) const {
  StateFiles files;
  struct stat st;
  if (::stat(state_path(tag).c_str(), &st) == 0) {
    files.document_ino = st.st_ino;
    files.document_bytes = static_cast<uint64_t>(st.st_size);
    files.document_mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  }
  if (::stat(journal_path(tag).c_str(), &st) == 0) {
    files.journal_bytes = static_cast<uint64_t>(st.st_size);
  }
  return files;
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

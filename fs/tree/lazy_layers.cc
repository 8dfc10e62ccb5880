#include "fs/tree/lazy_layers.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "cache/lazy_layer.h"
#include "cache/toc.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

namespace fsys = std::filesystem;

// A table kept from an earlier fetch (`layers/<hex of its digest>.toc`:
// "<offset> <length>\n" and the compressed table as the blob holds it), so a
// later mount needs no registry for it; checked against its digest as a
// fetched one is. nullopt if there is none (or it is unreadable).
std::optional<std::pair<cache::TocRange, std::string>> read_kept_table(const fsys::path& path) {
  std::ifstream in(path, std::ios::binary);
  cache::TocRange range{};
  if (!(in >> range.offset >> range.length) || in.get() != '\n') return std::nullopt;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() != range.length) return std::nullopt;
  return std::make_pair(range, std::move(bytes));
}

void keep_table(cache::BlobCache& cache, const fsys::path& path, const cache::TocRange& range,
                const std::string& compressed) {
  fsys::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << range.offset << ' ' << range.length << '\n' << compressed;
    if (!out.flush()) {
      LOG(kWarning) << "Cannot keep the table of contents in " << path << " (fetched again later)";
      return;
    }
  }
  std::error_code ec;
  fsys::rename(tmp, path, ec);
  if (!ec) cache.track_file(path);
}

}  // namespace

void LazyLayers::fall_back(const registry::Descriptor& layer, const std::string& why) {
  {
    std::lock_guard lock(mutex_);
    if (!warned_.insert(layer.digest).second) return;
  }
  LOG(kWarning) << "Cannot read layer " << layer.digest << " lazily: " << why
                << "; reading it whole";
}

std::shared_ptr<const cache::LayerIndex> LazyLayers::open(RegistrySource& content,
                                                          const std::string& repository,
                                                          const registry::Descriptor& layer,
                                                          const std::string& diff_id) {
  const auto& notes = layer.annotations;
  auto estargz = notes.find(std::string(cache::kEstargzTocDigest));
  auto zstd = notes.find(std::string(cache::kZstdChunkedChecksum));
  if (estargz == notes.end() && zstd == notes.end()) return nullptr;
  auto format =
      estargz != notes.end() ? cache::TocFormat::kEstargz : cache::TocFormat::kZstdChunked;
  const std::string& want = format == cache::TocFormat::kEstargz ? estargz->second : zstd->second;
  if (!registry::is_valid_digest(want)) {
    fall_back(layer, "its table digest annotation \"" + want + "\" is not a sha256 digest");
    return nullptr;
  }
  auto read = [&content, repository, digest = layer.digest](uint64_t offset, uint64_t length) {
    return content.read_range(repository, digest, offset, length);
  };
  auto blob_size = static_cast<uint64_t>(layer.size);
  std::optional<cache::TocRange> range;
  std::string compressed;
  const fsys::path kept =
      chunks_.layout().layers() / (std::string(registry::digest_hex(want)) + ".toc");
  auto kept_table = read_kept_table(kept);
  if (kept_table && kept_table->first.offset + kept_table->first.length > blob_size) {
    kept_table.reset();
  }
  if (kept_table) {
    range = kept_table->first;
    compressed = std::move(kept_table->second);
  } else {
    if (format == cache::TocFormat::kZstdChunked) {
      auto position = notes.find(std::string(cache::kZstdChunkedPosition));
      if (position != notes.end()) range = cache::zstd_chunked_annotation_range(position->second);
    }
    if (!range) {
      size_t footer_size = format == cache::TocFormat::kEstargz ? cache::kEstargzFooterSize
                                                                : cache::kZstdChunkedFooterSize;
      if (blob_size < footer_size) {
        fall_back(layer, "it is too small to have a footer");
        return nullptr;
      }
      auto footer = read(blob_size - footer_size, footer_size);
      range = format == cache::TocFormat::kEstargz ? cache::estargz_toc_range(footer, blob_size)
                                                   : cache::zstd_chunked_footer_range(footer);
    }
    if (!range || range->offset + range->length > blob_size) {
      fall_back(layer, "no footer pointing at a table of contents");
      return nullptr;
    }
    compressed = read(range->offset, range->length);
  }
  try {
    auto bytes = cache::extract_toc(format, compressed);
    registry::Sha256 hash;
    hash.update(format == cache::TocFormat::kEstargz ? std::string_view(bytes.json)
                                                     : std::string_view(compressed));
    auto actual = hash.digest();
    if (actual != want) {
      std::error_code ec;
      if (kept_table) fsys::remove(kept, ec);  // fetched again next time
      fall_back(layer,
                "its table of contents has digest " + actual + ", the annotation says " + want);
      return nullptr;
    }
    if (!kept_table) keep_table(chunks_, kept, *range, compressed);
    auto toc = cache::parse_toc(format, bytes.json, range->offset);
    if (bytes.toc_entry) {  // the table's own tar entry, as the layer's tar holds it
      cache::TocFile file;
      file.inline_data = std::move(bytes.json);
      toc.entries.push_back(std::move(*bytes.toc_entry));
      toc.files.push_back(std::move(file));
    }
    cache::LayerIndex index;
    index.diff_id = diff_id;
    index.entries = std::move(toc.entries);
    auto& cache = chunks_;
    cache::LazyLayer::ChunkStore chunks{
        [&cache](const std::string& digest) {
          return cache.read_small(digest, cache::LazyLayer::kMaxKeptChunk);
        },
        [&cache](const std::string& digest, std::string_view bytes) {
          cache.put_small(digest, bytes);
        }};
    auto submit = [&content](std::function<void()> task) { content.submit(std::move(task)); };
    index.lazy = std::make_shared<const cache::LazyLayer>(
        layer.digest, format, std::move(toc.files), read, chunks, submit);
    LOG(kInfo) << "Reading layer " << layer.digest << " lazily ("
               << (format == cache::TocFormat::kEstargz ? "eStargz" : "zstd:chunked")
               << "): " << index.entries.size() << " entries from a " << range->length
               << "-byte table";
    return std::make_shared<const cache::LayerIndex>(std::move(index));
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kInvalid && e.kind() != ErrorKind::kIntegrity) throw;
    fall_back(layer, e.what());
    return nullptr;
  }
}

}  // namespace regfs::fs

// libarchive's write callback (archive_write_open(3)) bridged to a C++ sink,
// shared by the layer writers (cache/layer_writer.cc, cache/estargz_writer.cc).
// An exception the sink throws cannot cross libarchive's C frames: it is kept
// in the context and rethrown by check_archive().
#pragma once

#include <archive.h>

#include <exception>
#include <string>

#include "registry/core/error.h"

namespace regfs::cache {

// `Sink` has write(const char* data, size_t size), which may throw.
template <typename Sink>
struct ArchiveWriteContext {
  Sink* sink;
  std::exception_ptr error;
};

// The archive_write_callback for an ArchiveWriteContext<Sink> as client data.
template <typename Sink>
la_ssize_t archive_write_to_sink(archive*, void* data, const void* buffer, size_t size) {
  auto* context = static_cast<ArchiveWriteContext<Sink>*>(data);
  try {
    context->sink->write(static_cast<const char*>(buffer), size);
    return static_cast<la_ssize_t>(size);
  } catch (...) {
    context->error = std::current_exception();
    return -1;
  }
}

// Throws for a libarchive result `rc` below ARCHIVE_WARN: the sink's own
// exception if it threw, else Error(kIo) "Cannot write <what> to the layer: …".
template <typename Sink>
void check_archive(archive* a, int rc, ArchiveWriteContext<Sink>& context,
                   const std::string& what) {
  if (rc >= ARCHIVE_WARN) return;
  if (context.error) std::rethrow_exception(context.error);
  throw registry::Error(registry::ErrorKind::kIo,
                        "Cannot write " + what + " to the layer: " +
                            (archive_error_string(a) ? archive_error_string(a) : "?"));
}

}  // namespace regfs::cache

#include "cache/parallel_gzip.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <string>

namespace regfs::cache {
namespace {

// Inflates a gzip stream with zlib (one member); the data, or "" if invalid.
std::string gunzip(const std::string& gz) {
  z_stream z{};
  if (inflateInit2(&z, 31) != Z_OK) return "";
  std::string out(1 << 20, '\0');
  std::string result;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  int rc;
  do {
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      return "";
    }
    result.append(out.data(), out.size() - z.avail_out);
  } while (rc != Z_STREAM_END);
  bool whole = z.avail_in == 0;
  inflateEnd(&z);
  return whole ? result : "";
}

std::string compress(const std::string& data, unsigned workers, size_t piece) {
  std::string gz;
  ParallelGzip gzip(6, workers, [&](const char* d, size_t n) { gz.append(d, n); });
  for (size_t at = 0; at < data.size(); at += piece) {
    gzip.write(data.data() + at, std::min(piece, data.size() - at));
  }
  gzip.finish();
  return gz;
}

std::string sample(size_t size) {
  std::mt19937 rng(7);
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    // Half text-like (compressible, with matches across blocks), half random.
    data[i] = (i / 100000) % 2 ? static_cast<char>(rng()) : "regfs layer "[i % 12];
  }
  return data;
}

TEST(ParallelGzip, OneValidGzipStreamWhateverTheWorkersAndWrites) {
  auto data = sample(3 * ParallelGzip::kBlock + 12345);
  auto one = compress(data, 1, 4096);
  EXPECT_EQ(gunzip(one), data);
  EXPECT_LT(one.size(), data.size());
  EXPECT_EQ(compress(data, 4, 100000), one) << "the same bytes whatever the threads and writes";
  EXPECT_EQ(compress(data, 2, data.size()), one);
}

TEST(ParallelGzip, EmptyAndTinyInputs) {
  EXPECT_EQ(gunzip(compress("", 2, 1)), "");
  EXPECT_EQ(gunzip(compress("x", 2, 1)), "x");
  auto exact = sample(ParallelGzip::kBlock);
  EXPECT_EQ(gunzip(compress(exact, 2, 1000)), exact);
}

TEST(ParallelGzip, DataThatDoesNotCompressIsStored) {
  std::mt19937 rng(11);
  std::string random(4 * ParallelGzip::kBlock + 777, '\0');
  for (auto& c : random) c = static_cast<char>(rng());
  auto gz = compress(random, 2, 65536);
  EXPECT_EQ(gunzip(gz), random);
  // Stored blocks cost 5 bytes per 64 KiB, plus the gzip framing.
  EXPECT_LT(gz.size(), random.size() + random.size() / 1000 + 64);
  EXPECT_EQ(compress(random, 1, random.size()), gz);
}

TEST(ParallelGzip, EachBlockDecidesFromItsFirstBytes) {
  // A block that starts random and goes on as text is stored; one that
  // starts as text and goes on random is deflated: both inflate back.
  std::mt19937 rng(13);
  std::string data;
  for (size_t i = 0; i < ParallelGzip::kBlock; ++i) {
    data += i < ParallelGzip::kSample ? static_cast<char>(rng()) : "stored "[i % 7];
  }
  for (size_t i = 0; i < ParallelGzip::kBlock; ++i) {
    data += i < ParallelGzip::kSample ? "deflated "[i % 9] : static_cast<char>(rng());
  }
  auto gz = compress(data, 2, 10000);
  EXPECT_EQ(gunzip(gz), data);
  EXPECT_GT(gz.size(), ParallelGzip::kBlock * 3 / 2);  // the first block's text is stored
  EXPECT_EQ(compress(data, 3, data.size()), gz);
}

}  // namespace
}  // namespace regfs::cache

#pragma once
// Content fingerprints of data files, for the feature cache's key.
//
// xxh64 is XXH64 (Yann Collet's xxHash, 64-bit, as specified in xxHash's
// doc/xxhash_spec.md): four independent multiply-rotate lanes over 32-byte stripes, so it
// runs at memory speed rather than at one multiply per byte as FNV-1a does -- the cache
// key of a 2 GB TSV is computed on every run, so its cost matters. Not cryptographic: it
// catches a replaced or edited file, not a file made to collide on purpose.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "ctdl/io/mapped_file.hpp"

namespace ctdl::data {

/// XXH64 of `bytes` with `seed`; streaming over several calls is not offered (the whole
/// file is mapped, and file_fingerprint hashes it in one pass).
std::uint64_t xxh64(std::string_view bytes, std::uint64_t seed = 0);

/// The XXH64 of a file's bytes. The file is mapped and read front to back; pages already
/// hashed are dropped from the resident set every 64 MiB, so memory stays flat.
std::uint64_t file_fingerprint(const std::string& path);

// ============================================================================

namespace detail {
inline constexpr std::uint64_t kXxP1 = 0x9E3779B185EBCA87ull, kXxP2 = 0xC2B2AE3D27D4EB4Full,
                               kXxP3 = 0x165667B19E3779F9ull, kXxP4 = 0x85EBCA77C2B2AE63ull,
                               kXxP5 = 0x27D4EB2F165667C5ull;

inline std::uint64_t xx_read64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}
inline std::uint32_t xx_read32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}
inline std::uint64_t xx_round(std::uint64_t acc, std::uint64_t input) {
  return std::rotl(acc + input * kXxP2, 31) * kXxP1;
}
inline std::uint64_t xx_merge(std::uint64_t acc, std::uint64_t lane) {
  return (acc ^ xx_round(0, lane)) * kXxP1 + kXxP4;
}

/// The 32-byte-stripe phase over [p, p + n) with n a multiple of 32, continuing `v`.
inline void xx_stripes(std::uint64_t v[4], const unsigned char* p, std::size_t n) {
  for (const unsigned char* end = p + n; p < end; p += 32) {
    v[0] = xx_round(v[0], xx_read64(p));
    v[1] = xx_round(v[1], xx_read64(p + 8));
    v[2] = xx_round(v[2], xx_read64(p + 16));
    v[3] = xx_round(v[3], xx_read64(p + 24));
  }
}

/// The end of XXH64: the lanes (when total >= 32) or seed + P5, the length, the tail.
inline std::uint64_t xx_finish(const std::uint64_t v[4], std::uint64_t seed, std::uint64_t total,
                               const unsigned char* tail, std::size_t n) {
  std::uint64_t h;
  if (total >= 32) {
    h = std::rotl(v[0], 1) + std::rotl(v[1], 7) + std::rotl(v[2], 12) + std::rotl(v[3], 18);
    for (int i = 0; i < 4; ++i) h = xx_merge(h, v[i]);
  } else {
    h = seed + kXxP5;
  }
  h += total;
  for (; n >= 8; tail += 8, n -= 8) h = std::rotl(h ^ xx_round(0, xx_read64(tail)), 27) * kXxP1 + kXxP4;
  if (n >= 4) {
    h = std::rotl(h ^ (std::uint64_t{xx_read32(tail)} * kXxP1), 23) * kXxP2 + kXxP3;
    tail += 4;
    n -= 4;
  }
  for (; n > 0; ++tail, --n) h = std::rotl(h ^ (*tail * kXxP5), 11) * kXxP1;
  h ^= h >> 33;
  h *= kXxP2;
  h ^= h >> 29;
  h *= kXxP3;
  h ^= h >> 32;
  return h;
}
}  // namespace detail

inline std::uint64_t xxh64(std::string_view bytes, std::uint64_t seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::uint64_t v[4] = {seed + detail::kXxP1 + detail::kXxP2, seed + detail::kXxP2, seed, seed - detail::kXxP1};
  const std::size_t body = bytes.size() / 32 * 32;
  detail::xx_stripes(v, p, body);
  return detail::xx_finish(v, seed, bytes.size(), p + body, bytes.size() - body);
}

inline std::uint64_t file_fingerprint(const std::string& path) {
  const io::MappedFile file(path);
  file.advise_sequential();
  const unsigned char* p = file.data();
  const std::size_t size = file.size();
  constexpr std::uint64_t seed = 0;
  std::uint64_t v[4] = {seed + detail::kXxP1 + detail::kXxP2, seed + detail::kXxP2, seed, seed - detail::kXxP1};
  constexpr std::size_t kChunk = std::size_t{64} << 20;  // a multiple of 32
  const std::size_t body = size / 32 * 32;
  for (std::size_t at = 0; at < body; at += kChunk) {
    const std::size_t n = std::min(kChunk, body - at);
    detail::xx_stripes(v, p + at, n);
    file.release(at, at + n);
  }
  return detail::xx_finish(v, seed, size, p + body, size - body);
}

}  // namespace ctdl::data

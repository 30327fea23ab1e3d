#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator. The numbers for counter c under key k are a pure function
// of (c, k), so element i of a dropout mask is the same whatever thread computes it, and
// backward can regenerate the mask instead of storing it.
//
// ctdl keys a stream by (seed, rank) and counts over (element index, tensor id, step):
// every training step, data-parallel rank and tensor gets its own independent numbers.

#include <array>
#include <cstddef>
#include <cstdint>

#include "ctdl/core/config.hpp"

namespace ctdl {

class Philox {
 public:
  using Counter = std::array<std::uint32_t, 4>;
  using Key = std::array<std::uint32_t, 2>;

  /// The ten-round Philox4x32 bijection of `ctr` under `key`.
  CTDL_HOST_DEVICE static Counter generate(Counter ctr, Key key) {
    for (int r = 0; r < 10; ++r) {
      if (r > 0) bump(key);
      round(ctr[0], ctr[1], ctr[2], ctr[3], key);
    }
    return ctr;
  }

  /// generate() of kLanes counters at once (counter k's words in c[0][k] .. c[3][k]):
  /// the same rounds, lane by lane, so that the compiler keeps the lanes in vector
  /// registers (the CPU's dropout; a single call is a chain of ten dependent rounds).
  static constexpr int kLanes = 16;
  static void generate_lanes(std::uint32_t (&c)[4][kLanes], Key key) {
    for (int r = 0; r < 10; ++r) {
      if (r > 0) bump(key);
      for (int k = 0; k < kLanes; ++k) round(c[0][k], c[1][k], c[2][k], c[3][k], key);
    }
  }

  /// A uniform float in [0, 1) from 24 random bits.
  CTDL_HOST_DEVICE static float to_unit_float(std::uint32_t bits) {
    return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f);
  }

 private:
  /// One round: two multiplications, their halves mixed with the other words and the key.
  CTDL_HOST_DEVICE static void round(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2, std::uint32_t& c3,
                                     const Key& key) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(kMul0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(kMul1) * c2;
    c0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ key[0];
    c1 = static_cast<std::uint32_t>(p1);
    c2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ key[1];
    c3 = static_cast<std::uint32_t>(p0);
  }
  /// The key schedule: the Weyl sequence's step between rounds.
  CTDL_HOST_DEVICE static void bump(Key& key) {
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }

  static constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  static constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
};

/// The random stream of one tensor in one step on one rank.
struct RandomStream {
  std::uint64_t seed = 0;
  std::uint32_t rank = 0;
  std::uint32_t tensor_id = 0;
  std::uint64_t step = 0;

  CTDL_HOST_DEVICE Philox::Key key() const {
    return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32) ^ (rank * 0x9E3779B9u)};
  }
  /// The counter of elements 4*block .. 4*block+3.
  CTDL_HOST_DEVICE Philox::Counter counter(std::uint64_t block) const {
    return {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), tensor_id,
            static_cast<std::uint32_t>(step)};
  }
  /// Four uniform floats in [0, 1) for elements 4*block .. 4*block+3.
  CTDL_HOST_DEVICE std::array<float, 4> uniform4(std::uint64_t block) const {
    const auto r = Philox::generate(counter(block), key());
    return {Philox::to_unit_float(r[0]), Philox::to_unit_float(r[1]), Philox::to_unit_float(r[2]),
            Philox::to_unit_float(r[3])};
  }
  /// uniform4 of blocks first .. first + count - 1 into u[0 .. 4 count): the same numbers,
  /// Philox::kLanes blocks at a time (host only).
  void uniform_blocks(std::uint64_t first, std::size_t count, float* u) const {
    constexpr int L = Philox::kLanes;
    for (std::size_t done = 0; done < count; done += L) {
      std::uint32_t c[4][L];
      for (int k = 0; k < L; ++k) {
        const auto ctr = counter(first + done + static_cast<std::uint64_t>(k));
        for (int w = 0; w < 4; ++w) c[w][k] = ctr[static_cast<std::size_t>(w)];
      }
      Philox::generate_lanes(c, key());
      const std::size_t n = count - done < L ? count - done : L;
      for (std::size_t k = 0; k < n; ++k)
        for (int w = 0; w < 4; ++w) u[4 * (done + k) + static_cast<std::size_t>(w)] = Philox::to_unit_float(c[w][k]);
    }
  }
  /// The uniform float for element i.
  CTDL_HOST_DEVICE float uniform(std::uint64_t i) const { return uniform4(i / 4)[i % 4]; }
};

}  // namespace ctdl

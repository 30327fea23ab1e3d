#pragma once
// The dropout mask: element i of a dropout with probability p is kept when the Philox
// stream's uniform(i) >= p. Shared by ops::dropout, the fused LayerNorm op and their CUDA
// kernels (device-callable), so every device drops the same elements for the same stream.

#include <cstdint>

#include "ctdl/core/config.hpp"
#include "ctdl/core/philox.hpp"

namespace ctdl::ops {

/// The mask element i of a dropout with probability p (device-callable). `bits`, when
/// set, holds the same decisions drawn beforehand (cuda::dropout_keep_bits: bit i % 32 of
/// word i / 32), so that kernels which take elements one at a time, and a backward that
/// needs the mask twice, do not each run the generator per element (one Philox call
/// gives four elements' numbers).
struct DropoutMask {
  RandomStream stream;
  float p;
  const std::uint32_t* bits = nullptr;
  CTDL_HOST_DEVICE bool keep(std::uint64_t i) const {
    if (bits) return ((bits[i >> 5] >> (i & 31u)) & 1u) != 0;
    return stream.uniform(i) >= p;
  }
};

}  // namespace ctdl::ops

#pragma once
// The dropout mask: element i of a dropout with probability p is kept when the Philox
// stream's uniform(i) >= p. Shared by ops::dropout, the fused LayerNorm op and their CUDA
// kernels (device-callable), so every device drops the same elements for the same stream.

#include <cstdint>

#include "ctdl/core/config.hpp"
#include "ctdl/core/philox.hpp"

namespace ctdl::ops {

/// The mask element i of a dropout with probability p (device-callable).
struct DropoutMask {
  RandomStream stream;
  float p;
  CTDL_HOST_DEVICE bool keep(std::uint64_t i) const { return stream.uniform(i) >= p; }
};

}  // namespace ctdl::ops

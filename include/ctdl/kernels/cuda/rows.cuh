#pragma once
// What the row-wise kernels of softmax and LayerNorm share: one block per row in a
// grid-stride loop, the block's shape, and rounding to T where the CPU op stores an
// intermediate. (round_to may belong in common.cuh once other kernels need it.)

#include <cstdint>
#include <type_traits>

#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::cuda::norm_detail {

/// v rounded to T and back: where the CPU stores an intermediate in a Tensor<T>.
template <class T>
__device__ __forceinline__ float round_to(float v) {
  if constexpr (std::is_same_v<T, bf16>)
    return __bfloat162float(__float2bfloat16_rn(v));
  else if constexpr (std::is_same_v<T, fp16>)
    return __half2float(__float2half_rn(v));
  else
    return v;
}

/// Most threads on one row: every row kernel is compiled for it (__launch_bounds__), so
/// no launch can fail for want of registers (Philox in the fused kernels is heavy).
inline constexpr int kMaxRowThreads = 256;

/// Threads for one row of n elements: a whole number of warps (block_sum needs that), at
/// most kMaxRowThreads; each thread takes columns threadIdx.x, + blockDim.x, ...
inline int row_threads(std::int64_t n) {
  const std::int64_t warps = (n + 31) / 32, most = kMaxRowThreads / 32;
  return static_cast<int>(32 * (warps < 1 ? 1 : (warps > most ? most : warps)));
}

/// Blocks for a grid-stride loop over rows (one block per row up to the grid limit).
inline unsigned row_blocks(std::int64_t rows) {
  constexpr std::int64_t kMaxBlocks = 1 << 20;
  return static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
}

}  // namespace ctdl::cuda::norm_detail

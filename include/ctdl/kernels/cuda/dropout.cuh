#pragma once
// Dropout on a CUDA device, forward and backward: the device twin of ops::dropout, with
// the same mask for the same RandomStream.
//
//   keep_i = [u_i >= p],  u_i = stream.uniform(i)  (Philox4x32-10 of (seed, rank, tensor id, step))
//   dropout_forward:   y[i]   = keep_i ? x[i] * scale : 0,    scale = 1 / (1 - p)  (in float)
//   dropout_backward:  dx[i] += keep_i ? dy[i] * scale : 0    (accumulates, as the tape does)
//
// Shape contract: x, y, dy, dx are n elements each (any shape, flattened); T is float,
// bf16 or fp16; 0 < p < 1 (p = 0 is the identity: the op does not call these).
//
// The mask: one thread per block of four elements 4b .. 4b+3 draws stream.uniform4(b),
// exactly the CPU loop of ops/dropout.hpp (`apply_dropout`), so element i gets
// uniform4(i / 4)[i % 4] on both devices, whatever the launch shape; the last block's
// lanes past n are drawn and not used, as on the CPU. No mask is stored: backward
// draws it again from the same stream.

#include <cstdint>

#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/ops/dropout_mask.hpp"

namespace ctdl::cuda {

template <class T>
void dropout_forward(const T* x, T* y, std::int64_t n, const ops::DropoutMask& mask,
                     cudaStream_t stream = current_stream());
template <class T>
void dropout_backward(const T* dy, T* dx, std::int64_t n, const ops::DropoutMask& mask,
                      cudaStream_t stream = current_stream());

// ============================================================================

namespace detail {

template <bool Accumulate, class T>
__global__ void dropout_kernel(const T* in, T* out, std::int64_t n, ops::DropoutMask mask) {
  const std::int64_t block = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (block >= (n + 3) / 4) return;
  // The CPU's scale, computed the same way in float.
  const float scale = 1.0f / (1.0f - mask.p);
  const auto u = mask.stream.uniform4(static_cast<std::uint64_t>(block));
  for (int lane = 0; lane < 4; ++lane) {
    const std::int64_t i = 4 * block + lane;
    if (i >= n) break;
    // __fmul_rn keeps the product rounded on its own (never fused into an FMA with the
    // accumulation), as the CPU computes it.
    const float v = u[lane] >= mask.p ? __fmul_rn(load(in, i), scale) : 0.0f;
    if constexpr (Accumulate) store(out, i, load(out, i) + v);
    else store(out, i, v);
  }
}

template <bool Accumulate, class T>
void launch_dropout(const T* in, T* out, std::int64_t n, const ops::DropoutMask& mask, cudaStream_t stream,
                    const char* what) {
  if (!(mask.p > 0.0f && mask.p < 1.0f)) {
    throw Error(std::string(what) + ": probability " + std::to_string(mask.p) +
                " is not in (0, 1) (p = 0 is the identity and launches nothing)");
  }
  if (n <= 0) return;
  const std::int64_t blocks_of_four = (n + 3) / 4;
  dropout_kernel<Accumulate><<<blocks_for(blocks_of_four), kThreads, 0, stream>>>(in, out, n, mask);
  check_launch(what);
}

}  // namespace detail

template <class T>
void dropout_forward(const T* x, T* y, std::int64_t n, const ops::DropoutMask& mask, cudaStream_t stream) {
  detail::launch_dropout<false>(x, y, n, mask, stream, "cuda::dropout_forward");
}

template <class T>
void dropout_backward(const T* dy, T* dx, std::int64_t n, const ops::DropoutMask& mask, cudaStream_t stream) {
  detail::launch_dropout<true>(dy, dx, n, mask, stream, "cuda::dropout_backward");
}

}  // namespace ctdl::cuda

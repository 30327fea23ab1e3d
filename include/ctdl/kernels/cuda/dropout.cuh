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
// draws it again from the same stream. dropout_keep_bits draws the same decisions into a
// bit mask, for kernels that take elements one at a time (the fused LayerNorm's).

#include <cstdint>
#include <string>

#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/ops/dropout_mask.hpp"

namespace ctdl::cuda {

template <class T>
void dropout_forward(const T* x, T* y, std::int64_t n, const ops::DropoutMask& mask,
                     cudaStream_t stream = current_stream());
template <class T>
void dropout_backward(const T* dy, T* dx, std::int64_t n, const ops::DropoutMask& mask,
                      cudaStream_t stream = current_stream());

/// Words of dropout_keep_bits for n elements.
__host__ __device__ inline std::int64_t dropout_bit_words(std::int64_t n) { return (n + 31) / 32; }

/// The decisions of mask (its stream and p) for elements 0 .. n-1, drawn as dropout_kernel
/// draws them (uniform4 per four elements): bit k of bits[w] is keep(32 w + k), bits past
/// n are 0. bits: dropout_bit_words(n) words of device memory. Set DropoutMask::bits to
/// them, and the fused kernels read the decisions instead of drawing each again.
void dropout_keep_bits(const ops::DropoutMask& mask, std::int64_t n, std::uint32_t* bits,
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

/// One thread per word: eight Philox blocks, 32 decisions.
inline __global__ void dropout_keep_bits_kernel(ops::DropoutMask mask, std::int64_t n, std::uint32_t* bits) {
  const std::int64_t w = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= dropout_bit_words(n)) return;
  std::uint32_t word = 0;
  for (int q = 0; q < 8; ++q) {
    const std::int64_t block = 8 * w + q;
    if (4 * block >= n) break;
    const auto u = mask.stream.uniform4(static_cast<std::uint64_t>(block));
    for (int c = 0; c < 4; ++c) {
      if (4 * block + c < n && u[c] >= mask.p) word |= 1u << (4 * q + c);
    }
  }
  bits[w] = word;
}

}  // namespace detail

inline void dropout_keep_bits(const ops::DropoutMask& mask, std::int64_t n, std::uint32_t* bits, cudaStream_t stream) {
  if (!(mask.p >= 0.0f && mask.p < 1.0f)) {
    throw Error("cuda::dropout_keep_bits: probability " + std::to_string(mask.p) + " is not in [0, 1)");
  }
  if (n <= 0) return;
  if (!bits) throw Error("cuda::dropout_keep_bits: the bits pointer is null");
  ops::DropoutMask drawn = mask;
  drawn.bits = nullptr;  // draw from the stream, whatever the caller's mask holds
  detail::dropout_keep_bits_kernel<<<blocks_for(dropout_bit_words(n)), kThreads, 0, stream>>>(drawn, n, bits);
  check_launch("cuda::dropout_keep_bits");
}

template <class T>
void dropout_forward(const T* x, T* y, std::int64_t n, const ops::DropoutMask& mask, cudaStream_t stream) {
  detail::launch_dropout<false>(x, y, n, mask, stream, "cuda::dropout_forward");
}

template <class T>
void dropout_backward(const T* dy, T* dx, std::int64_t n, const ops::DropoutMask& mask, cudaStream_t stream) {
  detail::launch_dropout<true>(dy, dx, n, mask, stream, "cuda::dropout_backward");
}

}  // namespace ctdl::cuda

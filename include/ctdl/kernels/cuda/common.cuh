#pragma once
// What every CUDA kernel of ctdl shares: error checks that name the call, the stream
// kernels run on, launch shapes, and loads and stores that turn ctdl's storage types
// (float, bf16 = Eigen::bfloat16, fp16 = Eigen::half) into float arithmetic and back.
//
// Kernels take raw device pointers and element counts; the op headers (ops/*.hpp) keep
// the shape checks and the tape and pick the CPU or the CUDA kernel in one place.
// Half-precision values are read and written through CUDA's own types (__nv_bfloat16,
// __half): Eigen's types have the same 16-bit layout and both round to nearest even, so
// a value stored on the device is bit for bit the value the CPU would store.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"

namespace ctdl::cuda {

/// Throws ctdl::Error naming the call when a CUDA runtime call fails.
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(status));
}

/// After a kernel launch: a bad launch configuration or a missing kernel image for this
/// GPU surfaces here, named, instead of as a wrong result later.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

/// The stream ctdl's kernels and copies run on unless given another: the legacy default
/// stream, so work is ordered with every blocking stream and with synchronous copies.
inline cudaStream_t current_stream() noexcept { return nullptr; }

/// Threads per block for one-element-per-thread kernels, and the blocks that cover n.
inline constexpr int kThreads = 256;
inline unsigned blocks_for(std::int64_t n, int threads = kThreads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

/// The CUDA type with T's storage (float stays float).
template <class T>
struct native {
  using type = T;
};
template <>
struct native<bf16> {
  using type = __nv_bfloat16;
};
template <>
struct native<fp16> {
  using type = __half;
};
template <class T>
using native_t = typename native<T>::type;

/// Element i of p as float (float, bf16, fp16 storage).
template <class T>
__device__ __forceinline__ float load(const T* p, std::int64_t i) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
  } else if constexpr (std::is_same_v<T, fp16>) {
    return __half2float(reinterpret_cast<const __half*>(p)[i]);
  } else {
    return static_cast<float>(p[i]);
  }
}

/// p[i] = v rounded to T (round to nearest even, as the CPU's conversions).
template <class T>
__device__ __forceinline__ void store(T* p, std::int64_t i, float v) {
  if constexpr (std::is_same_v<T, bf16>) {
    reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<T, fp16>) {
    reinterpret_cast<__half*>(p)[i] = __float2half_rn(v);
  } else {
    p[i] = static_cast<T>(v);
  }
}

/// Sum of v over a warp (every lane gets it), in float or double.
template <class V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
/// Max of v over a warp (every lane gets it).
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum of v over a block of at most 1024 threads (every thread gets it), in float or
/// double, in a fixed order (the same bits on every run). `scratch` holds 32 values of
/// shared memory; the call is a barrier.
template <class V>
__device__ __forceinline__ V block_sum(V v, V* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : V(0);
  return warp_sum(v);
}
/// Max of v over a block, as block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace ctdl::cuda

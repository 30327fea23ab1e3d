#pragma once
// Out-of-range indices met by a kernel (embedding ids, cross-entropy labels).
//
// The CPU ops check their indices before computing and throw ctdl::Error naming the
// first bad position. Where the indices are on the host, the CUDA path does the same
// check before the launch (embedding.cuh, cross_entropy.cuh: check_*_on_host). Where they
// are only on the device, the kernel cannot throw: it records the lowest bad position in
// a device flag (one unsigned long long, atomicMin), skips that element safely (no read
// or write outside the tensors), and the caller, after the launch, asks
// throw_if_bad_*(flag, ...), which waits for the stream, reads the flag and throws the
// CPU's message for that same position. A null flag pointer turns the recording off.
//
//   unsigned long long* flag = ...;          // device memory, one value
//   reset_bad_index(flag, stream);           // before the kernels that record into it
//   embedding_forward(table, ids, y, n, V, H, flag, stream);
//   throw_if_bad_ids(flag, ids, V, stream);  // synchronises `stream`

#include <cstdint>
#include <optional>

#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::cuda {

/// The flag's value while no bad index was recorded.
inline constexpr unsigned long long kNoBadIndex = ~0ull;

/// Sets the flag to kNoBadIndex (asynchronously, on `stream`).
inline void reset_bad_index(unsigned long long* flag, cudaStream_t stream = current_stream()) {
  check(cudaMemsetAsync(flag, 0xFF, sizeof(unsigned long long), stream), "cuda::reset_bad_index");
}

/// The lowest bad position recorded in `flag`, if any. Waits for `stream`.
inline std::optional<std::int64_t> read_bad_index(const unsigned long long* flag,
                                                  cudaStream_t stream = current_stream()) {
  unsigned long long position = kNoBadIndex;
  check(cudaMemcpyAsync(&position, flag, sizeof position, cudaMemcpyDeviceToHost, stream), "cuda::read_bad_index");
  check(cudaStreamSynchronize(stream), "cuda::read_bad_index (waiting for the kernels)");
  if (position == kNoBadIndex) return std::nullopt;
  return static_cast<std::int64_t>(position);
}

/// The value of device element `position` of `values`. Waits for `stream`.
template <class I>
I read_device_value(const I* values, std::int64_t position, cudaStream_t stream = current_stream()) {
  I v{};
  check(cudaMemcpyAsync(&v, values + position, sizeof(I), cudaMemcpyDeviceToHost, stream), "cuda::read_device_value");
  check(cudaStreamSynchronize(stream), "cuda::read_device_value");
  return v;
}

namespace detail {

/// Records `position` as bad in `flag` (if there is one); the lowest position wins.
__device__ __forceinline__ void record_bad_index(unsigned long long* flag, std::int64_t position) {
  if (flag) atomicMin(flag, static_cast<unsigned long long>(position));
}

}  // namespace detail

}  // namespace ctdl::cuda

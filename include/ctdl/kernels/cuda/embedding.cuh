#pragma once
// Embedding on a CUDA device: the device twin of ops::embedding.
//
//   embedding_forward:   y[n, :] = table[ids[n], :]             (a gather, bit-exact copies)
//   embedding_backward:  dtable[ids[n], :] += dy[n, :]           (a scatter-add; repeated
//                                                                 ids accumulate)
// Shape contract: table and dtable are rows x h (rows = V), ids holds n int32 or int64
// ids (any shape, flattened), y and dy are n x h; T is float, bf16 or fp16.
//
// Scatter-add: one thread per element of dy, atomicAdd into dtable. For float tables
// that is atomicAdd in float. For bf16/fp16 tables it is the 16-bit atomicAdd: each
// addition is computed in float and rounded to T, the CPU's rounding points (the CPU
// adds `row = T(float(row) + float(dy))` in position order); only the order in which
// repeated ids are added differs, so a row hit k times can differ from the CPU by the
// rounding of those k additions (a few ulps of T), and is not bitwise reproducible from
// run to run. Parameters are fp32 under every precision policy, so that is the case
// that matters for training, and there the order changes only the last float bits.
//
// Ids outside [0, rows): the CPU throws "embedding: id X at position n is outside the
// table's V rows". With host ids, call check_ids_on_host before copying them up (the
// same check and message). With device ids, pass a flag (index_check.cuh) to the
// forward: a bad id's output row is written with zeros and its lowest position is
// recorded; throw_if_bad_ids then throws the CPU's message. The backward skips bad ids.

#include <cstdint>
#include <string>
#include <type_traits>

#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/index_check.cuh"

namespace ctdl::cuda {

template <class T, class I>
void embedding_forward(const T* table, const I* ids, T* y, std::int64_t n, std::int64_t rows, std::int64_t h,
                       unsigned long long* bad_id = nullptr, cudaStream_t stream = current_stream());
template <class T, class I>
void embedding_backward(const T* dy, const I* ids, T* dtable, std::int64_t n, std::int64_t rows, std::int64_t h,
                        cudaStream_t stream = current_stream());

/// Throws the CPU's error for the first id (of n, on the host) outside [0, rows).
template <class I>
void check_ids_on_host(const I* ids, std::int64_t n, std::int64_t rows);
/// After embedding_forward with a flag: throws the CPU's error for the first bad id, if
/// one was recorded (reads the flag and that id from the device; waits for `stream`).
template <class I>
void throw_if_bad_ids(const unsigned long long* bad_id, const I* ids, std::int64_t rows,
                      cudaStream_t stream = current_stream());

// ============================================================================

namespace detail {

inline std::string embedding_id_error(std::int64_t id, std::int64_t position, std::int64_t rows) {
  return "embedding: id " + std::to_string(id) + " at position " + std::to_string(position) +
         " is outside the table's " + std::to_string(rows) + " rows";
}

template <class T, class I>
__global__ void embedding_forward_kernel(const T* table, const I* ids, T* y, std::int64_t n, std::int64_t rows,
                                         std::int64_t h, unsigned long long* bad_id) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * h) return;
  const std::int64_t position = i / h, j = i % h;
  const auto id = static_cast<std::int64_t>(ids[position]);
  using N = native_t<T>;
  if (id < 0 || id >= rows) {
    store(y, i, 0.0f);
    if (j == 0) record_bad_index(bad_id, position);
    return;
  }
  reinterpret_cast<N*>(y)[i] = reinterpret_cast<const N*>(table)[id * h + j];
}

template <class T>
__device__ __forceinline__ void atomic_add(T* p, const T* v) {
  if constexpr (std::is_same_v<T, float>) {
    atomicAdd(p, *v);
  } else {
    using N = native_t<T>;  // __nv_bfloat16 or __half: adds in float, rounds to T
    atomicAdd(reinterpret_cast<N*>(p), *reinterpret_cast<const N*>(v));
  }
}

template <class T, class I>
__global__ void embedding_backward_kernel(const T* dy, const I* ids, T* dtable, std::int64_t n, std::int64_t rows,
                                          std::int64_t h) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * h) return;
  const std::int64_t position = i / h, j = i % h;
  const auto id = static_cast<std::int64_t>(ids[position]);
  if (id < 0 || id >= rows) return;  // recorded by the forward
  atomic_add(dtable + id * h + j, dy + i);
}

}  // namespace detail

template <class T, class I>
void embedding_forward(const T* table, const I* ids, T* y, std::int64_t n, std::int64_t rows, std::int64_t h,
                       unsigned long long* bad_id, cudaStream_t stream) {
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  if (n < 0 || rows < 0 || h < 0) throw Error("cuda::embedding_forward: negative size");
  if (n * h == 0) return;
  detail::embedding_forward_kernel<<<blocks_for(n * h), kThreads, 0, stream>>>(table, ids, y, n, rows, h, bad_id);
  check_launch("cuda::embedding_forward");
}

template <class T, class I>
void embedding_backward(const T* dy, const I* ids, T* dtable, std::int64_t n, std::int64_t rows, std::int64_t h,
                        cudaStream_t stream) {
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  if (n < 0 || rows < 0 || h < 0) throw Error("cuda::embedding_backward: negative size");
  if (n * h == 0) return;
  detail::embedding_backward_kernel<<<blocks_for(n * h), kThreads, 0, stream>>>(dy, ids, dtable, n, rows, h);
  check_launch("cuda::embedding_backward");
}

template <class I>
void check_ids_on_host(const I* ids, std::int64_t n, std::int64_t rows) {
  for (std::int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows) throw Error(detail::embedding_id_error(ids[i], i, rows));
  }
}

template <class I>
void throw_if_bad_ids(const unsigned long long* bad_id, const I* ids, std::int64_t rows, cudaStream_t stream) {
  if (const auto position = read_bad_index(bad_id, stream)) {
    throw Error(detail::embedding_id_error(read_device_value(ids, *position, stream), *position, rows));
  }
}

}  // namespace ctdl::cuda

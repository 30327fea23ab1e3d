#pragma once
// Cross-entropy from logits on a CUDA device, averaged over the rows that count: the
// device twin of ops::cross_entropy.
//
//   loss = sum_n w_n (logsumexp(logits[n]) - logits[n, labels[n]]) / sum_n w_n
//   dlogits[n] += dloss * w_n / sum(w) * (softmax(logits[n]) - onehot(labels[n]))
// with w_n = 1, or mask[n] when a mask is given. Rows with w_n = 0 are ignored entirely
// (their label is not read); with no row counted the loss is 0.
//
// Shape contract: logits, probs and dlogits are n x c (c >= 1); labels are n int32;
// mask is n values of T or null; loss and dloss are one T each; T is float, bf16 or fp16.
//
// The CPU's rounding points are kept, so bf16 results match it: as ops::cross_entropy,
// the forward computes per row m = max(logits), e_j = T(exp(logits_j - m)) (ctdl::math::exp,
// the CPU's), s = T(sum_j e_j) (summed in float), probs_j = T(e_j / s), and
// loss_n = w_n (m + log s - logits[n, label]) in double. The forward keeps probs for the
// backward, as the CPU's tape entry does.
//
// Two kernels forward: one block per row (block max and sum), then one block adds the
// row losses and the weights in a fixed order (deterministic) and writes the loss and
// sum(w), which the backward reads from device memory (no host round trip). The
// backward is one thread per element and, like the CPU's, computes the update in double.
//
// Scratch: `row_losses` is n doubles of device memory (cross_entropy_workspace(n)).
// `total_weight` is one double of device memory written by the forward and read by the
// backward: keep it until then.
//
// Labels outside [0, c) in counted rows: the CPU throws "cross_entropy: label L of row n
// is outside [0, c)". With host labels (and mask), call check_labels_on_host before the
// launch. With device labels, pass a flag (index_check.cuh) to the forward: it records
// the lowest bad row (whose loss becomes NaN; nothing outside the tensors is read) and
// throw_if_bad_labels throws the CPU's message for it.

#include <cmath>
#include <cstdint>
#include <string>

#include "ctdl/core/math.hpp"
#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/index_check.cuh"
#include "ctdl/kernels/cuda/reduce.cuh"

namespace ctdl::cuda {

/// Doubles of device scratch cross_entropy_forward needs for n rows.
inline std::int64_t cross_entropy_workspace(std::int64_t n) { return n; }

template <class T>
void cross_entropy_forward(const T* logits, const std::int32_t* labels, const T* mask, T* probs, T* loss,
                           double* total_weight, double* row_losses, std::int64_t n, std::int64_t c,
                           unsigned long long* bad_label = nullptr, cudaStream_t stream = current_stream());
template <class T>
void cross_entropy_backward(const T* probs, const std::int32_t* labels, const T* mask, const double* total_weight,
                            const T* dloss, T* dlogits, std::int64_t n, std::int64_t c,
                            cudaStream_t stream = current_stream());

/// Throws the CPU's error for the first counted row (mask null or mask[row] != 0) whose
/// label (host memory) is outside [0, c).
template <class T>
void check_labels_on_host(const std::int32_t* labels, const T* mask, std::int64_t n, std::int64_t c);
/// After cross_entropy_forward with a flag: throws the CPU's error for the first bad
/// counted label, if one was recorded (waits for `stream`).
inline void throw_if_bad_labels(const unsigned long long* bad_label, const std::int32_t* labels, std::int64_t c,
                                cudaStream_t stream = current_stream());

// ============================================================================

namespace detail {

inline std::string cross_entropy_label_error(std::int64_t label, std::int64_t row, std::int64_t c) {
  return "cross_entropy: label " + std::to_string(label) + " of row " + std::to_string(row) + " is outside [0, " +
         std::to_string(c) + ")";
}

/// v rounded to T and back (the value a T store then load gives).
template <class T>
__device__ __forceinline__ float rounded(float v) {
  if constexpr (std::is_same_v<T, bf16>) return __bfloat162float(__float2bfloat16_rn(v));
  else if constexpr (std::is_same_v<T, fp16>) return __half2float(__float2half_rn(v));
  else return v;
}

template <class T>
__global__ void cross_entropy_rows_kernel(const T* logits, const std::int32_t* labels, const T* mask, T* probs,
                                          double* row_losses, std::int64_t c, unsigned long long* bad_label) {
  __shared__ float scratch[32];
  const std::int64_t row = blockIdx.x;
  const T* x = logits + row * c;
  T* p = probs + row * c;
  float m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, load(x, j));
  m = block_max(m, scratch);  // one of the T values: exact in T, as the CPU's Tensor<T> max
  float s = 0.0f;
  for (std::int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float e = rounded<T>(math::exp(load(x, j) - m));
    store(p, j, e);
    s += e;
  }
  s = rounded<T>(block_sum(s, scratch));
  // Each thread divides the elements it wrote itself: no barrier needed.
  for (std::int64_t j = threadIdx.x; j < c; j += blockDim.x) store(p, j, load(p, j) / s);
  if (threadIdx.x != 0) return;
  const float w = mask ? load(mask, row) : 1.0f;
  double row_loss = 0.0;
  if (w != 0.0f) {
    const std::int32_t label = labels[row];
    if (label < 0 || label >= c) {
      record_bad_index(bad_label, row);
      row_loss = NAN;
    } else {
      row_loss = static_cast<double>(w) *
                 (static_cast<double>(m) + ::log(static_cast<double>(s)) - static_cast<double>(load(x, label)));
    }
  }
  row_losses[row] = row_loss;
}

/// Sum over a block of kFinishThreads threads, in a fixed tree (deterministic).
inline constexpr int kFinishThreads = 256;
__device__ __forceinline__ double block_sum_fixed(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = kFinishThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  const double total = scratch[0];
  __syncthreads();  // scratch is reused by the caller's next sum
  return total;
}

template <class T>
__global__ void cross_entropy_finish_kernel(const T* mask, const double* row_losses, T* loss, double* total_weight,
                                            std::int64_t n) {
  __shared__ double scratch[kFinishThreads];
  double l = 0.0, w = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += kFinishThreads) {
    l += row_losses[i];
    w += mask ? static_cast<double>(load(mask, i)) : 1.0;
  }
  l = block_sum_fixed(l, scratch);
  w = block_sum_fixed(w, scratch);
  if (threadIdx.x == 0) {
    *total_weight = w;
    store(loss, 0, static_cast<float>(w > 0 ? l / w : 0.0));
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* probs, const std::int32_t* labels, const T* mask,
                                              const double* total_weight, const T* dloss, T* dlogits,
                                              std::int64_t n, std::int64_t c) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * c) return;
  const std::int64_t row = i / c, j = i % c;
  const double w = mask ? static_cast<double>(load(mask, row)) : 1.0;
  const double total = *total_weight;
  if (w == 0.0 || !(total > 0.0)) return;  // the CPU's weight w / total is 0 here: no update
  const double scale = static_cast<double>(load(dloss, 0)) * (w / total);
  const double g = static_cast<double>(load(probs, i)) - (j == labels[row] ? 1.0 : 0.0);
  store(dlogits, i, static_cast<float>(static_cast<double>(load(dlogits, i)) + scale * g));
}

}  // namespace detail

template <class T>
void cross_entropy_forward(const T* logits, const std::int32_t* labels, const T* mask, T* probs, T* loss,
                           double* total_weight, double* row_losses, std::int64_t n, std::int64_t c,
                           unsigned long long* bad_label, cudaStream_t stream) {
  if (n < 0 || c < 1) {
    throw Error("cuda::cross_entropy_forward: " + std::to_string(n) + " rows of " + std::to_string(c) +
                " classes (needs at least one class)");
  }
  if (n > 0) {
    detail::cross_entropy_rows_kernel<<<static_cast<unsigned>(n), detail::row_threads(c), 0, stream>>>(
        logits, labels, mask, probs, row_losses, c, bad_label);
    check_launch("cuda::cross_entropy_forward (rows)");
  }
  detail::cross_entropy_finish_kernel<<<1, detail::kFinishThreads, 0, stream>>>(mask, row_losses, loss, total_weight, n);
  check_launch("cuda::cross_entropy_forward (sum over rows)");
}

template <class T>
void cross_entropy_backward(const T* probs, const std::int32_t* labels, const T* mask, const double* total_weight,
                            const T* dloss, T* dlogits, std::int64_t n, std::int64_t c, cudaStream_t stream) {
  if (n < 0 || c < 1) {
    throw Error("cuda::cross_entropy_backward: " + std::to_string(n) + " rows of " + std::to_string(c) +
                " classes (needs at least one class)");
  }
  if (n == 0) return;
  detail::cross_entropy_backward_kernel<<<blocks_for(n * c), kThreads, 0, stream>>>(probs, labels, mask, total_weight,
                                                                                      dloss, dlogits, n, c);
  check_launch("cuda::cross_entropy_backward");
}

template <class T>
void check_labels_on_host(const std::int32_t* labels, const T* mask, std::int64_t n, std::int64_t c) {
  for (std::int64_t i = 0; i < n; ++i) {
    const bool counted = mask == nullptr || convert<double>(mask[i]) != 0.0;
    if (counted && (labels[i] < 0 || labels[i] >= c)) throw Error(detail::cross_entropy_label_error(labels[i], i, c));
  }
}

inline void throw_if_bad_labels(const unsigned long long* bad_label, const std::int32_t* labels, std::int64_t c,
                                cudaStream_t stream) {
  if (const auto row = read_bad_index(bad_label, stream)) {
    throw Error(detail::cross_entropy_label_error(read_device_value(labels, *row, stream), *row, c));
  }
}

}  // namespace ctdl::cuda

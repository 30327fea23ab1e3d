#pragma once
// Sums on a CUDA device: over the last axis (ops::sum / ops::mean with last_axis), over
// rows (column sums: the gradient of a broadcast bias, as expr::sum_to), over all
// elements (ops::sum / ops::mean; the sum of squares of the optimizers' norms).
//
// Shape contract: x is rows x cols (row-major) for the row and column sums, n elements
// for the full sums; T is float, bf16 or fp16. Sums accumulate in float (as the CPU's
// accumulate_t) and are rounded to T once, on store.
//
//   row_sums:            y[r]    = sum_j x[r, j]            (row_means: / cols)
//   row_sums_backward:   dx[r, j] += g[r]                   (row_means_backward: g[r] / cols)
//   add_column_sums:     out[j]  += sum_r x[r, j]           (accumulates, as sum_to does)
//   add_column_sums_of:  the same over any source of x[r, j] as float (cuda::sum_to
//                        feeds it an expression's elements over its leading axes)
//   sum_all:             out[0]  = sum_i x[i]               (mean_all: / n)
//   sum_all_backward:    dx[i]   += g[0]                    (mean_all_backward: g[0] / n)
//   sum_of_squares:      out[0]  = sum_i x[i]^2             (out is a float)
//
// Determinism: every sum is added in an order fixed by the sizes alone (never by which
// block finishes first), so the same input gives the same bits on every run, which
// exact resume needs (docs/architecture.md, "Sums in training are added in an order
// fixed by the sizes"). Row sums: one block per row, a fixed tree (block_sum). Column
// sums: fixed blocks of rows give partial sums, then a second pass adds the partials of
// each column in order. Full sums: a fixed number of blocks (from n) give partial sums,
// then one block adds them. The order differs from the CPU's, so results agree with it
// to float rounding, not bitwise.
//
// Scratch: add_column_sums needs column_sums_workspace(rows, cols) floats of device
// memory; sum_all, mean_all and sum_of_squares need full_sum_workspace(n) floats.

#include <algorithm>
#include <cstdint>

#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::cuda {

template <class T>
void row_sums(const T* x, T* y, std::int64_t rows, std::int64_t cols, cudaStream_t stream = current_stream());
template <class T>
void row_means(const T* x, T* y, std::int64_t rows, std::int64_t cols, cudaStream_t stream = current_stream());
template <class T>
void row_sums_backward(const T* g, T* dx, std::int64_t rows, std::int64_t cols,
                       cudaStream_t stream = current_stream());
template <class T>
void row_means_backward(const T* g, T* dx, std::int64_t rows, std::int64_t cols,
                        cudaStream_t stream = current_stream());

/// Floats of device scratch add_column_sums needs.
inline std::int64_t column_sums_workspace(std::int64_t rows, std::int64_t cols);
template <class T>
void add_column_sums(const T* x, T* out, std::int64_t rows, std::int64_t cols, float* workspace,
                     cudaStream_t stream = current_stream());
/// x: a copyable functor, `float x(r, col)` on the device.
template <class Elements, class T>
void add_column_sums_of(Elements x, T* out, std::int64_t rows, std::int64_t cols, float* workspace,
                        cudaStream_t stream = current_stream());

/// Floats of device scratch sum_all, mean_all and sum_of_squares need.
inline std::int64_t full_sum_workspace(std::int64_t n);
template <class T>
void sum_all(const T* x, T* out, std::int64_t n, float* workspace, cudaStream_t stream = current_stream());
template <class T>
void mean_all(const T* x, T* out, std::int64_t n, float* workspace, cudaStream_t stream = current_stream());
template <class T>
void sum_of_squares(const T* x, float* out, std::int64_t n, float* workspace, cudaStream_t stream = current_stream());
template <class T>
void sum_all_backward(const T* g, T* dx, std::int64_t n, cudaStream_t stream = current_stream());
template <class T>
void mean_all_backward(const T* g, T* dx, std::int64_t n, cudaStream_t stream = current_stream());

// ============================================================================

namespace detail {

/// Threads for a block that walks one row of c elements: whole warps (block_sum needs
/// them), at most 256.
inline int row_threads(std::int64_t c) {
  return c >= 256 ? 256 : static_cast<int>(std::max<std::int64_t>(1, (c + 31) / 32) * 32);
}

template <bool Mean, class T>
__global__ void row_sums_kernel(const T* x, T* y, std::int64_t cols) {
  __shared__ float scratch[32];
  const std::int64_t row = blockIdx.x;
  float s = 0.0f;
  for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += load(x + row * cols, j);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) store(y, row, Mean ? s / static_cast<float>(cols) : s);
}

template <bool Mean, class T>
__global__ void row_sums_backward_kernel(const T* g, T* dx, std::int64_t rows, std::int64_t cols) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  // The CPU's mean backward: g / n in float, then added to the gradient.
  const float gi = load(g, i / cols);
  store(dx, i, load(dx, i) + (Mean ? gi / static_cast<float>(cols) : gi));
}

/// Rows per block of the column sums: about 32, at most 256 blocks.
inline std::int64_t column_sum_parts(std::int64_t rows) { return std::clamp<std::int64_t>((rows + 31) / 32, 1, 256); }

/// Element (r, col) of a row-major matrix in memory, as float.
template <class T>
struct MatrixElements {
  const T* x;
  std::int64_t cols;
  __device__ float operator()(std::int64_t r, std::int64_t col) const { return load(x, r * cols + col); }
};

template <class Elements>
__global__ void column_partial_sums_kernel(Elements x, float* partial, std::int64_t rows, std::int64_t cols,
                                           std::int64_t rows_per_part) {
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t part = blockIdx.y;
  if (col >= cols) return;
  const std::int64_t first = part * rows_per_part, last = std::min(rows, first + rows_per_part);
  float s = 0.0f;
  for (std::int64_t r = first; r < last; ++r) s += x(r, col);  // neighbouring threads: neighbouring columns
  partial[part * cols + col] = s;
}

template <class T>
__global__ void column_sums_finish_kernel(const float* partial, T* out, std::int64_t parts, std::int64_t cols) {
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  float s = 0.0f;
  for (std::int64_t p = 0; p < parts; ++p) s += partial[p * cols + col];
  store(out, col, load(out, col) + s);  // sum_to: out = T(float(out) + sum), rounded once
}

/// Blocks of the first pass of the full sums: a grid-strided walk, at most 1024 blocks.
inline std::int64_t full_sum_parts(std::int64_t n) {
  return std::clamp<std::int64_t>((n + 4 * kThreads - 1) / (4 * kThreads), 1, 1024);
}

template <bool Square, class T>
__global__ void full_partial_sums_kernel(const T* x, float* partial, std::int64_t n) {
  __shared__ float scratch[32];
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  float s = 0.0f;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = load(x, i);
    s += Square ? v * v : v;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/// out[0] = (sum of the parts partials) / divisor, one block of kThreads.
template <class Out>
__global__ void full_sum_finish_kernel(const float* partial, Out* out, std::int64_t parts, float divisor) {
  __shared__ float scratch[32];
  float s = 0.0f;
  for (std::int64_t p = threadIdx.x; p < parts; p += blockDim.x) s += partial[p];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) store(out, 0, s / divisor);  // / 1 is exact
}

template <bool Mean, class T>
__global__ void full_sum_backward_kernel(const T* g, T* dx, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g0 = load(g, 0);
  store(dx, i, load(dx, i) + (Mean ? g0 / static_cast<float>(n) : g0));
}

template <bool Mean, class T>
void launch_row_sums(const T* x, T* y, std::int64_t rows, std::int64_t cols, cudaStream_t stream, const char* what) {
  if (rows < 0 || cols < 0) throw Error(std::string(what) + ": negative extents");
  if (rows == 0) return;
  row_sums_kernel<Mean><<<static_cast<unsigned>(rows), row_threads(cols), 0, stream>>>(x, y, cols);
  check_launch(what);
}

template <bool Mean, class T>
void launch_row_sums_backward(const T* g, T* dx, std::int64_t rows, std::int64_t cols, cudaStream_t stream,
                              const char* what) {
  if (rows < 0 || cols < 0) throw Error(std::string(what) + ": negative extents");
  if (rows * cols == 0) return;
  row_sums_backward_kernel<Mean><<<blocks_for(rows * cols), kThreads, 0, stream>>>(g, dx, rows, cols);
  check_launch(what);
}

template <bool Square, class T, class Out>
void launch_full_sum(const T* x, Out* out, std::int64_t n, float divisor, float* workspace, cudaStream_t stream,
                     const char* what) {
  if (n < 0) throw Error(std::string(what) + ": negative size");
  const std::int64_t parts = n > 0 ? full_sum_parts(n) : 0;
  if (parts > 0) {
    full_partial_sums_kernel<Square><<<static_cast<unsigned>(parts), kThreads, 0, stream>>>(x, workspace, n);
    check_launch(what);
  }
  full_sum_finish_kernel<<<1, kThreads, 0, stream>>>(workspace, out, parts, divisor);
  check_launch(what);
}

template <bool Mean, class T>
void launch_full_sum_backward(const T* g, T* dx, std::int64_t n, cudaStream_t stream, const char* what) {
  if (n < 0) throw Error(std::string(what) + ": negative size");
  if (n == 0) return;
  full_sum_backward_kernel<Mean><<<blocks_for(n), kThreads, 0, stream>>>(g, dx, n);
  check_launch(what);
}

}  // namespace detail

template <class T>
void row_sums(const T* x, T* y, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  detail::launch_row_sums<false>(x, y, rows, cols, stream, "cuda::row_sums");
}
template <class T>
void row_means(const T* x, T* y, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  detail::launch_row_sums<true>(x, y, rows, cols, stream, "cuda::row_means");
}
template <class T>
void row_sums_backward(const T* g, T* dx, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  detail::launch_row_sums_backward<false>(g, dx, rows, cols, stream, "cuda::row_sums_backward");
}
template <class T>
void row_means_backward(const T* g, T* dx, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  detail::launch_row_sums_backward<true>(g, dx, rows, cols, stream, "cuda::row_means_backward");
}

inline std::int64_t column_sums_workspace(std::int64_t rows, std::int64_t cols) {
  return detail::column_sum_parts(rows) * cols;
}

template <class T>
void add_column_sums(const T* x, T* out, std::int64_t rows, std::int64_t cols, float* workspace, cudaStream_t stream) {
  add_column_sums_of(detail::MatrixElements<T>{x, cols}, out, rows, cols, workspace, stream);
}

template <class Elements, class T>
void add_column_sums_of(Elements x, T* out, std::int64_t rows, std::int64_t cols, float* workspace,
                        cudaStream_t stream) {
  if (rows < 0 || cols < 0) throw Error("cuda::add_column_sums: negative extents");
  if (cols == 0) return;
  const std::int64_t parts = detail::column_sum_parts(rows);
  const std::int64_t rows_per_part = (rows + parts - 1) / parts;
  const dim3 grid(blocks_for(cols), static_cast<unsigned>(parts));
  detail::column_partial_sums_kernel<<<grid, kThreads, 0, stream>>>(x, workspace, rows, cols, rows_per_part);
  check_launch("cuda::add_column_sums (partial sums)");
  detail::column_sums_finish_kernel<<<blocks_for(cols), kThreads, 0, stream>>>(workspace, out, parts, cols);
  check_launch("cuda::add_column_sums (ordered second pass)");
}

inline std::int64_t full_sum_workspace(std::int64_t n) { return detail::full_sum_parts(n); }

template <class T>
void sum_all(const T* x, T* out, std::int64_t n, float* workspace, cudaStream_t stream) {
  detail::launch_full_sum<false>(x, out, n, 1.0f, workspace, stream, "cuda::sum_all");
}
template <class T>
void mean_all(const T* x, T* out, std::int64_t n, float* workspace, cudaStream_t stream) {
  if (n == 0) throw Error("cuda::mean_all: the mean of no elements");
  detail::launch_full_sum<false>(x, out, n, static_cast<float>(n), workspace, stream, "cuda::mean_all");
}
template <class T>
void sum_of_squares(const T* x, float* out, std::int64_t n, float* workspace, cudaStream_t stream) {
  detail::launch_full_sum<true>(x, out, n, 1.0f, workspace, stream, "cuda::sum_of_squares");
}
template <class T>
void sum_all_backward(const T* g, T* dx, std::int64_t n, cudaStream_t stream) {
  detail::launch_full_sum_backward<false>(g, dx, n, stream, "cuda::sum_all_backward");
}
template <class T>
void mean_all_backward(const T* g, T* dx, std::int64_t n, cudaStream_t stream) {
  detail::launch_full_sum_backward<true>(g, dx, n, stream, "cuda::mean_all_backward");
}

}  // namespace ctdl::cuda

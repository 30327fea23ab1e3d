#pragma once
// LayerNorm over the last axis on a CUDA device: the kernels of ops/layer_norm.hpp.
//
// x and y are `rows` rows of `width` contiguous elements; gamma and beta hold `width`.
//   mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)       (row-wise)
//   xhat = (x - mu) * rstd,  y = xhat * gamma + beta
// Backward, with g = dy * gamma:
//   dx     += rstd * (g - mean(g) - xhat * mean(g * xhat))                  (row-wise)
//   dgamma += sum over rows of dy * xhat,   dbeta += sum over rows of dy
//
// mean and rstd (one per row, in T as the CPU op keeps them) are written by forward and
// read by backward. Rounding points are the CPU op's: mu, var, rstd, mean(g) and
// mean(g * xhat) are rounded to T (the CPU stores each in a Tensor<T>); sums accumulate
// in float; each output is stored once. g = dy * gamma is rounded before mean(g) is
// subtracted (__fmul_rn: no fused multiply-add), so a row whose g equals its mean, as
// every row of width 1, gets exactly nothing: rstd (1/sqrt(eps) for a constant row)
// would otherwise multiply the product's rounding error into the gradient.
//
// dgamma and dbeta are sums over rows, made deterministic: the rows are cut into
// param_grad_blocks(rows) fixed blocks (ops' kLayerNormRowBlocks), one thread per
// (block, column) sums its block's rows in order into a float workspace, and a second
// kernel adds the blocks in order and adds the total to the gradient, rounding once.
// The workspace is caller-provided device memory of layer_norm_backward_workspace(rows,
// width) floats.
//
// One block per row (a grid-stride loop over rows), block reductions in float; any width.

#include <cstdint>
#include <string>

#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/rows.cuh"

namespace ctdl::cuda {

/// Gradients a LayerNorm backward accumulates into; null for those not wanted.
template <class T>
struct LayerNormGrads {
  T* x = nullptr;
  T* gamma = nullptr;
  T* beta = nullptr;
};

/// y = LayerNorm(x) * gamma + beta; mean and rstd (rows each, in T) receive the row
/// statistics for backward (both null: not kept). eps as the op's (BERT: 1e-12).
template <class T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd, std::int64_t rows,
                        std::int64_t width, double eps, cudaStream_t stream = current_stream());

/// Floats of workspace layer_norm_backward needs.
inline std::int64_t layer_norm_backward_workspace(std::int64_t rows, std::int64_t width);

/// Accumulates into grads (see LayerNormGrads) from dy and the forward's x, mean, rstd.
template <class T>
void layer_norm_backward(const T* x, const T* gamma, const T* mean, const T* rstd, const T* dy, LayerNormGrads<T> grads,
                         float* workspace, std::int64_t rows, std::int64_t width,
                         cudaStream_t stream = current_stream());

// ============================================================================

namespace norm_detail {

/// The fixed row blocks parameter gradients are summed over (as the CPU's
/// kLayerNormRowBlocks): block b holds rows [b * rows / blocks, (b + 1) * rows / blocks).
inline constexpr std::int64_t kParamGradRowBlocks = 64;
inline std::int64_t param_grad_blocks(std::int64_t rows) {
  return rows < 1 ? 1 : (rows < kParamGradRowBlocks ? rows : kParamGradRowBlocks);
}

/// Per-(row block, column) partial sums of Sums terms: terms(r, j, acc) adds row r's
/// terms for column j to acc[0 .. Sums). partial[(block * Sums + k) * width + j].
/// Grid: x covers the columns, y the row blocks.
template <int Sums, class Terms>
__global__ void column_partials_kernel(Terms terms, std::int64_t rows, std::int64_t width, std::int64_t blocks,
                                       float* partial) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t b = blockIdx.y;
  if (j >= width) return;
  float acc[Sums];
  for (int k = 0; k < Sums; ++k) acc[k] = 0.0f;
  for (std::int64_t r = b * rows / blocks; r < (b + 1) * rows / blocks; ++r) terms(r, j, acc);
  for (int k = 0; k < Sums; ++k) partial[(b * Sums + k) * width + j] = acc[k];
}

/// grad[j] += sum over blocks (in order) of partial term `which`, rounded once.
template <class T>
__global__ void add_column_totals_kernel(const float* partial, int sums, int which, std::int64_t blocks,
                                         std::int64_t width, T* grad) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= width) return;
  float total = 0.0f;
  for (std::int64_t b = 0; b < blocks; ++b) total += partial[(b * sums + which) * width + j];
  store(grad, j, load(grad, j) + total);
}

/// Runs column_partials_kernel then adds term k into grads[k] (null: skipped).
template <int Sums, class Terms, class T>
void sum_columns(const char* op, Terms terms, std::int64_t rows, std::int64_t width, float* workspace,
                 T* const (&grads)[Sums], cudaStream_t stream) {
  bool any = false;
  for (T* g : grads) any = any || g != nullptr;
  if (!any || rows == 0) return;
  if (!workspace) throw Error(std::string(op) + ": the workspace pointer is null");
  const std::int64_t blocks = param_grad_blocks(rows);
  const dim3 grid(blocks_for(width), static_cast<unsigned>(blocks));
  column_partials_kernel<Sums><<<grid, kThreads, 0, stream>>>(terms, rows, width, blocks, workspace);
  check_launch("column_partials_kernel");
  for (int k = 0; k < Sums; ++k) {
    if (!grads[k]) continue;
    add_column_totals_kernel<<<blocks_for(width), kThreads, 0, stream>>>(workspace, Sums, k, blocks, width, grads[k]);
    check_launch("add_column_totals_kernel");
  }
}

inline void check_width(const char* op, std::int64_t rows, std::int64_t width) {
  if (rows < 0 || width < 1) {
    throw Error(std::string(op) + ": " + std::to_string(rows) + " rows of width " + std::to_string(width) +
                ": LayerNorm needs a width of at least 1");
  }
}

template <class T>
__global__ __launch_bounds__(kMaxRowThreads) void layer_norm_forward_kernel(const T* x, const T* gamma, const T* beta,
                                                                            T* y, T* mean, T* rstd, std::int64_t rows,
                                                                            std::int64_t width, float eps) {
  __shared__ float scratch[32];
  const float w = static_cast<float>(width);
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * width;
    T* yr = y + r * width;
    float sum = 0.0f;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) sum += load(xr, j);
    const float mu = round_to<T>(block_sum(sum, scratch) / w);
    float sq = 0.0f;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float d = load(xr, j) - mu;
      sq += d * d;
    }
    const float var = round_to<T>(block_sum(sq, scratch) / w);
    const float rs = round_to<T>(1.0f / sqrtf(var + eps));
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      store(yr, j, (load(xr, j) - mu) * rs * load(gamma, j) + load(beta, j));
    }
    if (threadIdx.x == 0 && mean) {
      store(mean, r, mu);
      store(rstd, r, rs);
    }
  }
}

template <class T>
__global__ __launch_bounds__(kMaxRowThreads) void layer_norm_backward_dx_kernel(const T* x, const T* gamma,
                                                                                const T* mean, const T* rstd,
                                                                                const T* dy, T* dx, std::int64_t rows,
                                                                                std::int64_t width) {
  __shared__ float scratch[32];
  const float w = static_cast<float>(width);
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * width, *dyr = dy + r * width;
    T* dxr = dx + r * width;
    const float mu = load(mean, r), rs = load(rstd, r);
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float g = __fmul_rn(load(dyr, j), load(gamma, j)), xhat = (load(xr, j) - mu) * rs;
      sum_g += g;
      sum_gx += g * xhat;
    }
    const float mean_g = round_to<T>(block_sum(sum_g, scratch) / w);  // CPU: Tensor<T>
    const float mean_gx = round_to<T>(block_sum(sum_gx, scratch) / w);
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float g = __fmul_rn(load(dyr, j), load(gamma, j)), xhat = (load(xr, j) - mu) * rs;
      store(dxr, j, load(dxr, j) + rs * (g - mean_g - xhat * mean_gx));
    }
  }
}

/// dgamma and dbeta terms of the plain LayerNorm: dy * xhat and dy.
template <class T>
struct LayerNormParamTerms {
  const T *x, *mean, *rstd, *dy;
  std::int64_t width;
  __device__ void operator()(std::int64_t r, std::int64_t j, float* acc) const {
    const std::int64_t i = r * width + j;
    const float d = load(dy, i);
    acc[0] += d * ((load(x, i) - load(mean, r)) * load(rstd, r));
    acc[1] += d;
  }
};

}  // namespace norm_detail

inline std::int64_t layer_norm_backward_workspace(std::int64_t rows, std::int64_t width) {
  return 2 * norm_detail::param_grad_blocks(rows) * width;
}

template <class T>
void layer_norm_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* rstd, std::int64_t rows,
                        std::int64_t width, double eps, cudaStream_t stream) {
  norm_detail::check_width("layer_norm_forward", rows, width);
  if ((mean == nullptr) != (rstd == nullptr)) throw Error("layer_norm_forward: keep both mean and rstd, or neither");
  if (rows == 0) return;
  // eps as the CPU adds it: a scalar in T's compute type (float).
  norm_detail::layer_norm_forward_kernel<T>
      <<<norm_detail::row_blocks(rows), norm_detail::row_threads(width), 0, stream>>>(
          x, gamma, beta, y, mean, rstd, rows, width, static_cast<float>(eps));
  check_launch("layer_norm_forward_kernel");
}

template <class T>
void layer_norm_backward(const T* x, const T* gamma, const T* mean, const T* rstd, const T* dy, LayerNormGrads<T> grads,
                         float* workspace, std::int64_t rows, std::int64_t width, cudaStream_t stream) {
  norm_detail::check_width("layer_norm_backward", rows, width);
  if (rows == 0) return;
  if (grads.x) {
    norm_detail::layer_norm_backward_dx_kernel<T>
        <<<norm_detail::row_blocks(rows), norm_detail::row_threads(width), 0, stream>>>(x, gamma, mean, rstd, dy,
                                                                                        grads.x, rows, width);
    check_launch("layer_norm_backward_dx_kernel");
  }
  T* const params[2] = {grads.gamma, grads.beta};
  norm_detail::sum_columns<2>("layer_norm_backward", norm_detail::LayerNormParamTerms<T>{x, mean, rstd, dy, width},
                              rows, width, workspace, params, stream);
}

}  // namespace ctdl::cuda

#pragma once
// LayerNorm fused with what comes before it in BERT, on a CUDA device: the kernels of
// ops/fused_layer_norm.hpp.
//
//   add_layer_norm:        s = dropout(h + bias) + residual,  y = LayerNorm(s)
//   embedding_layer_norm:  s = table_0[ids_0] + ... + table_{N-1}[ids_{N-1}],  y = LayerNorm(s)
//
// h, residual, y, s: `rows` rows of `width`; bias, gamma, beta: `width`; tables: rows of
// `width`; ids: `rows` ids per lookup (int32 or int64), all pointers device memory.
// With mu, rstd the row statistics of s, xhat = (s - mu) * rstd, g = dy * gamma:
//   y  = xhat * gamma + beta
//   ds = rstd * (g - mean(g) - xhat * mean(g * xhat))                      (row-wise)
//   dgamma += sum over rows of dy * xhat,   dbeta += sum over rows of dy
//   add_layer_norm:        dresidual += ds,  dh += ds * keep / (1 - p),  dbias += sum over rows of that
//   embedding_layer_norm:  table_i.grad[ids_i[n]] += ds[n]                 (a scatter-add)
//
// As on the CPU: s is built in float and its statistics computed from the float values
// (mean, then the centred sum of squares); backward gets s rounded to T (`saved.s`) and
// mu, rstd in float; ds, mean(g) and mean(g * xhat) stay float; gradients are rounded
// once when stored. keep is the mask ops::dropout draws from the same stream: element
// r * width + j (ops::DropoutMask), so forward and backward regenerate the same mask.
//
// Parameter gradients (dgamma, dbeta, dbias) are summed deterministically over fixed
// row blocks (see layer_norm.cuh). Table gradients:
//   float tables: atomicAdd of ds (the order of the adds varies, the float sum's last
//     bits with it: within 1e-5 of the CPU's ordered sum);
//   bf16/fp16 tables: the CPU rounds the table row to T after every add, in row order;
//     so does the GPU: ds goes to the workspace, then one thread per (lookup, column)
//     walks the rows in order, rounding after each add. The same rounding points, so
//     the same result up to the float noise of ds — but serial over rows (the speed issue
//     may trade this for a float accumulation, which would be more accurate than the CPU).
//
// Ids out of range: the CPU throws before computing, naming the lookup and position. On
// the GPU, check_ids() does that on the host for ids held on the host; for ids already on
// the device, forward compares every id with its table's rows and, for a bad one, writes
// NaN to the row's outputs (it reads no table memory out of bounds) and records the
// first bad (lookup, position) in the caller's flag; backward writes no table row for a
// bad id (the row's NaN still reaches dgamma and dbeta). The caller
// sets the flag with reset_id_error() before and checks it with throw_if_id_error()
// after, which throws the CPU's message.
//
// One block per row; the row of s is held in float in dynamic shared memory, so width
// is at most kMaxFusedWidth (8192: 32 KiB, within the 48 KiB a block gets without opting in).

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>

#include "ctdl/core/philox.hpp"
#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/layer_norm.cuh"
#include "ctdl/ops/dropout_mask.hpp"

namespace ctdl::cuda {

/// The widest row the fused kernels take: the row of s lives in shared memory (32 KiB
/// at most, beside the reduction scratch, within the 48 KiB no launch must opt into).
inline constexpr std::int64_t kMaxFusedWidth = 8192;

/// What forward keeps for backward: s (rows x width, in T), mean and rstd (rows, float).
/// All null: not kept (inference); otherwise all three are needed.
template <class T>
struct SavedLayerNorm {
  T* s = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
};
template <class T>
struct SavedLayerNormView {
  const T* s = nullptr;
  const float* mean = nullptr;
  const float* rstd = nullptr;
};

/// Gradients add_layer_norm_backward accumulates into; null for those not wanted.
template <class T>
struct AddLayerNormGrads {
  T* h = nullptr;
  T* bias = nullptr;
  T* residual = nullptr;
  T* gamma = nullptr;
  T* beta = nullptr;
};

/// y = LayerNorm(dropout(h + bias) + residual) * gamma + beta. `dropout`: the op's
/// probability and stream (p = 0: none); p must be in [0, 1).
template <class T>
void add_layer_norm_forward(const T* h, const T* bias, const T* residual, const T* gamma, const T* beta, T* y,
                            SavedLayerNorm<T> saved, std::int64_t rows, std::int64_t width,
                            const ops::DropoutMask& dropout, double eps, cudaStream_t stream = current_stream());

/// Floats of workspace add_layer_norm_backward needs.
inline std::int64_t add_layer_norm_backward_workspace(std::int64_t rows, std::int64_t width);

/// Accumulates into grads from dy and what forward saved; `dropout` as in forward.
template <class T>
void add_layer_norm_backward(SavedLayerNormView<T> saved, const T* gamma, const T* dy, AddLayerNormGrads<T> grads,
                             float* workspace, std::int64_t rows, std::int64_t width, const ops::DropoutMask& dropout,
                             cudaStream_t stream = current_stream());

/// The N lookups of embedding_layer_norm: table i (table_rows[i] x width) read at ids[i].
template <class T, class I, std::size_t N>
struct EmbeddingLookups {
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  const T* tables[N];
  std::int64_t table_rows[N];
  const I* ids[N];
};

/// Gradients embedding_layer_norm_backward accumulates into; null for those not wanted.
template <class T, std::size_t N>
struct EmbeddingLayerNormGrads {
  std::array<T*, N> tables{};
  T* gamma = nullptr;
  T* beta = nullptr;
};

/// The first bad id a kernel found: key lookup * rows + position (the CPU's check
/// order), kNoIdError if none. Device memory, one value.
using IdErrorFlag = unsigned long long;
inline constexpr IdErrorFlag kNoIdError = ~0ull;

/// y = LayerNorm(sum of the lookups) * gamma + beta. `id_error`: device flag (see the
/// header comment; null: bad ids only give NaN rows).
template <class T, class I, std::size_t N>
void embedding_layer_norm_forward(const EmbeddingLookups<T, I, N>& lookups, const T* gamma, const T* beta, T* y,
                                  SavedLayerNorm<T> saved, std::int64_t rows, std::int64_t width, double eps,
                                  IdErrorFlag* id_error, cudaStream_t stream = current_stream());

/// Floats of workspace embedding_layer_norm_backward<T> needs.
template <class T>
std::int64_t embedding_layer_norm_backward_workspace(std::int64_t rows, std::int64_t width);

/// Accumulates into grads from dy and what forward saved.
template <class T, class I, std::size_t N>
void embedding_layer_norm_backward(const EmbeddingLookups<T, I, N>& lookups, SavedLayerNormView<T> saved,
                                   const T* gamma, const T* dy, EmbeddingLayerNormGrads<T, N> grads, float* workspace,
                                   std::int64_t rows, std::int64_t width, cudaStream_t stream = current_stream());

/// Host ids: throws the CPU op's ctdl::Error for the first id outside [0, table_rows).
template <class I>
void check_ids(const I* host_ids, std::int64_t rows, std::int64_t table_rows, std::size_t lookup);

/// Sets a device flag to kNoIdError (asynchronously, on `stream`).
inline void reset_id_error(IdErrorFlag* id_error, cudaStream_t stream = current_stream());

/// Waits for `stream`, reads the flag, and throws the CPU op's ctdl::Error naming the
/// first bad id (read back from the device) if a kernel recorded one.
template <class T, class I, std::size_t N>
void throw_if_id_error(const IdErrorFlag* id_error, const EmbeddingLookups<T, I, N>& lookups, std::int64_t rows,
                       cudaStream_t stream = current_stream());

// ============================================================================

namespace norm_detail {

/// LayerNorm of rows built by `source` (source.row_ok(r), source(r, j) -> float), as the
/// CPU's SavedLayerNorm::forward: statistics in float from the float row, kept in float.
/// A row that is not ok (a bad id) becomes NaN.
template <class T, class Source>
__global__ __launch_bounds__(kMaxRowThreads) void fused_forward_kernel(Source source, const T* gamma, const T* beta,
                                                                       T* y, SavedLayerNorm<T> saved, std::int64_t rows,
                                                                       std::int64_t width, float eps) {
  extern __shared__ float row[];  // width floats: the row of s
  __shared__ float scratch[32];
  const float w = static_cast<float>(width);
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* yr = y + r * width;
    if (!source.row_ok(r)) {  // the same for every thread of the block: no reduction skipped unevenly
      for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
        store(yr, j, NAN);
        if (saved.s) store(saved.s + r * width, j, NAN);
      }
      if (threadIdx.x == 0 && saved.mean) saved.mean[r] = saved.rstd[r] = NAN;
      continue;
    }
    // Each thread only ever touches its own columns of `row`: no barrier between passes.
    float sum = 0.0f;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float v = source(r, j);
      row[j] = v;
      sum += v;
      if (saved.s) store(saved.s + r * width, j, v);
    }
    const float mu = block_sum(sum, scratch) / w;
    float sq = 0.0f;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float d = row[j] - mu;
      row[j] = d;
      sq += d * d;
    }
    const float rs = 1.0f / sqrtf(block_sum(sq, scratch) / w + eps);
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      store(yr, j, row[j] * rs * load(gamma, j) + load(beta, j));
    }
    if (threadIdx.x == 0 && saved.mean) {
      saved.mean[r] = mu;
      saved.rstd[r] = rs;
    }
  }
}

/// dropout(h + bias) + residual, element (r, j).
template <class T>
struct AddSource {
  const T *h, *bias, *residual;
  std::int64_t width;
  ops::DropoutMask mask;
  float keep_scale;
  __device__ bool row_ok(std::int64_t) const { return true; }
  __device__ float operator()(std::int64_t r, std::int64_t j) const {
    const std::int64_t i = r * width + j;
    float v = load(h, i) + load(bias, j);
    if (mask.p > 0.0f) v = mask.keep(static_cast<std::uint64_t>(i)) ? v * keep_scale : 0.0f;
    return v + load(residual, i);
  }
};

/// Whether id is a row of a table of `rows` rows.
template <class I>
__host__ __device__ bool id_in_range(I id, std::int64_t rows) {
  return id >= 0 && static_cast<std::int64_t>(id) < rows;
}

/// The sum of the N looked-up rows, element (r, j); a row with a bad id is not ok.
template <class T, class I, std::size_t N>
struct LookupSource {
  EmbeddingLookups<T, I, N> lookups;
  std::int64_t rows, width;
  IdErrorFlag* id_error;
  __device__ bool row_ok(std::int64_t r) const {
    bool ok = true;
    for (std::size_t i = 0; i < N; ++i) {
      if (!id_in_range(lookups.ids[i][r], lookups.table_rows[i])) {
        ok = false;
        if (id_error && threadIdx.x == 0) atomicMin(id_error, static_cast<IdErrorFlag>(i * rows + r));
      }
    }
    return ok;
  }
  __device__ float operator()(std::int64_t r, std::int64_t j) const {
    float v = 0.0f;  // the CPU starts from 0 and adds the lookups in order
    for (std::size_t i = 0; i < N; ++i)
      v += load(lookups.tables[i], static_cast<std::int64_t>(lookups.ids[i][r]) * width + j);
    return v;
  }
};

/// The LayerNorm backward of each row, as the CPU's layer_norm_row_backward: ds of
/// element (r, j) goes to sink(r, j, ds); mean(g) and mean(g * xhat) of row r go to
/// row_stats[2r], [2r + 1] when row_stats is not null. NaN statistics (a row with a bad
/// id, an fp16 overflow) are not skipped: their NaN reaches the gradients, as on the CPU.
template <class T, class Sink>
__global__ __launch_bounds__(kMaxRowThreads) void fused_backward_kernel(SavedLayerNormView<T> saved, const T* gamma,
                                                                        const T* dy, Sink sink, float* row_stats,
                                                                        std::int64_t rows, std::int64_t width) {
  __shared__ float scratch[32];
  const float w = static_cast<float>(width);
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float mu = saved.mean[r], rs = saved.rstd[r];
    const T *sr = saved.s + r * width, *dyr = dy + r * width;
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float g = __fmul_rn(load(dyr, j), load(gamma, j)), xhat = (load(sr, j) - mu) * rs;
      sum_g += g;
      sum_gx += g * xhat;
    }
    const float mean_g = block_sum(sum_g, scratch) / w;
    const float mean_gx = block_sum(sum_gx, scratch) / w;
    if (row_stats && threadIdx.x == 0) {
      row_stats[2 * r] = mean_g;
      row_stats[2 * r + 1] = mean_gx;
    }
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float g = __fmul_rn(load(dyr, j), load(gamma, j)), xhat = (load(sr, j) - mu) * rs;
      sink(r, j, rs * (g - mean_g - xhat * mean_gx));
    }
  }
}

/// add_layer_norm's ds: dresidual += ds, then dh += ds * keep / (1 - p).
template <class T>
struct AddSink {
  T *dh, *dresidual;
  std::int64_t width;
  ops::DropoutMask mask;
  float keep_scale;
  __device__ void operator()(std::int64_t r, std::int64_t j, float ds) const {
    const std::int64_t i = r * width + j;
    if (dresidual) store(dresidual, i, load(dresidual, i) + ds);
    if (mask.p > 0.0f) ds = mask.keep(static_cast<std::uint64_t>(i)) ? ds * keep_scale : 0.0f;
    if (dh) store(dh, i, load(dh, i) + ds);
  }
};

/// dgamma, dbeta and dbias terms of add_layer_norm: dy * xhat, dy, and ds after the
/// dropout (recomputed from the row's mean(g) and mean(g * xhat) in row_stats).
template <class T>
struct AddParamTerms {
  SavedLayerNormView<T> saved;
  const T *gamma, *dy;
  const float* row_stats;
  std::int64_t width;
  ops::DropoutMask mask;
  float keep_scale;
  __device__ void operator()(std::int64_t r, std::int64_t j, float* acc) const {
    const std::int64_t i = r * width + j;
    const float rs = saved.rstd[r];
    const float d = load(dy, i), xhat = (load(saved.s, i) - saved.mean[r]) * rs;
    acc[0] += d * xhat;
    acc[1] += d;
    if (!row_stats) return;  // no dbias wanted
    float ds = rs * (__fmul_rn(d, load(gamma, j)) - row_stats[2 * r] - xhat * row_stats[2 * r + 1]);
    if (mask.p > 0.0f) ds = mask.keep(static_cast<std::uint64_t>(i)) ? ds * keep_scale : 0.0f;
    acc[2] += ds;
  }
};

/// dgamma and dbeta terms of embedding_layer_norm: dy * xhat and dy.
template <class T>
struct FusedParamTerms {
  SavedLayerNormView<T> saved;
  const T* dy;
  std::int64_t width;
  __device__ void operator()(std::int64_t r, std::int64_t j, float* acc) const {
    const std::int64_t i = r * width + j;
    const float d = load(dy, i);
    acc[0] += d * ((load(saved.s, i) - saved.mean[r]) * saved.rstd[r]);
    acc[1] += d;
  }
};

/// embedding_layer_norm's ds for float tables: added to each looked-up row atomically
/// (bad ids skipped: nothing is written out of bounds).
template <class T, class I, std::size_t N>
struct AtomicScatterSink {
  EmbeddingLookups<T, I, N> lookups;
  std::array<T*, N> grads;
  std::int64_t width;
  __device__ void operator()(std::int64_t r, std::int64_t j, float ds) const {
    for (std::size_t i = 0; i < N; ++i) {
      const I id = lookups.ids[i][r];
      if (grads[i] && id_in_range(id, lookups.table_rows[i])) {
        atomicAdd(grads[i] + static_cast<std::int64_t>(id) * width + j, ds);
      }
    }
  }
};

/// embedding_layer_norm's ds for half tables: kept in the workspace for the ordered scatter.
struct StoreSink {
  float* ds;
  std::int64_t width;
  __device__ void operator()(std::int64_t r, std::int64_t j, float v) const { ds[r * width + j] = v; }
};

/// Half tables: thread (lookup i, column j) adds ds[r][j] to table row ids_i[r] for
/// r = 0, 1, ... in order, rounding to T after each add, as the CPU's scatter does.
template <class T, class I, std::size_t N>
__global__ void ordered_scatter_kernel(EmbeddingLookups<T, I, N> lookups, std::array<T*, N> grads, const float* ds,
                                       std::int64_t rows, std::int64_t width) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::size_t i = blockIdx.y;
  if (j >= width || i >= N || !grads[i]) return;
  for (std::int64_t r = 0; r < rows; ++r) {
    const I id = lookups.ids[i][r];
    if (!id_in_range(id, lookups.table_rows[i])) continue;
    const std::int64_t at = static_cast<std::int64_t>(id) * width + j;
    store(grads[i], at, load(grads[i], at) + ds[r * width + j]);
  }
}

inline void check_fused(const char* op, std::int64_t rows, std::int64_t width) {
  check_width(op, rows, width);
  if (width > kMaxFusedWidth) {
    throw Error(std::string(op) + ": width " + std::to_string(width) + " exceeds " + std::to_string(kMaxFusedWidth) +
                " (the kernel holds a row of floats in shared memory)");
  }
}

inline void check_saved(const char* op, const void* s, const float* mean, const float* rstd, bool required) {
  const bool all = s && mean && rstd, none = !s && !mean && !rstd;
  if (required ? !all : !(all || none)) {
    throw Error(std::string(op) + (required ? ": backward needs s, mean and rstd from forward"
                                            : ": keep all of s, mean and rstd for backward, or none"));
  }
}

inline float keep_scale_of(const char* op, const ops::DropoutMask& mask) {
  if (!(mask.p >= 0.0f && mask.p < 1.0f)) {
    throw Error(std::string(op) + ": dropout probability " + std::to_string(mask.p) + " is not in [0, 1)");
  }
  return 1.0f / (1.0f - mask.p);  // the CPU's C(1) / (C(1) - p), in float
}

template <class T, class Source>
void launch_fused_forward(const char* kernel, const Source& source, const T* gamma, const T* beta, T* y,
                          SavedLayerNorm<T> saved, std::int64_t rows, std::int64_t width, double eps,
                          cudaStream_t stream) {
  fused_forward_kernel<T>
      <<<row_blocks(rows), row_threads(width), static_cast<std::size_t>(width) * sizeof(float), stream>>>(
          source, gamma, beta, y, saved, rows, width, static_cast<float>(eps));
  check_launch(kernel);
}

}  // namespace norm_detail

inline std::int64_t add_layer_norm_backward_workspace(std::int64_t rows, std::int64_t width) {
  return 2 * rows + 3 * norm_detail::param_grad_blocks(rows) * width;
}

template <class T>
std::int64_t embedding_layer_norm_backward_workspace(std::int64_t rows, std::int64_t width) {
  const std::int64_t params = 2 * norm_detail::param_grad_blocks(rows) * width;
  return std::is_same_v<T, float> ? params : params + rows * width;
}

template <class T>
void add_layer_norm_forward(const T* h, const T* bias, const T* residual, const T* gamma, const T* beta, T* y,
                            SavedLayerNorm<T> saved, std::int64_t rows, std::int64_t width,
                            const ops::DropoutMask& dropout, double eps, cudaStream_t stream) {
  norm_detail::check_fused("add_layer_norm_forward", rows, width);
  norm_detail::check_saved("add_layer_norm_forward", saved.s, saved.mean, saved.rstd, false);
  const float keep_scale = norm_detail::keep_scale_of("add_layer_norm_forward", dropout);
  if (rows == 0) return;
  norm_detail::launch_fused_forward("fused_forward_kernel (add_layer_norm)",
                                    norm_detail::AddSource<T>{h, bias, residual, width, dropout, keep_scale}, gamma,
                                    beta, y, saved, rows, width, eps, stream);
}

template <class T>
void add_layer_norm_backward(SavedLayerNormView<T> saved, const T* gamma, const T* dy, AddLayerNormGrads<T> grads,
                             float* workspace, std::int64_t rows, std::int64_t width, const ops::DropoutMask& dropout,
                             cudaStream_t stream) {
  norm_detail::check_fused("add_layer_norm_backward", rows, width);
  norm_detail::check_saved("add_layer_norm_backward", saved.s, saved.mean, saved.rstd, true);
  const float keep_scale = norm_detail::keep_scale_of("add_layer_norm_backward", dropout);
  if (rows == 0) return;
  const bool params = grads.gamma || grads.beta || grads.bias;
  if (params && !workspace) throw Error("add_layer_norm_backward: the workspace pointer is null");
  // Workspace: mean(g), mean(g * xhat) per row (2 * rows), then the column partials.
  float* row_stats = grads.bias ? workspace : nullptr;
  if (grads.h || grads.residual || grads.bias) {
    norm_detail::fused_backward_kernel<T>
        <<<norm_detail::row_blocks(rows), norm_detail::row_threads(width), 0, stream>>>(
            saved, gamma, dy, norm_detail::AddSink<T>{grads.h, grads.residual, width, dropout, keep_scale}, row_stats,
            rows, width);
    check_launch("fused_backward_kernel (add_layer_norm)");
  }
  T* const sums[3] = {grads.gamma, grads.beta, grads.bias};
  norm_detail::sum_columns<3>("add_layer_norm_backward",
                              norm_detail::AddParamTerms<T>{saved, gamma, dy, row_stats, width, dropout, keep_scale},
                              rows, width, params ? workspace + 2 * rows : nullptr, sums, stream);
}

template <class T, class I, std::size_t N>
void embedding_layer_norm_forward(const EmbeddingLookups<T, I, N>& lookups, const T* gamma, const T* beta, T* y,
                                  SavedLayerNorm<T> saved, std::int64_t rows, std::int64_t width, double eps,
                                  IdErrorFlag* id_error, cudaStream_t stream) {
  static_assert(N >= 1, "embedding_layer_norm: at least one table");
  norm_detail::check_fused("embedding_layer_norm_forward", rows, width);
  norm_detail::check_saved("embedding_layer_norm_forward", saved.s, saved.mean, saved.rstd, false);
  if (rows == 0) return;
  norm_detail::launch_fused_forward("fused_forward_kernel (embedding_layer_norm)",
                                    norm_detail::LookupSource<T, I, N>{lookups, rows, width, id_error}, gamma, beta, y,
                                    saved, rows, width, eps, stream);
}

template <class T, class I, std::size_t N>
void embedding_layer_norm_backward(const EmbeddingLookups<T, I, N>& lookups, SavedLayerNormView<T> saved,
                                   const T* gamma, const T* dy, EmbeddingLayerNormGrads<T, N> grads, float* workspace,
                                   std::int64_t rows, std::int64_t width, cudaStream_t stream) {
  norm_detail::check_fused("embedding_layer_norm_backward", rows, width);
  norm_detail::check_saved("embedding_layer_norm_backward", saved.s, saved.mean, saved.rstd, true);
  if (rows == 0) return;
  bool any_table = false;
  for (T* g : grads.tables) any_table = any_table || g != nullptr;
  if ((any_table || grads.gamma || grads.beta) && !workspace) {
    throw Error("embedding_layer_norm_backward: the workspace pointer is null");
  }
  const auto blocks = norm_detail::row_blocks(rows);
  const int threads = norm_detail::row_threads(width);
  if (any_table) {
    if constexpr (std::is_same_v<T, float>) {
      norm_detail::fused_backward_kernel<T><<<blocks, threads, 0, stream>>>(
          saved, gamma, dy, norm_detail::AtomicScatterSink<T, I, N>{lookups, grads.tables, width}, nullptr, rows,
          width);
      check_launch("fused_backward_kernel (embedding_layer_norm, atomic scatter)");
    } else {
      // Workspace: ds (rows x width) after the column partials.
      float* ds = workspace + 2 * norm_detail::param_grad_blocks(rows) * width;
      norm_detail::fused_backward_kernel<T>
          <<<blocks, threads, 0, stream>>>(saved, gamma, dy, norm_detail::StoreSink{ds, width}, nullptr, rows, width);
      check_launch("fused_backward_kernel (embedding_layer_norm, ds)");
      norm_detail::ordered_scatter_kernel<T, I, N>
          <<<dim3(blocks_for(width), static_cast<unsigned>(N)), kThreads, 0, stream>>>(lookups, grads.tables, ds, rows,
                                                                                       width);
      check_launch("ordered_scatter_kernel");
    }
  }
  T* const sums[2] = {grads.gamma, grads.beta};
  norm_detail::sum_columns<2>("embedding_layer_norm_backward", norm_detail::FusedParamTerms<T>{saved, dy, width}, rows,
                              width, workspace, sums, stream);
}

namespace norm_detail {
/// The CPU op's message for a bad id.
inline std::string bad_id_message(std::int64_t id, std::int64_t position, std::size_t lookup, std::int64_t table_rows) {
  return "embedding_layer_norm: id " + std::to_string(id) + " at position " + std::to_string(position) + " of lookup " +
         std::to_string(lookup) + " is outside the table's " + std::to_string(table_rows) + " rows";
}
}  // namespace norm_detail

template <class I>
void check_ids(const I* host_ids, std::int64_t rows, std::int64_t table_rows, std::size_t lookup) {
  for (std::int64_t n = 0; n < rows; ++n) {
    if (!norm_detail::id_in_range(host_ids[n], table_rows)) {
      throw Error(norm_detail::bad_id_message(static_cast<std::int64_t>(host_ids[n]), n, lookup, table_rows));
    }
  }
}

inline void reset_id_error(IdErrorFlag* id_error, cudaStream_t stream) {
  // All bytes 0xFF is kNoIdError.
  check(cudaMemsetAsync(id_error, 0xFF, sizeof(IdErrorFlag), stream), "reset_id_error (cudaMemsetAsync)");
}

template <class T, class I, std::size_t N>
void throw_if_id_error(const IdErrorFlag* id_error, const EmbeddingLookups<T, I, N>& lookups, std::int64_t rows,
                       cudaStream_t stream) {
  check(cudaStreamSynchronize(stream), "throw_if_id_error (cudaStreamSynchronize)");
  IdErrorFlag key = kNoIdError;
  check(cudaMemcpy(&key, id_error, sizeof key, cudaMemcpyDeviceToHost), "throw_if_id_error (read the flag)");
  if (key == kNoIdError || rows < 1) return;
  const std::size_t lookup = static_cast<std::size_t>(key / static_cast<IdErrorFlag>(rows));
  const std::int64_t position = static_cast<std::int64_t>(key % static_cast<IdErrorFlag>(rows));
  I id{};
  check(cudaMemcpy(&id, lookups.ids[lookup] + position, sizeof id, cudaMemcpyDeviceToHost),
        "throw_if_id_error (read the id)");
  throw Error(norm_detail::bad_id_message(static_cast<std::int64_t>(id), position, lookup, lookups.table_rows[lookup]));
}

}  // namespace ctdl::cuda

#pragma once
// LayerNorm fused with what comes before it in BERT: one row-wise pass forward, one
// backward, keeping only what backward needs.
//
//   add_layer_norm:        y = LayerNorm(dropout(h + bias) + residual)
//     the end of every BERT sublayer: h is the output projection's product x W^T (its
//     bias not yet added), residual the sublayer's input.
//   embedding_layer_norm:  y = LayerNorm(table_0[ids_0] + ... + table_{N-1}[ids_{N-1}])
//     BERT's embeddings: word + position + token type.
//
// Shape contract: h, residual and y are Var<T, Shape<dyn, H>, D> (rows x H); bias, gamma
// and beta Var<T, Shape<H>, D>; tables Var<T, Shape<dyn, H>, D>, every ids tensor holds
// one id per row (any shape, the same number of elements) and is a host tensor on every
// device (checked on the host, then copied up on Cuda).
//
// LayerNorm as in layer_norm.hpp (biased variance; eps from the config). With s the
// LayerNorm's input, mu and rstd its row statistics, xhat = (s - mu) * rstd and
// g = dy * gamma:
//   ds = rstd * (g - mean(g) - xhat * mean(g * xhat))            (row-wise)
//   dgamma += sum over rows of dy * xhat,   dbeta += sum over rows of dy
// then add_layer_norm:        dresidual += ds,  dh += ds * keep / (1 - p),  dbias += sum over rows of that
//      embedding_layer_norm:  table_i.grad[ids_i[n]] += ds[n]      (a scatter-add)
//
// Kept for backward: s (rows x H, in T), mu and rstd (one each per row) and the ids —
// not h, residual, the looked-up rows or the dropout output, whose values are freed as
// soon as the forward pass drops them. The dropout mask is regenerated from Philox: it
// is the mask ops::dropout draws from the same stream (element r * H + j), so the fused
// op equals the composition of the unfused ops up to rounding. (On CUDA the forward
// draws it once into a bit mask the tape keeps, 1/32 of the activation's elements'
// bytes in words, which both backward passes read: cuda::dropout_keep_bits.) Parameter gradients are
// summed over fixed blocks of rows, then across blocks in order, so they do not depend
// on the number of threads.
//
// CPU: SavedLayerNorm's row passes below (mu and rstd kept in compute_t<T>). CUDA:
// kernels/cuda/fused_layer_norm.cuh, one block per row, the CPU's rounding points, mu
// and rstd kept in float; backward takes a float workspace from the device pool. The
// kernels hold a row in shared memory: H is at most cuda::kMaxFusedWidth (8192) there.
// Table gradients of float tables are added atomically on Cuda (repeated ids in no fixed
// order: the last float bits vary run to run).

#include <omp.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/kernels/cpu/lanes.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/ops/dropout.hpp"
#include "ctdl/ops/embedding.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/dropout.cuh"
#include "ctdl/kernels/cuda/fused_layer_norm.cuh"
#endif

namespace ctdl::ops {

struct AddLayerNormOptions {
  float dropout = 0.0f;  // hidden_dropout_prob; 0 in evaluation
  RandomStream stream{};
  double eps = 1e-12;
};

template <class T, index_t H, Device D>
Var<T, Shape<dyn, H>, D> add_layer_norm(Tape& tape, const Var<T, Shape<dyn, H>, D>& h, const Var<T, Shape<H>, D>& bias,
                                        const Var<T, Shape<dyn, H>, D>& residual, const Var<T, Shape<H>, D>& gamma,
                                        const Var<T, Shape<H>, D>& beta, const AddLayerNormOptions& opt);

/// ids[i] (not null, a host tensor) holds the row of tables[i] for every output row.
template <class T, index_t H, class I, class SI, std::size_t N, Device D>
Var<T, Shape<dyn, H>, D> embedding_layer_norm(Tape& tape, const std::array<Var<T, Shape<dyn, H>, D>, N>& tables,
                                              const std::array<const Tensor<I, SI>*, N>& ids,
                                              const Var<T, Shape<H>, D>& gamma, const Var<T, Shape<H>, D>& beta,
                                              double eps);

// ============================================================================

namespace detail {

/// Row blocks over which parameter gradients are summed (fixed: thread-count independent).
inline constexpr index_t kLayerNormRowBlocks = 64;

/// LayerNorm of one row s (width w, compute type C; s is centred in place):
/// y = (s - mu) * rstd * gamma + beta. Returns {mu, rstd}.
template <class T, class C>
std::array<C, 2> layer_norm_row(C* s, index_t w, C eps, const T* gamma, const T* beta, T* y) {
  const C mu = kernels::cpu::lane_sum(s, w) / static_cast<C>(w);
  for (index_t j = 0; j < w; ++j) s[j] -= mu;
  const C rstd = C(1) / std::sqrt(kernels::cpu::lane_dot(s, s, w) / static_cast<C>(w) + eps);
  for (index_t j = 0; j < w; ++j) y[j] = convert<T>(s[j] * rstd * convert<C>(gamma[j]) + convert<C>(beta[j]));
  return {mu, rstd};
}

/// LayerNorm backward of one row: ds from dy, xhat recomputed from the kept s; adds
/// dy * xhat and dy to the block's dgamma and dbeta sums. xhat and ds: width-w scratch.
template <class T, class C>
void layer_norm_row_backward(const T* s, C mu, C rstd, const T* dy, const T* gamma, index_t w, C* xhat, C* ds,
                             C* dgamma, C* dbeta) {
  for (index_t j = 0; j < w; ++j) {
    const C d = convert<C>(dy[j]);
    xhat[j] = (convert<C>(s[j]) - mu) * rstd;
    ds[j] = d * convert<C>(gamma[j]);
    dgamma[j] += d * xhat[j];
    dbeta[j] += d;
  }
  const C mean_g = kernels::cpu::lane_sum(ds, w) / static_cast<C>(w);
  const C mean_gx = kernels::cpu::lane_dot(ds, xhat, w) / static_cast<C>(w);
  for (index_t j = 0; j < w; ++j) ds[j] = rstd * (ds[j] - mean_g - xhat[j] * mean_gx);
}

/// Runs fn(row, xhat, ds, block_sums) over all rows, in kLayerNormRowBlocks fixed blocks
/// of consecutive rows (in parallel), each block with its own zeroed `sums` x w
/// accumulators; returns the per-block sums (block-major) for add_block_sums.
template <class C, class Fn>
std::vector<C> for_row_blocks(index_t rows, index_t w, int sums, Fn&& fn) {
  const index_t blocks = std::max<index_t>(1, std::min(rows, kLayerNormRowBlocks));
  std::vector<C> acc(static_cast<std::size_t>(blocks * sums * w), C(0));
#pragma omp parallel if (rows * w >= expr::kParallelThreshold)
  {
    std::vector<C> xhat(static_cast<std::size_t>(w)), ds(static_cast<std::size_t>(w));
#pragma omp for schedule(static)
    for (index_t blk = 0; blk < blocks; ++blk) {
      C* block_sums = acc.data() + blk * sums * w;
      for (index_t r = blk * rows / blocks; r < (blk + 1) * rows / blocks; ++r) fn(r, xhat.data(), ds.data(), block_sums);
    }
  }
  return acc;
}

/// grad += the `which`-th of the per-block sums of for_row_blocks, added in block order.
template <class T, class S, class C>
void add_block_sums(const GradRef<T, S>& p, const std::vector<C>& acc, index_t w, int sums, int which) {
  if (!p.requires_grad()) return;
  T* g = p.node_ptr()->grad_data();
  const index_t blocks = static_cast<index_t>(acc.size()) / (sums * w);
  for (index_t j = 0; j < w; ++j) {
    C total = 0;
    for (index_t blk = 0; blk < blocks; ++blk) total += acc[static_cast<std::size_t>((blk * sums + which) * w + j)];
    g[j] = convert<T>(convert<C>(g[j]) + total);
  }
}

/// The gradient storage of a Var or GradRef that requires one; null otherwise.
template <class R>
auto* grad_or_null(const R& r) {
  return r.requires_grad() ? r.node_ptr()->grad_data() : nullptr;
}

/// The LayerNorm both fused ops end in: what backward keeps of it, and (on the CPU) its
/// passes over the rows.
template <class T, index_t H, class D = Cpu>
struct SavedLayerNorm {
  using C = compute_t<T>;
  /// Row statistics: compute_t<T> on the host; float on Cuda, as the kernels keep them.
  using RowStats = std::conditional_t<on_cuda<D>, Tensor<float, Shape<dyn>, Cuda>, std::vector<C>>;
  GradRef<T, Shape<dyn, H>, D> y;
  Var<T, Shape<H>, D> gamma;
  Var<T, Shape<H>, D> beta;  // parameters: alive anyway
  Tensor<T, Shape<dyn, H>, D> s;  // the LayerNorm's input (kept only when recording)
  RowStats mu, rstd;
  double eps = 1e-12;

  SavedLayerNorm(const Var<T, Shape<H>, D>& g, const Var<T, Shape<H>, D>& b, double e) : gamma(g), beta(b), eps(e) {}

#if CTDL_CUDA_OPS
  /// Cuda forward: with `keep`, allocates s, mu and rstd for `rows` rows of width w and
  /// returns where the kernel writes them; without, nothing (all null: not kept).
  cuda::SavedLayerNorm<T> allocate(index_t rows, index_t w, bool keep) {
    if (!keep) return {};
    s = Tensor<T, Shape<dyn, H>, Cuda>::uninitialized({rows, w});
    mu = Tensor<float, Shape<dyn>, Cuda>::uninitialized({rows});
    rstd = Tensor<float, Shape<dyn>, Cuda>::uninitialized({rows});
    return {s.data(), mu.data(), rstd.data()};
  }
  /// Cuda backward: what the forward kept.
  cuda::SavedLayerNormView<T> view() const { return {s.data(), mu.data(), rstd.data()}; }
#endif

  /// Forward: make_row(r, x) writes the LayerNorm's input row r into x (width w, in C);
  /// returns the normalised rows, and with `keep` keeps s, mu and rstd for backward.
  template <class MakeRow>
  Tensor<T, Shape<dyn, H>> forward(index_t rows, index_t w, bool keep, MakeRow&& make_row) {
    auto value = Tensor<T, Shape<dyn, H>>::uninitialized({rows, w});
    if (keep) {
      s = Tensor<T, Shape<dyn, H>>::uninitialized({rows, w});
      mu.resize(static_cast<std::size_t>(rows));
      rstd.resize(static_cast<std::size_t>(rows));
    }
    const T *gv = gamma.value().data(), *bv = beta.value().data();
#pragma omp parallel if (rows * w >= expr::kParallelThreshold)
    {
      std::vector<C> row(static_cast<std::size_t>(w));
      C* x = row.data();
#pragma omp for schedule(static)
      for (index_t r = 0; r < rows; ++r) {
        const index_t o = r * w;
        make_row(r, x);
        if (keep) {
          for (index_t j = 0; j < w; ++j) s.data()[o + j] = convert<T>(x[j]);
        }
        const auto [m, rs] = layer_norm_row(x, w, static_cast<C>(eps), gv, bv, value.data() + o);
        if (keep) {
          mu[static_cast<std::size_t>(r)] = m;
          rstd[static_cast<std::size_t>(r)] = rs;
        }
      }
    }
    return value;
  }

  /// Backward: the LayerNorm's input gradient ds of each row goes to on_row(r, ds, sums),
  /// where sums are the row block's `extra` accumulators (width w each) for the caller's
  /// own parameter gradients; dgamma and dbeta are added here. Returns every block's
  /// sums (block-major; the caller's start at index 2) for add_block_sums.
  template <class OnRow>
  std::vector<C> backward(int extra, OnRow&& on_row) const {
    const index_t rows = s.extent(0), w = s.extent(1);
    const T* dy = y.grad().data();
    const T* gam = gamma.value().data();
    const int sums = 2 + extra;
    auto acc = for_row_blocks<C>(rows, w, sums, [&](index_t r, C* xhat, C* ds, C* block) {
      const index_t o = r * w;
      layer_norm_row_backward(s.data() + o, mu[static_cast<std::size_t>(r)], rstd[static_cast<std::size_t>(r)], dy + o,
                              gam, w, xhat, ds, block, block + w);
      on_row(r, ds, block + 2 * w);
    });
    add_block_sums(GradRef<T, Shape<H>>(gamma), acc, w, sums, 0);
    add_block_sums(GradRef<T, Shape<H>>(beta), acc, w, sums, 1);
    return acc;
  }
};

template <class T, index_t H, class D>
struct AddLayerNormEntry final : TapeEntry {
  using C = compute_t<T>;
  GradRef<T, Shape<dyn, H>, D> h, residual;
  GradRef<T, Shape<H>, D> bias;
  SavedLayerNorm<T, H, D> norm;
  AddLayerNormOptions opt;
  Tensor<std::uint32_t, Shape<dyn>, D> keep_bits;  // Cuda with dropout: forward's decisions (cuda::dropout_keep_bits)
  AddLayerNormEntry(GradRef<T, Shape<dyn, H>, D> h_, GradRef<T, Shape<dyn, H>, D> r_, GradRef<T, Shape<H>, D> b_,
                    SavedLayerNorm<T, H, D> n, AddLayerNormOptions o)
      : h(std::move(h_)), residual(std::move(r_)), bias(std::move(b_)), norm(std::move(n)), opt(o) {}
  const char* name() const override { return "add_layer_norm"; }

  void backward() override {
    if (!norm.y.has_grad()) return;
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      const index_t rows = norm.s.extent(0), w = norm.s.extent(1);
      const cuda::AddLayerNormGrads<T> grads{.h = grad_or_null(h),
                                             .bias = grad_or_null(bias),
                                             .residual = grad_or_null(residual),
                                             .gamma = grad_or_null(norm.gamma),
                                             .beta = grad_or_null(norm.beta)};
      if (rows * w == 0) return;  // the gradients exist (zero), as on the CPU; nothing to add
      // Each row's mean(g) and mean(g * xhat), and the per-block column sums of dgamma,
      // dbeta and dbias; from the pool, freed stream-ordered after the launches.
      const bool params = grads.bias || grads.gamma || grads.beta;
      const index_t floats = params ? cuda::add_layer_norm_backward_workspace(rows, w) : 0;
      auto workspace = Tensor<float, Shape<dyn>, Cuda>::uninitialized({floats});
      const auto& saved = norm;  // const: reading gamma's value does not mark it changed
      const DropoutMask mask{opt.stream, opt.dropout, keep_bits.size() ? keep_bits.data() : nullptr};
      cuda::add_layer_norm_backward(saved.view(), saved.gamma.value().data(), saved.y.grad().data(), grads,
                                    params ? workspace.data() : nullptr, rows, w, mask);
#endif
    } else {
      backward_cpu();
    }
  }

  void backward_cpu() {
    const index_t w = norm.s.extent(1);
    T* dh = h.requires_grad() ? h.node_ptr()->grad_data() : nullptr;  // dbias is summed from ds itself
    T* dr = residual.requires_grad() ? residual.node_ptr()->grad_data() : nullptr;
    const C keep_scale = C(1) / (C(1) - static_cast<C>(opt.dropout));
    const auto acc = norm.backward(1, [&](index_t r, C* ds, C* dbias) {
      const index_t o = r * w;
      if (dr) {
        for (index_t j = 0; j < w; ++j) dr[o + j] = convert<T>(convert<C>(dr[o + j]) + ds[j]);
      }
      if (opt.dropout > 0) {
        for_each_keep(opt.stream, opt.dropout, static_cast<std::uint64_t>(o), w,
                      [&](index_t j, bool keep) { ds[j] = keep ? ds[j] * keep_scale : C(0); });
      }
      if (dh) {
        for (index_t j = 0; j < w; ++j) dh[o + j] = convert<T>(convert<C>(dh[o + j]) + ds[j]);
      }
      for (index_t j = 0; j < w; ++j) dbias[j] += ds[j];
    });
    add_block_sums(bias, acc, w, 3, 2);
  }
};

template <class T, index_t H, class I, std::size_t N, class D>
struct EmbeddingLayerNormEntry final : TapeEntry {
  using C = compute_t<T>;
  std::array<GradRef<T, Shape<dyn, H>, D>, N> tables;
  std::array<KeptIds<I, D>, N> ids;
  SavedLayerNorm<T, H, D> norm;
  EmbeddingLayerNormEntry(std::array<GradRef<T, Shape<dyn, H>, D>, N> t, std::array<KeptIds<I, D>, N> i,
                          SavedLayerNorm<T, H, D> n)
      : tables(std::move(t)), ids(std::move(i)), norm(std::move(n)) {}
  const char* name() const override { return "embedding_layer_norm"; }

  void backward() override {
    if (!norm.y.has_grad()) return;
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      const index_t rows = norm.s.extent(0), w = norm.s.extent(1);
      // Backward reads the ids, not the tables' values (which may be gone): no table pointers.
      cuda::EmbeddingLookups<T, I, N> lookups{};
      cuda::EmbeddingLayerNormGrads<T, N> grads{};
      bool any = false;
      for (std::size_t i = 0; i < N; ++i) {
        lookups.table_rows[i] = tables[i].extents()[0];
        lookups.ids[i] = ids[i].data();
        grads.tables[i] = grad_or_null(tables[i]);
        any = any || grads.tables[i];
      }
      grads.gamma = grad_or_null(norm.gamma);
      grads.beta = grad_or_null(norm.beta);
      any = any || grads.gamma || grads.beta;
      if (rows * w == 0) return;  // the gradients exist (zero), as on the CPU; nothing to add
      // The per-block column sums of dgamma and dbeta, and for bf16/fp16 tables ds for the
      // ordered scatter; from the pool, freed stream-ordered after the launches.
      const index_t floats = any ? cuda::embedding_layer_norm_backward_workspace<T>(rows, w) : 0;
      auto workspace = Tensor<float, Shape<dyn>, Cuda>::uninitialized({floats});
      const auto& saved = norm;  // const: reading gamma's value does not mark it changed
      cuda::embedding_layer_norm_backward(lookups, saved.view(), saved.gamma.value().data(), saved.y.grad().data(),
                                          grads, any ? workspace.data() : nullptr, rows, w);
#endif
    } else {
      backward_cpu();
    }
  }

  void backward_cpu() {
    const index_t rows = norm.s.extent(0), w = norm.s.extent(1);
    bool any_table = false;
    for (const auto& t : tables) any_table = any_table || t.requires_grad();
    auto ds_all = any_table ? Tensor<C, Shape<dyn, H>>::uninitialized(norm.s.extents()) : Tensor<C, Shape<dyn, H>>();
    norm.backward(0, [&](index_t r, C* ds, C*) {
      if (any_table) std::copy(ds, ds + w, ds_all.data() + r * w);
    });
    // Scatter-adds, one table per thread: repeated ids write the same row.
#pragma omp parallel for schedule(dynamic)
    for (std::size_t i = 0; i < N; ++i) {
      if (!tables[i].requires_grad()) continue;
      T* g = tables[i].node_ptr()->grad_data();
      for (index_t r = 0; r < rows; ++r) {
        T* row = g + static_cast<index_t>(ids[i][static_cast<std::size_t>(r)]) * w;
        const C* d = ds_all.data() + r * w;
        for (index_t j = 0; j < w; ++j) row[j] = convert<T>(convert<C>(row[j]) + d[j]);
      }
    }
  }
};

template <class T, index_t H, class D>
void check_layer_norm_params(const char* op, index_t w, const Var<T, Shape<H>, D>& gamma,
                             const Var<T, Shape<H>, D>& beta) {
  if (gamma.extents()[0] != w || beta.extents()[0] != w) {
    throw ShapeError(std::string(op) + ": gamma " + describe<Shape<H>>(gamma.extents()) + " and beta " +
                     describe<Shape<H>>(beta.extents()) + " do not match the width " + std::to_string(w));
  }
}

#if CTDL_CUDA_OPS
/// The CUDA forward of add_layer_norm, after the shared checks.
template <class T, index_t H>
Var<T, Shape<dyn, H>, Cuda> add_layer_norm_cuda(Tape& tape, const Var<T, Shape<dyn, H>, Cuda>& h,
                                                const Var<T, Shape<H>, Cuda>& bias,
                                                const Var<T, Shape<dyn, H>, Cuda>& residual,
                                                const Var<T, Shape<H>, Cuda>& gamma, const Var<T, Shape<H>, Cuda>& beta,
                                                const AddLayerNormOptions& opt, bool needs_grad) {
  const index_t rows = h.extents()[0], w = h.extents()[1];
  auto value = Tensor<T, Shape<dyn, H>, Cuda>::uninitialized({rows, w});
  SavedLayerNorm<T, H, Cuda> norm(gamma, beta, opt.eps);
  const auto saved = norm.allocate(rows, w, needs_grad);
  // With dropout, the decisions are drawn once into a bit mask (a Philox call per four
  // elements) that forward and both passes of backward read: the fused kernels take
  // elements one at a time and would otherwise draw per element, three times.
  Tensor<std::uint32_t, Shape<dyn>, Cuda> keep_bits;
  DropoutMask mask{opt.stream, opt.dropout};
  if (opt.dropout > 0 && rows * w > 0) {
    keep_bits = Tensor<std::uint32_t, Shape<dyn>, Cuda>::uninitialized({cuda::dropout_bit_words(rows * w)});
    cuda::dropout_keep_bits(mask, rows * w, keep_bits.data());
    mask.bits = keep_bits.data();
  }
  if (rows * w > 0) {
    cuda::add_layer_norm_forward(h.value().data(), bias.value().data(), residual.value().data(), gamma.value().data(),
                                 beta.value().data(), value.data(), saved, rows, w, mask, opt.eps);
  }
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    norm.y = y;
    auto entry = std::make_unique<AddLayerNormEntry<T, H, Cuda>>(h, residual, bias, std::move(norm), opt);
    entry->keep_bits = std::move(keep_bits);
    tape.push(std::move(entry));
  }
  return y;
}

/// The CUDA forward of embedding_layer_norm, after the shared checks (the ids among
/// them, on the host): the ids are copied up, and the tape keeps the copies.
template <class T, index_t H, class I, class SI, std::size_t N>
Var<T, Shape<dyn, H>, Cuda> embedding_layer_norm_cuda(Tape& tape,
                                                      const std::array<Var<T, Shape<dyn, H>, Cuda>, N>& tables,
                                                      const std::array<const Tensor<I, SI>*, N>& ids,
                                                      const Var<T, Shape<H>, Cuda>& gamma,
                                                      const Var<T, Shape<H>, Cuda>& beta, double eps, bool needs_grad) {
  const index_t rows = ids[0]->size(), w = tables[0].extents()[1];
  std::array<Tensor<I, Shape<dyn>, Cuda>, N> device_ids;
  cuda::EmbeddingLookups<T, I, N> lookups{};
  for (std::size_t i = 0; i < N; ++i) {
    device_ids[i] = ids_to_device<Cuda>(*ids[i]);
    lookups.tables[i] = tables[i].value().data();
    lookups.table_rows[i] = tables[i].extents()[0];
    lookups.ids[i] = device_ids[i].data();
  }
  auto value = Tensor<T, Shape<dyn, H>, Cuda>::uninitialized({rows, w});
  SavedLayerNorm<T, H, Cuda> norm(gamma, beta, eps);
  const auto saved = norm.allocate(rows, w, needs_grad);
  if (rows * w > 0) {
    // No device id flag: every id was checked on the host.
    cuda::embedding_layer_norm_forward(lookups, gamma.value().data(), beta.value().data(), value.data(), saved, rows, w,
                                       eps, static_cast<cuda::IdErrorFlag*>(nullptr));
  }
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    std::array<GradRef<T, Shape<dyn, H>, Cuda>, N> refs;
    for (std::size_t i = 0; i < N; ++i) refs[i] = tables[i];
    norm.y = y;
    tape.push(std::make_unique<EmbeddingLayerNormEntry<T, H, I, N, Cuda>>(std::move(refs), std::move(device_ids),
                                                                           std::move(norm)));
  }
  return y;
}
#endif

}  // namespace detail

template <class T, index_t H, Device D>
Var<T, Shape<dyn, H>, D> add_layer_norm(Tape& tape, const Var<T, Shape<dyn, H>, D>& h, const Var<T, Shape<H>, D>& bias,
                                        const Var<T, Shape<dyn, H>, D>& residual, const Var<T, Shape<H>, D>& gamma,
                                        const Var<T, Shape<H>, D>& beta, const AddLayerNormOptions& opt) {
  using S = Shape<dyn, H>;
  require_kernels<D>();
  const index_t rows = h.extents()[0], w = h.extents()[1];
  if (residual.extents() != h.extents() || bias.extents()[0] != w) {
    throw ShapeError("add_layer_norm: h " + describe<S>(h.extents()) + ", bias " + describe<Shape<H>>(bias.extents()) +
                     " and residual " + describe<S>(residual.extents()) + " do not fit dropout(h + bias) + residual");
  }
  detail::check_layer_norm_params("add_layer_norm", w, gamma, beta);
  if (!(opt.dropout >= 0.0f && opt.dropout < 1.0f)) {
    throw Error("add_layer_norm: dropout probability " + std::to_string(opt.dropout) + " is not in [0, 1)");
  }
  const bool needs_grad = tape.recording() && (h.requires_grad() || bias.requires_grad() || residual.requires_grad() ||
                                               gamma.requires_grad() || beta.requires_grad());
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::add_layer_norm_cuda(tape, h, bias, residual, gamma, beta, opt, needs_grad);
#endif
  } else {
    using C = compute_t<T>;
    const T *hv = h.value().data(), *bv = bias.value().data(), *rv = residual.value().data();
    const C keep_scale = C(1) / (C(1) - static_cast<C>(opt.dropout));
    detail::SavedLayerNorm<T, H> norm(gamma, beta, opt.eps);
    auto value = norm.forward(rows, w, needs_grad, [&](index_t r, C* x) {
      const index_t o = r * w;
      for (index_t j = 0; j < w; ++j) x[j] = convert<C>(hv[o + j]) + convert<C>(bv[j]);
      if (opt.dropout > 0) {
        detail::for_each_keep(opt.stream, opt.dropout, static_cast<std::uint64_t>(o), w,
                              [&](index_t j, bool keep) { x[j] = keep ? x[j] * keep_scale : C(0); });
      }
      for (index_t j = 0; j < w; ++j) x[j] += convert<C>(rv[o + j]);
    });
    auto y = make_result(std::move(value), needs_grad);
    if (needs_grad) {
      norm.y = y;
      tape.push(std::make_unique<detail::AddLayerNormEntry<T, H, Cpu>>(h, residual, bias, std::move(norm), opt));
    }
    return y;
  }
}

template <class T, index_t H, class I, class SI, std::size_t N, Device D>
Var<T, Shape<dyn, H>, D> embedding_layer_norm(Tape& tape, const std::array<Var<T, Shape<dyn, H>, D>, N>& tables,
                                              const std::array<const Tensor<I, SI>*, N>& ids,
                                              const Var<T, Shape<H>, D>& gamma, const Var<T, Shape<H>, D>& beta,
                                              double eps) {
  static_assert(N >= 1, "embedding_layer_norm: at least one table");
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  require_kernels<D>();
  using S = Shape<dyn, H>;
  const index_t rows = ids[0]->size(), w = tables[0].extents()[1];
  detail::check_layer_norm_params("embedding_layer_norm", w, gamma, beta);
  bool needs_grad = tape.recording() && (gamma.requires_grad() || beta.requires_grad());
  for (std::size_t i = 0; i < N; ++i) {
    if (ids[i]->size() != rows || tables[i].extents()[1] != w) {
      throw ShapeError("embedding_layer_norm: lookup " + std::to_string(i) + " (table " +
                       describe<S>(tables[i].extents()) + ", " + std::to_string(ids[i]->size()) +
                       " ids) does not match lookup 0 (width " + std::to_string(w) + ", " + std::to_string(rows) + " ids)");
    }
    const index_t table_rows = tables[i].extents()[0];
    for (index_t n = 0; n < rows; ++n) {
      const auto id = ids[i]->data()[n];
      if (id < 0 || id >= table_rows) {
        throw Error("embedding_layer_norm: id " + std::to_string(id) + " at position " + std::to_string(n) +
                    " of lookup " + std::to_string(i) + " is outside the table's " + std::to_string(table_rows) + " rows");
      }
    }
    needs_grad = needs_grad || (tape.recording() && tables[i].requires_grad());
  }
  // Backward adds each lookup's gradient into its table from threads of their own (one per
  // lookup on the CPU, blocks of their own on the GPU): a table shared by two lookups and
  // trained would race.
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t k = 0; k < i; ++k)
      if (tables[i].node_ptr() && tables[k].node_ptr() == tables[i].node_ptr() && tape.recording() &&
          tables[i].requires_grad())
        throw Error("embedding_layer_norm: lookups " + std::to_string(k) + " and " + std::to_string(i) +
                    " use the same table; sum them with ops::embedding and ops::layer_norm instead");
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::embedding_layer_norm_cuda(tape, tables, ids, gamma, beta, eps, needs_grad);
#endif
  } else {
    using C = compute_t<T>;
    detail::SavedLayerNorm<T, H> norm(gamma, beta, eps);
    auto value = norm.forward(rows, w, needs_grad, [&](index_t r, C* x) {
      std::fill(x, x + w, C(0));
      for (std::size_t i = 0; i < N; ++i) {
        const T* src = tables[i].value().data() + static_cast<index_t>(ids[i]->data()[r]) * w;
        for (index_t j = 0; j < w; ++j) x[j] += convert<C>(src[j]);
      }
    });
    auto y = make_result(std::move(value), needs_grad);
    if (needs_grad) {
      std::array<GradRef<T, S>, N> refs;
      std::array<std::vector<I>, N> kept_ids;
      for (std::size_t i = 0; i < N; ++i) {
        refs[i] = tables[i];
        kept_ids[i].assign(ids[i]->data(), ids[i]->data() + rows);
      }
      norm.y = y;
      tape.push(std::make_unique<detail::EmbeddingLayerNormEntry<T, H, I, N, Cpu>>(
          std::move(refs), std::move(kept_ids), std::move(norm)));
    }
    return y;
  }
}

}  // namespace ctdl::ops

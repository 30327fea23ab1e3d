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
// Shape contract: h, residual and y are Var<T, Shape<dyn, H>> (rows x H); bias, gamma
// and beta Var<T, Shape<H>>; tables Var<T, Shape<dyn, H>>, every ids tensor holds one id
// per row (any shape, the same number of elements).
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
// op equals the composition of the unfused ops up to rounding. Parameter gradients are
// summed over fixed blocks of rows, then across blocks in order, so they do not depend
// on the number of threads.

#include <omp.h>

#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/kernels/cpu/lanes.hpp"
#include "ctdl/ops/dropout.hpp"

namespace ctdl::ops {

struct AddLayerNormOptions {
  float dropout = 0.0f;  // hidden_dropout_prob; 0 in evaluation
  RandomStream stream{};
  double eps = 1e-12;
};

template <class T, index_t H>
Var<T, Shape<dyn, H>> add_layer_norm(Tape& tape, const Var<T, Shape<dyn, H>>& h, const Var<T, Shape<H>>& bias,
                                     const Var<T, Shape<dyn, H>>& residual, const Var<T, Shape<H>>& gamma,
                                     const Var<T, Shape<H>>& beta, const AddLayerNormOptions& opt);

/// ids[i] (not null) holds the row of tables[i] for every output row.
template <class T, index_t H, class I, class SI, std::size_t N>
Var<T, Shape<dyn, H>> embedding_layer_norm(Tape& tape, const std::array<Var<T, Shape<dyn, H>>, N>& tables,
                                           const std::array<const Tensor<I, SI>*, N>& ids, const Var<T, Shape<H>>& gamma,
                                           const Var<T, Shape<H>>& beta, double eps);

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

/// The LayerNorm both fused ops end in: what backward keeps of it, and its passes over
/// the rows.
template <class T, index_t H>
struct SavedLayerNorm {
  using C = compute_t<T>;
  GradRef<T, Shape<dyn, H>> y;
  Var<T, Shape<H>> gamma;
  Var<T, Shape<H>> beta;  // parameters: alive anyway
  Tensor<T, Shape<dyn, H>> s;  // the LayerNorm's input (kept only when recording)
  std::vector<C> mu, rstd;
  double eps = 1e-12;

  SavedLayerNorm(const Var<T, Shape<H>>& g, const Var<T, Shape<H>>& b, double e) : gamma(g), beta(b), eps(e) {}

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

template <class T, index_t H>
struct AddLayerNormEntry final : TapeEntry {
  using C = compute_t<T>;
  GradRef<T, Shape<dyn, H>> h, residual;
  GradRef<T, Shape<H>> bias;
  SavedLayerNorm<T, H> norm;
  AddLayerNormOptions opt;
  AddLayerNormEntry(GradRef<T, Shape<dyn, H>> h_, GradRef<T, Shape<dyn, H>> r_, GradRef<T, Shape<H>> b_,
                    SavedLayerNorm<T, H> n, AddLayerNormOptions o)
      : h(std::move(h_)), residual(std::move(r_)), bias(std::move(b_)), norm(std::move(n)), opt(o) {}
  const char* name() const override { return "add_layer_norm"; }

  void backward() override {
    if (!norm.y.has_grad()) return;
    const index_t w = norm.s.extent(1);
    T* dh = h.requires_grad() || bias.requires_grad() ? h.node_ptr()->grad_data() : nullptr;
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

template <class T, index_t H, class I, std::size_t N>
struct EmbeddingLayerNormEntry final : TapeEntry {
  using C = compute_t<T>;
  std::array<GradRef<T, Shape<dyn, H>>, N> tables;
  std::array<std::vector<I>, N> ids;
  SavedLayerNorm<T, H> norm;
  EmbeddingLayerNormEntry(std::array<GradRef<T, Shape<dyn, H>>, N> t, std::array<std::vector<I>, N> i,
                          SavedLayerNorm<T, H> n)
      : tables(std::move(t)), ids(std::move(i)), norm(std::move(n)) {}
  const char* name() const override { return "embedding_layer_norm"; }

  void backward() override {
    if (!norm.y.has_grad()) return;
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

template <class T, index_t H>
void check_layer_norm_params(const char* op, index_t w, const Var<T, Shape<H>>& gamma, const Var<T, Shape<H>>& beta) {
  if (gamma.extents()[0] != w || beta.extents()[0] != w) {
    throw ShapeError(std::string(op) + ": gamma " + describe<Shape<H>>(gamma.extents()) + " and beta " +
                     describe<Shape<H>>(beta.extents()) + " do not match the width " + std::to_string(w));
  }
}

}  // namespace detail

template <class T, index_t H>
Var<T, Shape<dyn, H>> add_layer_norm(Tape& tape, const Var<T, Shape<dyn, H>>& h, const Var<T, Shape<H>>& bias,
                                     const Var<T, Shape<dyn, H>>& residual, const Var<T, Shape<H>>& gamma,
                                     const Var<T, Shape<H>>& beta, const AddLayerNormOptions& opt) {
  using C = compute_t<T>;
  using S = Shape<dyn, H>;
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
    tape.push(std::make_unique<detail::AddLayerNormEntry<T, H>>(h, residual, bias, std::move(norm), opt));
  }
  return y;
}

template <class T, index_t H, class I, class SI, std::size_t N>
Var<T, Shape<dyn, H>> embedding_layer_norm(Tape& tape, const std::array<Var<T, Shape<dyn, H>>, N>& tables,
                                           const std::array<const Tensor<I, SI>*, N>& ids, const Var<T, Shape<H>>& gamma,
                                           const Var<T, Shape<H>>& beta, double eps) {
  static_assert(N >= 1, "embedding_layer_norm: at least one table");
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  using C = compute_t<T>;
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
    tape.push(std::make_unique<detail::EmbeddingLayerNormEntry<T, H, I, N>>(std::move(refs), std::move(kept_ids),
                                                                             std::move(norm)));
  }
  return y;
}

}  // namespace ctdl::ops

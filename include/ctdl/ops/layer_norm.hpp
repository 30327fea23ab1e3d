#pragma once
// layer_norm over the last axis (biased variance, as BERT and torch.nn.LayerNorm).
//
// Shape contract: x is Var<T, S, D> with S = Shape<..., H>; gamma and beta are
// Var<T, Shape<H>, D>, on x's device.
//   mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)       (row-wise)
//   xhat = (x - mu) * rstd,  y = xhat * gamma + beta
// Backward, with g = dy * gamma:
//   dx     += rstd * (g - mean(g) - xhat * mean(g * xhat))                  (row-wise)
//   dgamma += sum over rows of dy * xhat,   dbeta += sum over rows of dy
// mu and rstd (one per row, in T) are kept for backward; xhat is recomputed.
// eps: BERT's default is 1e-12 (bert_config.json `layer_norm_eps`).
// CPU: expressions over the row statistics. CUDA: kernels/cuda/layer_norm.cuh, one block
// per row, with the CPU's rounding points; dgamma and dbeta summed over fixed row blocks
// in a float workspace from the device pool.

#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/dispatch.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/layer_norm.cuh"
#endif

namespace ctdl::ops {

template <class T, class S, class SG, Device D>
Var<T, S, D> layer_norm(Tape& tape, const Var<T, S, D>& x, const Var<T, SG, D>& gamma, const Var<T, SG, D>& beta,
                        double eps = 1e-12);

// ============================================================================

namespace detail {

template <class T, class S, class SG, class D>
struct LayerNormEntry final : TapeEntry {
  using SR = last_to_one_t<S>;
  Var<T, S, D> x;
  GradRef<T, S, D> y;
  Var<T, SG, D> gamma;
  GradRef<T, SG, D> beta;
  Tensor<T, SR, D> mu, rstd;
  LayerNormEntry(Var<T, S, D> x_, GradRef<T, S, D> y_, Var<T, SG, D> g_, GradRef<T, SG, D> b_, Tensor<T, SR, D> mu_,
                 Tensor<T, SR, D> rstd_)
      : x(std::move(x_)), y(std::move(y_)), gamma(std::move(g_)), beta(std::move(b_)), mu(std::move(mu_)),
        rstd(std::move(rstd_)) {}
  const char* name() const override { return "layer_norm"; }

  void backward() override {
    if (!y.has_grad()) return;
    const auto& dy = y.grad();
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      const auto& xv = x.value();
      const index_t w = xv.extent(S::rank - 1), rows = w ? xv.size() / w : 0;
      const cuda::LayerNormGrads<T> grads{.x = x.requires_grad() ? x.node_ptr()->grad_data() : nullptr,
                                          .gamma = gamma.requires_grad() ? gamma.node_ptr()->grad_data() : nullptr,
                                          .beta = beta.requires_grad() ? beta.node_ptr()->grad_data() : nullptr};
      if (xv.size() == 0) return;  // gradients exist (zero), as on the CPU; the kernels take widths >= 1
      // dgamma's and dbeta's per-block column sums, from the pool (freed stream-ordered).
      const bool params = grads.gamma || grads.beta;
      const index_t floats = params ? cuda::layer_norm_backward_workspace(rows, w) : 0;
      auto workspace = Tensor<float, Shape<dyn>, Cuda>::uninitialized({floats});
      cuda::layer_norm_backward(xv.data(), gamma.value().data(), mu.data(), rstd.data(), dy.data(), grads,
                                params ? workspace.data() : nullptr, rows, w);
#endif
    } else {
      const auto xhat = (x.value() - mu) * rstd;
      if (x.requires_grad()) {
        const auto g = dy * gamma.value();
        const auto mean_g = ctdl::mean(g, last_axis);
        const auto mean_gx = ctdl::mean(g * xhat, last_axis);
        x.node_ptr()->accumulate(rstd * (g - mean_g - xhat * mean_gx));
      }
      if (gamma.requires_grad()) gamma.node_ptr()->accumulate(dy * xhat);
      if (beta.requires_grad()) beta.node_ptr()->accumulate(lazy(dy));
    }
  }
};

template <class T, class S, class SG, class D>
Var<T, S, D> layer_norm_result(Tape& tape, const Var<T, S, D>& x, const Var<T, SG, D>& gamma,
                               const Var<T, SG, D>& beta, bool needs_grad, Tensor<T, S, D> value,
                               Tensor<T, last_to_one_t<S>, D> mu, Tensor<T, last_to_one_t<S>, D> rstd) {
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<LayerNormEntry<T, S, SG, D>>(x, y, gamma, beta, std::move(mu), std::move(rstd)));
  }
  return y;
}

#if CTDL_CUDA_OPS
/// The CUDA forward: mu and rstd (in T, as the CPU keeps them) only when recording.
template <class T, class S, class SG>
Var<T, S, Cuda> layer_norm_cuda(Tape& tape, const Var<T, S, Cuda>& x, const Var<T, SG, Cuda>& gamma,
                                const Var<T, SG, Cuda>& beta, double eps, bool needs_grad) {
  using SR = last_to_one_t<S>;
  const auto& xv = x.value();
  const index_t w = xv.extent(S::rank - 1), rows = w ? xv.size() / w : 0;
  auto value = Tensor<T, S, Cuda>::uninitialized(xv.extents());
  Tensor<T, SR, Cuda> mu, rstd;  // kept for backward only
  if (needs_grad) {
    Extents<SR> row_extents = xv.extents();
    row_extents[S::rank - 1] = 1;
    mu = Tensor<T, SR, Cuda>::uninitialized(row_extents);
    rstd = Tensor<T, SR, Cuda>::uninitialized(row_extents);
  }
  if (xv.size() > 0) {  // the kernel takes widths of at least 1
    cuda::layer_norm_forward(xv.data(), gamma.value().data(), beta.value().data(), value.data(),
                             needs_grad ? mu.data() : nullptr, needs_grad ? rstd.data() : nullptr, rows, w, eps);
  }
  return layer_norm_result(tape, x, gamma, beta, needs_grad, std::move(value), std::move(mu), std::move(rstd));
}
#endif

}  // namespace detail

template <class T, class S, class SG, Device D>
Var<T, S, D> layer_norm(Tape& tape, const Var<T, S, D>& x, const Var<T, SG, D>& gamma, const Var<T, SG, D>& beta,
                        double eps) {
  static_assert(SG::rank == 1 && S::rank >= 1, "layer_norm: gamma and beta are vectors over x's last axis");
  static_assert(SG::static_extents[0] == dyn || S::static_extents[S::rank - 1] == dyn ||
                    SG::static_extents[0] == S::static_extents[S::rank - 1],
                "layer_norm: the static width of gamma differs from x's last extent");
  require_kernels<D>();
  if (gamma.extents()[0] != x.extents()[S::rank - 1] || beta.extents() != gamma.extents()) {
    throw ShapeError("layer_norm: gamma " + describe<SG>(gamma.extents()) + " and beta " + describe<SG>(beta.extents()) +
                     " do not match the last axis of " + describe<S>(x.extents()));
  }
  const bool needs_grad = tape.recording() && (x.requires_grad() || gamma.requires_grad() || beta.requires_grad());
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::layer_norm_cuda(tape, x, gamma, beta, eps, needs_grad);
#endif
  } else {
    auto mu = ctdl::mean(x.value(), last_axis);
    auto rstd = ctdl::mean(square(x.value() - mu), last_axis);
    rstd = rsqrt(lazy(rstd) + eps);
    Tensor<T, S> value = (x.value() - mu) * rstd * gamma.value() + beta.value();
    return detail::layer_norm_result(tape, x, gamma, beta, needs_grad, std::move(value), std::move(mu),
                                     std::move(rstd));
  }
}

}  // namespace ctdl::ops

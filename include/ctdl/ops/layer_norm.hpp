#pragma once
// layer_norm over the last axis (biased variance, as BERT and torch.nn.LayerNorm).
//
// Shape contract: x is Var<T, S> with S = Shape<..., H>; gamma and beta are Var<T, Shape<H>>.
//   mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)       (row-wise)
//   xhat = (x - mu) * rstd,  y = xhat * gamma + beta
// Backward, with g = dy * gamma:
//   dx     += rstd * (g - mean(g) - xhat * mean(g * xhat))                  (row-wise)
//   dgamma += sum over rows of dy * xhat,   dbeta += sum over rows of dy
// mu and rstd (one per row) are kept for backward; xhat is recomputed.
// eps: BERT's default is 1e-12 (bert_config.json `layer_norm_eps`).

#include <memory>

#include "ctdl/autograd/tape.hpp"

namespace ctdl::ops {

template <class T, class S, class SG>
Var<T, S> layer_norm(Tape& tape, const Var<T, S>& x, const Var<T, SG>& gamma, const Var<T, SG>& beta,
                     double eps = 1e-12);

// ============================================================================

namespace detail {

template <class T, class S, class SG>
struct LayerNormEntry final : TapeEntry {
  using SR = last_to_one_t<S>;
  Var<T, S> x;
  GradRef<T, S> y;
  Var<T, SG> gamma;
  GradRef<T, SG> beta;
  Tensor<T, SR> mu, rstd;
  LayerNormEntry(Var<T, S> x_, GradRef<T, S> y_, Var<T, SG> g_, GradRef<T, SG> b_, Tensor<T, SR> mu_, Tensor<T, SR> rstd_)
      : x(std::move(x_)), y(std::move(y_)), gamma(std::move(g_)), beta(std::move(b_)), mu(std::move(mu_)),
        rstd(std::move(rstd_)) {}
  const char* name() const override { return "layer_norm"; }

  void backward() override {
    if (!y.has_grad()) return;
    const auto& dy = y.grad();
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
};

}  // namespace detail

template <class T, class S, class SG>
Var<T, S> layer_norm(Tape& tape, const Var<T, S>& x, const Var<T, SG>& gamma, const Var<T, SG>& beta, double eps) {
  static_assert(SG::rank == 1 && S::rank >= 1, "layer_norm: gamma and beta are vectors over x's last axis");
  static_assert(SG::static_extents[0] == dyn || S::static_extents[S::rank - 1] == dyn ||
                    SG::static_extents[0] == S::static_extents[S::rank - 1],
                "layer_norm: the static width of gamma differs from x's last extent");
  if (gamma.extents()[0] != x.extents()[S::rank - 1] || beta.extents() != gamma.extents()) {
    throw ShapeError("layer_norm: gamma " + describe<SG>(gamma.extents()) + " and beta " + describe<SG>(beta.extents()) +
                     " do not match the last axis of " + describe<S>(x.extents()));
  }
  auto mu = ctdl::mean(x.value(), last_axis);
  auto rstd = ctdl::mean(square(x.value() - mu), last_axis);
  rstd = rsqrt(lazy(rstd) + eps);
  Tensor<T, S> value = (x.value() - mu) * rstd * gamma.value() + beta.value();
  const bool needs_grad = tape.recording() && (x.requires_grad() || gamma.requires_grad() || beta.requires_grad());
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<detail::LayerNormEntry<T, S, SG>>(x, y, gamma, beta, std::move(mu), std::move(rstd)));
  }
  return y;
}

}  // namespace ctdl::ops

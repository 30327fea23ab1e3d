#pragma once
// LAMB as NVIDIA's BERT recipes use it (You et al. 2019, with bias correction):
//   t = 1, 2, ...
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + wd w
//   w = w - lr r u,   r = ||w|| / ||u|| when both are non-zero, else 1
// Biases and LayerNorm parameters get neither weight decay nor the trust ratio (r = 1).
// Two passes per tensor: m, v and the norms together, then w.

#include <cmath>

#include "ctdl/optim/optimizer.hpp"

namespace ctdl::optim {

class Lamb {
 public:
  using Options = AdamOptions;

  /// The trust ratio reads each tensor's whole norm: not sliceable (dist::ShardedOptimizer).
  static constexpr bool elementwise = false;

  Lamb() = default;
  explicit Lamb(Options options) : options_(options) {}

  const Options& options() const { return options_; }
  std::int64_t steps() const { return steps_; }
  /// Sets the step count (a resumed run's optimizer: its bias correction continues from it).
  void set_steps(std::int64_t steps) { steps_ = steps; }
  SlotSet& m() { return m_; }
  SlotSet& v() { return v_; }
  const SlotSet& m() const { return m_; }
  const SlotSet& v() const { return v_; }

  template <nn::Module M>
  void step(M& model, float lr, float grad_scale = 1.f) {
    const AdamCoefficients c(options_);
    // Plain locals, not a structured binding: clang before 16 cannot capture those in a lambda.
    const float b1 = c.b1, b2 = c.b2, a1 = c.a1, a2 = c.a2, eps = c.eps, decay = c.decay;
    const auto t = static_cast<double>(steps_ + 1);
    const auto c1 = static_cast<float>(1 / (1 - std::pow(options_.beta1, t)));
    const auto c2 = static_cast<float>(1 / (1 - std::pow(options_.beta2, t)));
    for_each_trained(model, [&](std::size_t k, const std::string&, auto& p) {
      auto w = flat(p.value());
      const auto g = lazy(flat(p.grad())) * grad_scale;
      auto& m = m_.at(k, w.size());
      auto& v = v_.at(k, w.size());
      const bool adapt = p.weight_decay();  // decayed parameters also get the trust ratio
      const float wd = adapt ? decay : 0.f;
      // pass 1: the moments
      expr::assign_together(w.size(), std::tuple{m.data(), v.data()}, lazy(m) * b1 + g * a1,
                            lazy(v) * b2 + square(g) * a2);
      const auto u = (lazy(m) * c1) / (sqrt(lazy(v) * c2) + eps) + lazy(w) * wd;
      float ratio = 1.f;
      if (adapt) {
        const double w_norm = std::sqrt(sum_squares(lazy(w), w.size()));
        const double u_norm = std::sqrt(sum_squares(u, w.size()));
        if (w_norm > 0 && u_norm > 0) ratio = static_cast<float>(w_norm / u_norm);
      }
      // pass 2: the weights
      expr::assign_together(w.size(), std::tuple{w.data()}, lazy(w) - u * (lr * ratio));
    });
    ++steps_;
  }

 private:
  template <class E>
  static double sum_squares(const E& e, index_t n) {
    const auto ev = e.template make_eval<1>(std::array<index_t, 1>{n});
    return ordered_sum_of_squares(n, [&ev](index_t i) { return static_cast<double>(ev.at_flat(i)); });
  }

  Options options_;
  SlotSet m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace ctdl::optim

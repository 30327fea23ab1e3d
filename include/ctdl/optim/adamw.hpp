#pragma once
// AdamW as BERT's AdamWeightDecayOptimizer (Google's optimization.py):
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g^2
//   w = w - lr (m / (sqrt(v) + eps) + wd w)        wd = 0 for biases and LayerNorm
// No bias correction. Defaults beta1 0.9, beta2 0.999, eps 1e-6, weight decay 0.01.
// One fused loop per tensor updates m, v and w together.

#include "ctdl/optim/optimizer.hpp"

namespace ctdl::optim {

class AdamW {
 public:
  using Options = AdamOptions;

  /// Each element's update reads that element alone (dist::ShardedOptimizer may slice it).
  static constexpr bool elementwise = true;

  AdamW() = default;
  explicit AdamW(Options options) : options_(options) {}

  const Options& options() const { return options_; }
  std::int64_t steps() const { return steps_; }
  /// Sets the step count (a resumed run's optimizer; its moments are restored into m(), v()).
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
    for_each_trained(model, [&](std::size_t k, const std::string&, auto& p) {
      auto w = flat(p.value());
      const auto g = lazy(flat(p.grad())) * grad_scale;
      auto& m = m_.at(k, w.size());
      auto& v = v_.at(k, w.size());
      const float wd = p.weight_decay() ? decay : 0.f;
      const auto m_new = lazy(m) * b1 + g * a1;
      const auto v_new = lazy(v) * b2 + square(g) * a2;
      const auto w_new = lazy(w) - (m_new / (sqrt(v_new) + eps) + lazy(w) * wd) * lr;
      expr::assign_together(w.size(), std::tuple{m.data(), v.data(), w.data()}, m_new, v_new, w_new);
    });
    ++steps_;
  }

 private:
  Options options_;
  SlotSet m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace ctdl::optim

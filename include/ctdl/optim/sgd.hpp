#pragma once
// SGD with momentum, as PyTorch's torch.optim.SGD (dampening 0, not Nesterov):
//   b = momentum b + g (+ wd w for decayed parameters),   w = w - lr b
// With momentum 0 it is plain gradient descent. One fused loop per tensor.

#include "ctdl/optim/optimizer.hpp"

namespace ctdl::optim {

class Sgd {
 public:
  struct Options {
    double momentum = 0.9;
    double weight_decay = 0.0;
  };

  /// Each element's update reads that element alone (dist::ShardedOptimizer may slice it).
  static constexpr bool elementwise = true;

  Sgd() = default;
  explicit Sgd(Options options) : options_(options) {}

  const Options& options() const { return options_; }
  std::int64_t steps() const { return steps_; }
  /// Sets the step count (a resumed run's, or one a device step counted).
  void set_steps(std::int64_t steps) { steps_ = steps; }
  /// The momentum buffers, one per parameter (a checkpoint or a device copy reads them).
  SlotSet& buffer() { return buffer_; }
  const SlotSet& buffer() const { return buffer_; }

  template <nn::Module M>
  void step(M& model, float lr, float grad_scale = 1.f) {
    for_each_trained(model, [&](std::size_t k, const std::string&, auto& p) {
      auto w = flat(p.value());
      const float wd = p.weight_decay() ? static_cast<float>(options_.weight_decay) : 0.f;
      const auto g = lazy(flat(p.grad())) * grad_scale + lazy(w) * wd;
      auto& b = buffer_.at(k, w.size());
      // PyTorch starts the buffer at the first gradient: b = g on step 1, which is what
      // momentum * 0 + g gives.
      const auto b_new = lazy(b) * static_cast<float>(options_.momentum) + g;
      expr::assign_together(w.size(), std::tuple{b.data(), w.data()}, b_new, lazy(w) - b_new * lr);
    });
    ++steps_;
  }

 private:
  Options options_;
  SlotSet buffer_;
  std::int64_t steps_ = 0;
};

}  // namespace ctdl::optim

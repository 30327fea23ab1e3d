#pragma once
// What every optimizer shares: parameters seen flat, per-parameter state, the gradient
// utilities (global norm, finiteness), and the contract.
//
// Contract (concept Optimizer): `opt.step(model, lr, grad_scale)` updates every parameter
// of the module that has a gradient, reading grad * grad_scale (grad_scale folds together
// loss-scale removal, gradient clipping and the average over accumulation steps), with
// one fused loop per parameter tensor. It does not clear the gradients
// (nn::zero_grad does). Parameters without a gradient are left alone, as PyTorch and
// TensorFlow leave them. Per-parameter behaviour (no weight decay for biases and
// LayerNorm) comes from the parameter's own metadata (Var::weight_decay), set by the
// layer that owns it, never from its name.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>
#include <vector>

#include "ctdl/autograd/var.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/expr/expr.hpp"
#include "ctdl/nn/module.hpp"

namespace ctdl::optim {

using FlatTensor = Tensor<float, Shape<dyn>>;
using FlatView = TensorView<float, Shape<dyn>>;
using ConstFlatView = TensorView<const float, Shape<dyn>>;

template <class S>
FlatView flat(Tensor<float, S>& t) {
  return {t.data(), {t.size()}};
}
template <class S>
ConstFlatView flat(const Tensor<float, S>& t) {
  return {t.data(), {t.size()}};
}

/// One zero-filled state tensor per parameter, made the first time it is needed.
class SlotSet {
 public:
  FlatTensor& at(std::size_t param, index_t size) {
    if (param >= slots_.size()) slots_.resize(param + 1);
    auto& t = slots_[param];
    if (t.size() != size) t = FlatTensor({size});
    return t;
  }
  const std::vector<FlatTensor>& all() const { return slots_; }
  std::vector<FlatTensor>& all() { return slots_; }

 private:
  std::vector<FlatTensor> slots_;
};

/// The options Adam-type optimizers share (AdamW, Lamb): BERT's defaults.
struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-6;
  double weight_decay = 0.01;
};

/// AdamOptions as the float coefficients of the fused update. They are formed in double
/// and rounded once: in float, 1 - 0.999f is off by 1.3e-5 relative.
struct AdamCoefficients {
  float b1, b2, a1, a2, eps, decay;  // a = 1 - b
  explicit AdamCoefficients(const AdamOptions& o)
      : b1(static_cast<float>(o.beta1)), b2(static_cast<float>(o.beta2)), a1(static_cast<float>(1 - o.beta1)),
        a2(static_cast<float>(1 - o.beta2)), eps(static_cast<float>(o.epsilon)),
        decay(static_cast<float>(o.weight_decay)) {}
};

template <class O, class M>
concept Optimizer = nn::Module<M> && requires(O o, M& m, float lr, float grad_scale) {
  { o.step(m, lr, grad_scale) };
};

/// Calls fn(index, name, var) for every parameter that has a gradient; index counts all
/// parameters (so per-parameter state stays aligned whichever have gradients).
template <nn::Module M, class Fn>
void for_each_trained(M& model, Fn&& fn) {
  std::size_t index = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    const std::size_t k = index++;
    if (p.has_grad()) fn(k, name, p);
  });
}

/// Forgets every gradient (the next backward starts from zero).
template <nn::Module M>
void zero_grad(M& model) {
  nn::visit_parameters(model, [](const std::string&, auto& p) { p.zero_grad(); });
}

/// sum of at(i)^2 over i < n, in double, added in an order that depends on n only.
/// An OpenMP reduction adds the threads' partial sums in the order the threads finish, so
/// its last bits change from run to run; the clip factor and the LAMB trust ratio come
/// from such sums, and a resumed run must repeat an uninterrupted one bit for bit. So the
/// range is cut into fixed blocks, summed in parallel, and the block sums added in order.
template <class At>
double ordered_sum_of_squares(index_t n, At&& at) {
  constexpr index_t kBlock = index_t{1} << 14;
  const index_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (index_t b = 0; b < blocks; ++b) {
    double s = 0;
    for (index_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
      const double x = at(i);
      s += x * x;
    }
    partial[static_cast<std::size_t>(b)] = s;
  }
  double sum = 0;
  for (double s : partial) sum += s;
  return sum;
}

/// The sum of the squares of all gradients, in double, tensor by tensor in visiting order
/// (the same bits on every run, whatever the thread count).
template <nn::Module M>
double grad_sum_of_squares(M& model) {
  double sum = 0;
  for_each_trained(model, [&](std::size_t, const std::string&, auto& p) {
    const float* d = flat(p.grad()).data();
    sum += ordered_sum_of_squares(flat(p.grad()).size(), [d](index_t i) { return static_cast<double>(d[i]); });
  });
  return sum;
}

/// The global L2 norm of all gradients times grad_scale.
template <nn::Module M>
double global_grad_norm(M& model, float grad_scale = 1.f) {
  return std::sqrt(grad_sum_of_squares(model)) * grad_scale;
}

/// Whether every gradient is finite (no inf, no nan); the loss scaler's overflow check.
template <nn::Module M>
bool all_grads_finite(M& model) {
  bool finite = true;
  for_each_trained(model, [&](std::size_t, const std::string&, auto& p) {
    const auto g = flat(p.grad());
    const float* d = g.data();
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static) if (g.size() > (1 << 16))
    for (index_t i = 0; i < g.size(); ++i) bad |= !std::isfinite(d[i]);
    finite = finite && !bad;
  });
  return finite;
}

/// The factor that clips gradients to a global norm (TensorFlow's clip_by_global_norm):
/// max_norm / max(norm, max_norm); 1 when max_norm <= 0 (no clipping).
inline float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return 1.f;
  return static_cast<float>(max_norm / norm);
}

}  // namespace ctdl::optim

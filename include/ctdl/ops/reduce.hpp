#pragma once
// Reductions as tape ops: sum, mean, max over all elements or the last axis.
//
// Shape contract: x is any Var<T, S>. Over all elements the result is Var<T, Shape<>>;
// over the last axis it is Var<T, Shape<..., 1>> (the axis kept, so it broadcasts back).
//
// Forward: expr/reduce.hpp (accumulating in float for bf16/fp16).
// Backward, with g the upstream gradient broadcast back to x's extents:
//   sum:   dx += g
//   mean:  dx += g / n                       (n = elements reduced)
//   max:   dx += g * [x == max] / count      (ties share the gradient equally, as
//                                             torch.amax does)
// Device: CPU (the fused evaluator of expr/); the same functors serve CUDA.

#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/expr/expr.hpp"

namespace ctdl::ops {

template <class T, class S>
Var<T, Shape<>> sum(Tape& tape, const Var<T, S>& x);
template <class T, class S>
Var<T, Shape<>> mean(Tape& tape, const Var<T, S>& x);
template <class T, class S>
Var<T, Shape<>> max(Tape& tape, const Var<T, S>& x);
template <class T, class S>
Var<T, last_to_one_t<S>> sum(Tape& tape, const Var<T, S>& x, LastAxis);
template <class T, class S>
Var<T, last_to_one_t<S>> mean(Tape& tape, const Var<T, S>& x, LastAxis);
template <class T, class S>
Var<T, last_to_one_t<S>> max(Tape& tape, const Var<T, S>& x, LastAxis);

// ============================================================================

namespace detail {

enum class Reduction { sum, mean, max };

template <Reduction K, bool LastAxisOnly, class T, class S, class SO>
struct ReduceEntry final : TapeEntry {
  Var<T, S> x;
  Var<T, SO> y;
  ReduceEntry(Var<T, S> x_, Var<T, SO> y_) : x(std::move(x_)), y(std::move(y_)) {}
  const char* name() const override {
    return K == Reduction::sum ? "sum" : K == Reduction::mean ? "mean" : "max";
  }

  void backward() override {
    if (!y.has_grad()) return;
    const auto& g = y.grad();
    auto& xn = *x.node_ptr();
    if constexpr (K == Reduction::sum) {
      xn.accumulate(lazy(g));
    } else if constexpr (K == Reduction::mean) {
      const index_t n = LastAxisOnly ? (S::rank ? x.extents()[S::rank - 1] : 1) : x.value().size();
      xn.accumulate(lazy(g) / static_cast<double>(n));
    } else {
      const auto& m = y.value();
      auto hit = cast<T>(equal(x.value(), m));
      if constexpr (LastAxisOnly) {
        const auto count = ctdl::sum(hit, last_axis);
        xn.accumulate(where(equal(x.value(), m), lazy(g) / count, 0.0));
      } else {
        const auto count = ctdl::sum(hit);
        xn.accumulate(where(equal(x.value(), m), lazy(g) / count, 0.0));
      }
    }
  }
};

template <Reduction K, bool LastAxisOnly, class T, class S>
auto reduce(Tape& tape, const Var<T, S>& x) {
  auto value = [&] {
    if constexpr (LastAxisOnly) {
      if constexpr (K == Reduction::sum) return ctdl::sum(x.value(), last_axis);
      else if constexpr (K == Reduction::mean) return ctdl::mean(x.value(), last_axis);
      else return ctdl::max(x.value(), last_axis);
    } else {
      if constexpr (K == Reduction::sum) return ctdl::sum(x.value());
      else if constexpr (K == Reduction::mean) return ctdl::mean(x.value());
      else return ctdl::max(x.value());
    }
  }();
  using SO = typename decltype(value)::shape_type;
  const bool needs_grad = tape.recording() && x.requires_grad();
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) tape.push(std::make_unique<ReduceEntry<K, LastAxisOnly, T, S, SO>>(x, y));
  return y;
}

}  // namespace detail

template <class T, class S>
Var<T, Shape<>> sum(Tape& tape, const Var<T, S>& x) {
  return detail::reduce<detail::Reduction::sum, false>(tape, x);
}
template <class T, class S>
Var<T, Shape<>> mean(Tape& tape, const Var<T, S>& x) {
  return detail::reduce<detail::Reduction::mean, false>(tape, x);
}
template <class T, class S>
Var<T, Shape<>> max(Tape& tape, const Var<T, S>& x) {
  return detail::reduce<detail::Reduction::max, false>(tape, x);
}
template <class T, class S>
Var<T, last_to_one_t<S>> sum(Tape& tape, const Var<T, S>& x, LastAxis) {
  return detail::reduce<detail::Reduction::sum, true>(tape, x);
}
template <class T, class S>
Var<T, last_to_one_t<S>> mean(Tape& tape, const Var<T, S>& x, LastAxis) {
  return detail::reduce<detail::Reduction::mean, true>(tape, x);
}
template <class T, class S>
Var<T, last_to_one_t<S>> max(Tape& tape, const Var<T, S>& x, LastAxis) {
  return detail::reduce<detail::Reduction::max, true>(tape, x);
}

}  // namespace ctdl::ops

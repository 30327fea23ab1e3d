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
// Devices: CPU (the fused evaluator of expr/). CUDA: sum and mean forward on
// kernels/cuda/reduce.cuh (float accumulation in an order fixed by the sizes), backward
// through the device evaluator; max is CPU-only (no BERT path needs it on the device).

#include <limits>
#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/expr/expr.hpp"
#include "ctdl/ops/dispatch.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/reduce.cuh"
#endif

namespace ctdl::ops {

template <class T, class S, Device D>
Var<T, Shape<>, D> sum(Tape& tape, const Var<T, S, D>& x);
template <class T, class S, Device D>
Var<T, Shape<>, D> mean(Tape& tape, const Var<T, S, D>& x);
template <class T, class S, Device D>
Var<T, Shape<>, D> max(Tape& tape, const Var<T, S, D>& x);
template <class T, class S, Device D>
Var<T, last_to_one_t<S>, D> sum(Tape& tape, const Var<T, S, D>& x, LastAxis);
template <class T, class S, Device D>
Var<T, last_to_one_t<S>, D> mean(Tape& tape, const Var<T, S, D>& x, LastAxis);
template <class T, class S, Device D>
Var<T, last_to_one_t<S>, D> max(Tape& tape, const Var<T, S, D>& x, LastAxis);

// ============================================================================

namespace detail {

enum class Reduction { sum, mean, max };

template <Reduction K, bool LastAxisOnly, class T, class S, class SO, class D>
struct ReduceEntry final : TapeEntry {
  Var<T, S, D> x;
  Var<T, SO, D> y;
  ReduceEntry(Var<T, S, D> x_, Var<T, SO, D> y_) : x(std::move(x_)), y(std::move(y_)) {}
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

#if CTDL_CUDA_OPS
/// The CUDA forward of sum and mean (max has no device kernel).
template <Reduction K, bool LastAxisOnly, class T, class S>
auto reduce_value_cuda(const Tensor<T, S, Cuda>& x) {
  static_assert(K != Reduction::max, "ops::max: not on CUDA devices (no kernel yet); reduce on the host");
  constexpr bool mean = K == Reduction::mean;
  if constexpr (LastAxisOnly) {
    static_assert(S::rank >= 1, "a last-axis reduction needs rank >= 1");
    Extents<last_to_one_t<S>> eo = x.extents();
    eo[S::rank - 1] = 1;
    auto y = Tensor<T, last_to_one_t<S>, Cuda>::uninitialized(eo);
    const index_t cols = x.extent(S::rank - 1), rows = cols ? x.size() / cols : 0;
    if (cols == 0) {
      y.fill(mean ? T(std::numeric_limits<float>::quiet_NaN()) : T(0));  // the CPU's empty sum, and its 0 / 0
    } else if (mean) {
      cuda::row_means(x.data(), y.data(), rows, cols);
    } else {
      cuda::row_sums(x.data(), y.data(), rows, cols);
    }
    return y;
  } else {
    Tensor<T, Shape<>, Cuda> y;
    if (mean && x.size() == 0) {  // the CPU's 0 / 0
      y.fill(T(std::numeric_limits<float>::quiet_NaN()));
      return y;
    }
    Tensor<float, Shape<dyn>, Cuda> workspace({cuda::full_sum_workspace(x.size())});
    if (mean) cuda::mean_all(x.data(), y.data(), x.size(), workspace.data());
    else cuda::sum_all(x.data(), y.data(), x.size(), workspace.data());
    return y;
  }
}
#endif

template <Reduction K, bool LastAxisOnly, class T, class S, class D>
auto reduce(Tape& tape, const Var<T, S, D>& x) {
  require_kernels<D>();
  auto value = [&] {
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      return reduce_value_cuda<K, LastAxisOnly>(x.value());
#endif
    } else if constexpr (LastAxisOnly) {
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
  if (needs_grad) tape.push(std::make_unique<ReduceEntry<K, LastAxisOnly, T, S, SO, D>>(x, y));
  return y;
}

}  // namespace detail

template <class T, class S, Device D>
Var<T, Shape<>, D> sum(Tape& tape, const Var<T, S, D>& x) {
  return detail::reduce<detail::Reduction::sum, false>(tape, x);
}
template <class T, class S, Device D>
Var<T, Shape<>, D> mean(Tape& tape, const Var<T, S, D>& x) {
  return detail::reduce<detail::Reduction::mean, false>(tape, x);
}
template <class T, class S, Device D>
Var<T, Shape<>, D> max(Tape& tape, const Var<T, S, D>& x) {
  return detail::reduce<detail::Reduction::max, false>(tape, x);
}
template <class T, class S, Device D>
Var<T, last_to_one_t<S>, D> sum(Tape& tape, const Var<T, S, D>& x, LastAxis) {
  return detail::reduce<detail::Reduction::sum, true>(tape, x);
}
template <class T, class S, Device D>
Var<T, last_to_one_t<S>, D> mean(Tape& tape, const Var<T, S, D>& x, LastAxis) {
  return detail::reduce<detail::Reduction::mean, true>(tape, x);
}
template <class T, class S, Device D>
Var<T, last_to_one_t<S>, D> max(Tape& tape, const Var<T, S, D>& x, LastAxis) {
  return detail::reduce<detail::Reduction::max, true>(tape, x);
}

}  // namespace ctdl::ops

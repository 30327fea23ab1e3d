#pragma once
// linear: y = x W^T + b, with W stored [out, in] as in Hugging Face checkpoints.
//
// Shape contract: x is Var<T, Shape<dyn, In>>, weight Var<T, Shape<Out, In>>,
// bias Var<T, Shape<Out>>; y is Var<T, Shape<dyn, Out>>.
// Backward: dx += dy W,  dW += dy^T x,  db += sum over rows of dy.
// The products run on kernels/cpu/matmul.hpp; the bias is added in one fused pass.
// linear<G>: the products take their inputs rounded to element type G (bf16 under the
// Bf16Mixed policy) and accumulate in T; the rounded x and W are kept for backward.

#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/matmul.hpp"

namespace ctdl::ops {

template <class G = SameAsInput, class T, index_t In, index_t Out, index_t XIn>
Var<T, Shape<dyn, Out>> linear(Tape& tape, const Var<T, Shape<dyn, XIn>>& x, const Var<T, Shape<Out, In>>& weight,
                               const Var<T, Shape<Out>>& bias);

// ============================================================================

namespace detail {

template <class G, class T, index_t In, index_t Out, index_t XIn>
struct LinearEntry final : TapeEntry {
  Var<T, Shape<dyn, XIn>> x;
  Var<T, Shape<Out, In>> w;
  Var<T, Shape<Out>> b;
  Var<T, Shape<dyn, Out>> y;
  Tensor<G, Shape<dyn, XIn>> xg;  // x and W rounded to G, when G is not T
  Tensor<G, Shape<Out, In>> wg;
  LinearEntry(Var<T, Shape<dyn, XIn>> x_, Var<T, Shape<Out, In>> w_, Var<T, Shape<Out>> b_, Var<T, Shape<dyn, Out>> y_,
              Tensor<G, Shape<dyn, XIn>> xg_, Tensor<G, Shape<Out, In>> wg_)
      : x(std::move(x_)), w(std::move(w_)), b(std::move(b_)), y(std::move(y_)), xg(std::move(xg_)), wg(std::move(wg_)) {}
  const char* name() const override { return "linear"; }
  void backward() override {
    if (!y.has_grad()) return;
    const index_t n = x.extents()[0], in = x.extents()[1], out = w.extents()[0];
    decltype(auto) dy = as_gemm_input<G>(y.grad());
    const G* xv = gemm_data(x.value(), xg);
    const G* wv = gemm_data(w.value(), wg);
    if (x.requires_grad()) {  // dx (n x in) = dy (n x out) W (out x in)
      kernels::cpu::matmul(dy.data(), wv, x.node_ptr()->grad_data(), {1, n, in, out, false, false}, 1.0f);
    }
    if (w.requires_grad()) {  // dW (out x in) = dy^T (out x n) x (n x in)
      kernels::cpu::matmul(dy.data(), xv, w.node_ptr()->grad_data(), {1, out, in, n, true, false}, 1.0f);
    }
    if (b.requires_grad()) b.node_ptr()->accumulate(lazy(y.grad()));
  }
};

}  // namespace detail

template <class GIn, class T, index_t In, index_t Out, index_t XIn>
Var<T, Shape<dyn, Out>> linear(Tape& tape, const Var<T, Shape<dyn, XIn>>& x, const Var<T, Shape<Out, In>>& weight,
                               const Var<T, Shape<Out>>& bias) {
  using G = gemm_input_t<GIn, T>;
  static_assert(In == dyn || XIn == dyn || In == XIn, "linear: x's width differs from the weight's input width");
  const index_t n = x.extents()[0], in = x.extents()[1], out = weight.extents()[0];
  if (weight.extents()[1] != in || bias.extents()[0] != out) {
    throw ShapeError("linear: x " + describe<Shape<dyn, XIn>>(x.extents()) + ", weight " +
                     describe<Shape<Out, In>>(weight.extents()) + ", bias " + describe<Shape<Out>>(bias.extents()) +
                     " do not fit y = x W^T + b");
  }
  Tensor<G, Shape<dyn, XIn>> xg;
  Tensor<G, Shape<Out, In>> wg;
  if constexpr (!std::is_same_v<G, T>) {
    xg = Tensor<G, Shape<dyn, XIn>>(cast<G>(x.value()));
    wg = Tensor<G, Shape<Out, In>>(cast<G>(weight.value()));
  }
  const G* xv = gemm_data(x.value(), xg);
  const G* wv = gemm_data(weight.value(), wg);
  auto value = Tensor<T, Shape<dyn, Out>>::uninitialized({n, out});
  kernels::cpu::matmul(xv, wv, value.data(), {1, n, out, in, false, true}, 0.0f);
  value += lazy(bias.value());
  const bool needs_grad = tape.recording() && (x.requires_grad() || weight.requires_grad() || bias.requires_grad());
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<detail::LinearEntry<G, T, In, Out, XIn>>(x, weight, bias, y, std::move(xg), std::move(wg)));
  }
  return y;
}

}  // namespace ctdl::ops

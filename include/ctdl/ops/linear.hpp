#pragma once
// linear: y = x W^T + b, with W stored [out, in] as in Hugging Face checkpoints.
//
// Shape contract: x is Var<T, Shape<dyn, In>>, weight Var<T, Shape<Out, In>>,
// bias Var<T, Shape<Out>>; y is Var<T, Shape<dyn, Out>>.
// Backward: dx += dy W,  dW += dy^T x,  db += sum over rows of dy.
// The products run on kernels/cpu/matmul.hpp; the bias is added in one fused pass.

#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/matmul.hpp"

namespace ctdl::ops {

template <class T, index_t In, index_t Out, index_t XIn>
Var<T, Shape<dyn, Out>> linear(Tape& tape, const Var<T, Shape<dyn, XIn>>& x, const Var<T, Shape<Out, In>>& weight,
                               const Var<T, Shape<Out>>& bias);

// ============================================================================

namespace detail {

template <class T, index_t In, index_t Out, index_t XIn>
struct LinearEntry final : TapeEntry {
  Var<T, Shape<dyn, XIn>> x;
  Var<T, Shape<Out, In>> w;
  Var<T, Shape<Out>> b;
  Var<T, Shape<dyn, Out>> y;
  LinearEntry(Var<T, Shape<dyn, XIn>> x_, Var<T, Shape<Out, In>> w_, Var<T, Shape<Out>> b_, Var<T, Shape<dyn, Out>> y_)
      : x(std::move(x_)), w(std::move(w_)), b(std::move(b_)), y(std::move(y_)) {}
  const char* name() const override { return "linear"; }
  void backward() override {
    if (!y.has_grad()) return;
    const auto& dy = y.grad();
    const index_t n = x.extents()[0], in = x.extents()[1], out = w.extents()[0];
    if (x.requires_grad()) {  // dx (n x in) = dy (n x out) W (out x in)
      kernels::cpu::matmul(dy.data(), w.value().data(), x.node_ptr()->grad_data(), {1, n, in, out, false, false}, 1.0f);
    }
    if (w.requires_grad()) {  // dW (out x in) = dy^T (out x n) x (n x in)
      kernels::cpu::matmul(dy.data(), x.value().data(), w.node_ptr()->grad_data(), {1, out, in, n, true, false}, 1.0f);
    }
    if (b.requires_grad()) b.node_ptr()->accumulate(lazy(dy));
  }
};

}  // namespace detail

template <class T, index_t In, index_t Out, index_t XIn>
Var<T, Shape<dyn, Out>> linear(Tape& tape, const Var<T, Shape<dyn, XIn>>& x, const Var<T, Shape<Out, In>>& weight,
                               const Var<T, Shape<Out>>& bias) {
  static_assert(In == dyn || XIn == dyn || In == XIn, "linear: x's width differs from the weight's input width");
  const index_t n = x.extents()[0], in = x.extents()[1], out = weight.extents()[0];
  if (weight.extents()[1] != in || bias.extents()[0] != out) {
    throw ShapeError("linear: x " + describe<Shape<dyn, XIn>>(x.extents()) + ", weight " +
                     describe<Shape<Out, In>>(weight.extents()) + ", bias " + describe<Shape<Out>>(bias.extents()) +
                     " do not fit y = x W^T + b");
  }
  auto value = Tensor<T, Shape<dyn, Out>>::uninitialized({n, out});
  kernels::cpu::matmul(x.value().data(), weight.value().data(), value.data(), {1, n, out, in, false, true}, 0.0f);
  value += lazy(bias.value());
  const bool needs_grad = tape.recording() && (x.requires_grad() || weight.requires_grad() || bias.requires_grad());
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) tape.push(std::make_unique<detail::LinearEntry<T, In, Out, XIn>>(x, weight, bias, y));
  return y;
}

}  // namespace ctdl::ops

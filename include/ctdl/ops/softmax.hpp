#pragma once
// softmax over the last axis, optionally after adding a constant additive mask that
// broadcasts to x (BERT's (1 - mask) * -10000).
//
// Shape contract: x is Var<T, S>, rank >= 1; mask (optional) is a tensor of T whose
// shape broadcasts to S; y has x's shape.
//   y = exp(z - max(z)) / sum(exp(z - max(z))),  z = x + mask   (row-wise)
// Backward (the mask is a constant):
//   dx += y * (dy - sum(dy * y))                                  (row-wise)
// Three fused passes forward (max, exp-and-sum, normalise), two backward; sums
// accumulate in float for bf16/fp16.

#include <memory>

#include "ctdl/autograd/tape.hpp"

namespace ctdl::ops {

template <class T, class S>
Var<T, S> softmax(Tape& tape, const Var<T, S>& x);
template <class T, class S, class SM>
Var<T, S> softmax(Tape& tape, const Var<T, S>& x, const Tensor<T, SM>& additive_mask);

// ============================================================================

namespace detail {

template <class T, class S>
struct SoftmaxEntry final : TapeEntry {
  GradRef<T, S> x;
  Var<T, S> y;  // backward reads y, not x
  SoftmaxEntry(GradRef<T, S> x_, Var<T, S> y_) : x(std::move(x_)), y(std::move(y_)) {}
  const char* name() const override { return "softmax"; }
  void backward() override {
    if (!y.has_grad()) return;
    const auto& dy = y.grad();
    const auto& yv = y.value();
    const auto dot = ctdl::sum(dy * yv, last_axis);
    x.node_ptr()->accumulate(yv * (dy - dot));
  }
};

template <class T, class S, class Z>
Var<T, S> softmax_of(Tape& tape, const Var<T, S>& x, const Z& z) {
  static_assert(S::rank >= 1, "softmax needs rank >= 1");
  const auto m = ctdl::max(z, last_axis);
  Tensor<T, S> e = exp(z - m);
  const auto s = ctdl::sum(e, last_axis);
  e = lazy(e) / s;
  const bool needs_grad = tape.recording() && x.requires_grad();
  auto y = make_result(std::move(e), needs_grad);
  if (needs_grad) tape.push(std::make_unique<SoftmaxEntry<T, S>>(x, y));
  return y;
}

}  // namespace detail

template <class T, class S>
Var<T, S> softmax(Tape& tape, const Var<T, S>& x) {
  return detail::softmax_of(tape, x, lazy(x.value()));
}

template <class T, class S, class SM>
Var<T, S> softmax(Tape& tape, const Var<T, S>& x, const Tensor<T, SM>& additive_mask) {
  return detail::softmax_of(tape, x, x.value() + additive_mask);
}

}  // namespace ctdl::ops

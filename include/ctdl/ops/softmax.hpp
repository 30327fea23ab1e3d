#pragma once
// softmax over the last axis, optionally after adding a constant additive mask that
// broadcasts to x (BERT's (1 - mask) * -10000).
//
// Shape contract: x is Var<T, S, D>, rank >= 1; mask (optional) is a tensor of T on the
// same device whose shape broadcasts to S; y has x's shape.
//   y = exp(z - max(z)) / sum(exp(z - max(z))),  z = x + mask   (row-wise)
// Backward (the mask is a constant):
//   dx += y * (dy - sum(dy * y))                                  (row-wise)
// CPU: three fused passes forward (max, exp-and-sum, normalise), two backward; sums
// accumulate in float for bf16/fp16. CUDA: kernels/cuda/softmax.cuh, one block per row,
// with the CPU's rounding points.

#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/dispatch.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/softmax.cuh"
#endif

namespace ctdl::ops {

template <class T, class S, Device D>
Var<T, S, D> softmax(Tape& tape, const Var<T, S, D>& x);
template <class T, class S, Device D, class SM>
Var<T, S, D> softmax(Tape& tape, const Var<T, S, D>& x, const Tensor<T, SM, D>& additive_mask);

// ============================================================================

namespace detail {

template <class T, class S, class D>
struct SoftmaxEntry final : TapeEntry {
  GradRef<T, S, D> x;
  Var<T, S, D> y;  // backward reads y, not x
  SoftmaxEntry(GradRef<T, S, D> x_, Var<T, S, D> y_) : x(std::move(x_)), y(std::move(y_)) {}
  const char* name() const override { return "softmax"; }
  void backward() override {
    if (!y.has_grad()) return;
    const auto& dy = y.grad();
    const auto& yv = y.value();
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      const index_t n = yv.extent(S::rank - 1);
      T* dx = x.node_ptr()->grad_data();  // made even for an empty x, as the CPU's accumulate does
      if (yv.size() != 0)  // nothing to add for an empty x (the kernel wants rows of at least one)
        cuda::softmax_backward(yv.data(), dy.data(), dx, yv.size() / n, n);
#endif
    } else {
      const auto dot = ctdl::sum(dy * yv, last_axis);
      x.node_ptr()->accumulate(yv * (dy - dot));
    }
  }
};

template <class T, class S, class D>
Var<T, S, D> softmax_result(Tape& tape, const Var<T, S, D>& x, Tensor<T, S, D> value) {
  const bool needs_grad = tape.recording() && x.requires_grad();
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) tape.push(std::make_unique<SoftmaxEntry<T, S, D>>(x, y));
  return y;
}

template <class T, class S, class Z>
Var<T, S> softmax_of(Tape& tape, const Var<T, S>& x, const Z& z) {
  // No rows, or rows of no element: an empty y (max has no value to shift by).
  if (x.value().size() == 0) return softmax_result(tape, x, Tensor<T, S>::uninitialized(x.value().extents()));
  const auto m = ctdl::max(z, last_axis);
  Tensor<T, S> e = exp(z - m);
  const auto s = ctdl::sum(e, last_axis);
  e = lazy(e) / s;
  return softmax_result(tape, x, std::move(e));
}

#if CTDL_CUDA_OPS
/// The CUDA forward: mask null, or a tensor broadcasting to x.
template <class T, class S, class SM>
Var<T, S, Cuda> softmax_cuda(Tape& tape, const Var<T, S, Cuda>& x, const Tensor<T, SM, Cuda>* mask) {
  const auto& xv = x.value();
  const index_t n = xv.extent(S::rank - 1), rows = n ? xv.size() / n : 0;
  auto y = Tensor<T, S, Cuda>::uninitialized(xv.extents());
  if (xv.size() == 0) {  // an empty y, as on the CPU (the kernels want rows of at least one)
  } else if (mask) {
    const auto layout = cuda::mask_layout(xv.extents(), mask->extents());
    cuda::softmax_forward(xv.data(), mask->data(), layout, y.data(), rows, n);
  } else {
    cuda::softmax_forward(xv.data(), y.data(), rows, n);
  }
  return softmax_result(tape, x, std::move(y));
}
#endif

}  // namespace detail

template <class T, class S, Device D>
Var<T, S, D> softmax(Tape& tape, const Var<T, S, D>& x) {
  static_assert(S::rank >= 1, "softmax needs rank >= 1");
  require_kernels<D>();
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::softmax_cuda(tape, x, static_cast<const Tensor<T, Shape<>, Cuda>*>(nullptr));
#endif
  } else {
    return detail::softmax_of(tape, x, lazy(x.value()));
  }
}

template <class T, class S, Device D, class SM>
Var<T, S, D> softmax(Tape& tape, const Var<T, S, D>& x, const Tensor<T, SM, D>& additive_mask) {
  static_assert(S::rank >= 1, "softmax needs rank >= 1");
  require_kernels<D>();
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    return detail::softmax_cuda(tape, x, &additive_mask);
#endif
  } else {
    return detail::softmax_of(tape, x, x.value() + additive_mask);
  }
}

}  // namespace ctdl::ops

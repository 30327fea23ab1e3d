#pragma once
// dropout: y = x * keep / (1 - p), keep = [u >= p] with u uniform in [0, 1) from the
// Philox stream of (seed, step, rank, tensor id), element by element.
//
// Shape contract: any Var<T, S, D>; y has x's shape and device. p in [0, 1); p = 0 (or
// eval mode) is the identity and records nothing.
// Backward: dx += dy * keep / (1 - p), regenerating keep from the same stream (no mask
// is stored), so forward and backward agree bit for bit and results do not depend on
// the thread count.
// CPU: apply_dropout below. CUDA: kernels/cuda/dropout.cuh, which draws element i's
// decision from the same Philox call (uniform4(i / 4)[i % 4]): the same mask on both.

#include <omp.h>

#include <algorithm>
#include <memory>
#include <string>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/core/philox.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/ops/dropout_mask.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/dropout.cuh"
#endif

namespace ctdl::ops {

template <class T, class S, Device D>
Var<T, S, D> dropout(Tape& tape, const Var<T, S, D>& x, float p, const RandomStream& stream);

// ============================================================================

namespace detail {

/// Elements per chunk of uniforms drawn at once: Philox::kLanes blocks of four.
inline constexpr index_t kKeepChunk = 4 * Philox::kLanes;

/// Calls fn(j, keep) for j in [0, n): the dropout decision of element first + j
/// (identical to stream.uniform(first + j) >= p), the uniforms drawn kKeepChunk elements
/// at a time from the aligned blocks that cover the range.
template <class Fn>
void for_each_keep(const RandomStream& stream, float p, std::uint64_t first, index_t n, Fn&& fn) {
  float u[kKeepChunk];
  const std::uint64_t end = first + static_cast<std::uint64_t>(n);
  for (std::uint64_t block = first / 4; 4 * block < end; block += Philox::kLanes) {
    stream.uniform_blocks(block, Philox::kLanes, u);
    const std::uint64_t lo = std::max(first, 4 * block), hi = std::min(end, 4 * block + kKeepChunk);
    for (std::uint64_t idx = lo; idx < hi; ++idx) fn(static_cast<index_t>(idx - first), u[idx - 4 * block] >= p);
  }
}

/// out[i] (+)= in[i] * keep(i) * scale, the uniforms drawn kKeepChunk elements at a time.
template <bool Accumulate, class T>
void apply_dropout(const T* in, T* out, index_t n, const DropoutMask& mask) {
  using C = compute_t<T>;
  const C scale = C(1) / (C(1) - static_cast<C>(mask.p));
  const index_t chunks = (n + kKeepChunk - 1) / kKeepChunk;
#pragma omp parallel for schedule(static) if (n >= expr::kParallelThreshold)
  for (index_t c = 0; c < chunks; ++c) {
    float u[kKeepChunk];
    mask.stream.uniform_blocks(static_cast<std::uint64_t>(c) * Philox::kLanes, Philox::kLanes, u);
    const index_t begin = c * kKeepChunk, end = std::min(n, begin + kKeepChunk);
    for (index_t i = begin; i < end; ++i) {
      const C v = u[i - begin] >= mask.p ? convert<C>(in[i]) * scale : C(0);
      if constexpr (Accumulate) out[i] = convert<T>(convert<C>(out[i]) + v);
      else out[i] = convert<T>(v);
    }
  }
}

template <class T, class S, class D>
struct DropoutEntry final : TapeEntry {
  GradRef<T, S, D> x, y;  // no values: the mask is regenerated
  DropoutMask mask;
  DropoutEntry(GradRef<T, S, D> x_, GradRef<T, S, D> y_, DropoutMask m) : x(std::move(x_)), y(std::move(y_)), mask(m) {}
  const char* name() const override { return "dropout"; }
  void backward() override {
    if (!y.has_grad()) return;
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      cuda::dropout_backward(y.grad().data(), x.node_ptr()->grad_data(), x.size(), mask);
#endif
    } else {
      apply_dropout<true>(y.grad().data(), x.node_ptr()->grad_data(), x.size(), mask);
    }
  }
};

}  // namespace detail

template <class T, class S, Device D>
Var<T, S, D> dropout(Tape& tape, const Var<T, S, D>& x, float p, const RandomStream& stream) {
  require_kernels<D>();
  if (!(p >= 0.0f && p < 1.0f)) throw Error("dropout: probability " + std::to_string(p) + " is not in [0, 1)");
  if (p == 0.0f) return x;
  const DropoutMask mask{stream, p};
  auto value = Tensor<T, S, D>::uninitialized(x.extents());
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    cuda::dropout_forward(x.value().data(), value.data(), value.size(), mask);
#endif
  } else {
    detail::apply_dropout<false>(x.value().data(), value.data(), value.size(), mask);
  }
  const bool needs_grad = tape.recording() && x.requires_grad();
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) tape.push(std::make_unique<detail::DropoutEntry<T, S, D>>(x, y, mask));
  return y;
}

}  // namespace ctdl::ops

#pragma once
// Evaluation of an elementwise expression on a CUDA device: the device twin of
// expr/eval.hpp, running the same evaluators and CTDL_HOST_DEVICE functors. One thread
// per output element; the flat path when no operand is broadcast, otherwise each thread
// seeks its row through the broadcast strides.
//
// The expression's leaves must point to device memory (Tensor<T, S, Cuda>). Including
// this header also makes `device_tensor = expression` use it (DeviceEvaluator<Cuda>).

#include <cuda_runtime.h>

#include <array>
#include <string>

#include "ctdl/core/error.hpp"
#include "ctdl/expr/eval.hpp"
#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::cuda {

namespace detail {

template <StoreOp Op, class Ev, class T, std::size_t R>
__global__ void evaluate_kernel(Ev ev, T* out, std::array<index_t, R> extents, index_t total, bool flat) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  if (flat || R == 0) {
    expr::store<Op>(out[i], ev.at_flat(i));
    return;
  }
  if constexpr (R > 0) {
    index_t idx[R > 1 ? R - 1 : 1] = {};
    const index_t inner = extents[R - 1];
    index_t row = i / inner;
    for (std::size_t d = R - 1; d-- > 0;) {
      idx[d] = row % extents[d];
      row /= extents[d];
    }
    ev.seek(idx);
    expr::store<Op>(out[i], ev.at(i % inner));
  }
}

}  // namespace detail

/// out (device memory, extents `out_extents`) <Op>= e, on `stream`.
template <StoreOp Op = StoreOp::assign, class E, class T, std::size_t R>
void evaluate(const E& e, T* out, const std::array<index_t, R>& out_extents, cudaStream_t stream = nullptr) {
  std::array<index_t, R> bext = out_extents;
  if (!expr::broadcast_into(bext, e.extents()) || bext != out_extents) {
    throw ShapeError("cuda::evaluate: the expression's " + describe<typename E::shape_type>(e.extents()) +
                     " does not broadcast to " + format_extents(out_extents));
  }
  const index_t total = numel(out_extents);
  if (total == 0) return;
  const auto ev = e.template make_eval<R>(out_extents);
  constexpr int threads = 256;
  const auto blocks = static_cast<unsigned>((total + threads - 1) / threads);
  detail::evaluate_kernel<Op><<<blocks, threads, 0, stream>>>(ev, out, out_extents, total, ev.flat_ok());
  check(cudaGetLastError(), "cuda::evaluate launch");
}

}  // namespace ctdl::cuda

namespace ctdl {

/// Tensor<T, S, Cuda> evaluates assigned expressions with the kernel above (on the
/// default stream, then waits for it, so the assignment is complete when it returns, as
/// on the host).
template <>
struct DeviceEvaluator<Cuda> {
  static constexpr bool available = true;
  template <StoreOp Op, class E, class T, std::size_t R>
  static void evaluate(const E& e, T* out, const std::array<index_t, R>& extents) {
    cuda::evaluate<Op>(e, out, extents);
    cuda::check(cudaStreamSynchronize(nullptr), "cuda::evaluate");
  }
};

}  // namespace ctdl

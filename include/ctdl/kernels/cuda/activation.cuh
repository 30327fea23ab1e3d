#pragma once
// GELU on a CUDA device, both forms, forward and backward: the device twin of
// `tape.record(gelu(x))` / `tape.record(gelu_tanh(x))` on the CPU.
//
//   erf form  (BERT's "gelu"):          y = x Φ(x) = 0.5 x (1 + erf(x / sqrt 2))
//                                       dy/dx = Φ(x) + x φ(x)
//   tanh form ("gelu_new", Google's):   y = 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
//                                       dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)
//
// Shape contract: x, y, dy and dx are n elements each (any shape, flattened), T is
// float, bf16 or fp16.
//   gelu_forward:   y[i]   = gelu(x[i])
//   gelu_backward:  dx[i] += dy[i] * gelu'(x[i])      (accumulates, as the tape does)
// The math is the CTDL_HOST_DEVICE functors of expr/functors.hpp (GeluErf, GeluTanh and
// their Grad), the very code the CPU evaluator runs, in float; bf16/fp16 values are
// rounded once, on store, as on the CPU.

#include <cstdint>

#include "ctdl/expr/functors.hpp"
#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::cuda {

/// Which GELU: the erf form or the tanh approximation.
enum class GeluForm { erf, tanh };

template <class T>
void gelu_forward(const T* x, T* y, std::int64_t n, GeluForm form, cudaStream_t stream = current_stream());
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::int64_t n, GeluForm form,
                   cudaStream_t stream = current_stream());

// ============================================================================

namespace detail {

template <class Gelu, class T>
__global__ void gelu_forward_kernel(const T* x, T* y, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  store(y, i, Gelu{}(load(x, i)));
}

template <class GeluGrad, class T>
__global__ void gelu_backward_kernel(const T* x, const T* dy, T* dx, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // The CPU's tape evaluates upstream * derivative and adds it to the gradient in float,
  // rounding once on store.
  const float d = load(dy, i) * GeluGrad{}(load(x, i));
  store(dx, i, load(dx, i) + d);
}

}  // namespace detail

template <class T>
void gelu_forward(const T* x, T* y, std::int64_t n, GeluForm form, cudaStream_t stream) {
  if (n <= 0) return;
  if (form == GeluForm::erf) {
    detail::gelu_forward_kernel<expr::GeluErf><<<blocks_for(n), kThreads, 0, stream>>>(x, y, n);
  } else {
    detail::gelu_forward_kernel<expr::GeluTanh><<<blocks_for(n), kThreads, 0, stream>>>(x, y, n);
  }
  check_launch("cuda::gelu_forward");
}

template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::int64_t n, GeluForm form, cudaStream_t stream) {
  if (n <= 0) return;
  if (form == GeluForm::erf) {
    detail::gelu_backward_kernel<expr::GeluErfGrad><<<blocks_for(n), kThreads, 0, stream>>>(x, dy, dx, n);
  } else {
    detail::gelu_backward_kernel<expr::GeluTanhGrad><<<blocks_for(n), kThreads, 0, stream>>>(x, dy, dx, n);
  }
  check_launch("cuda::gelu_backward");
}

}  // namespace ctdl::cuda

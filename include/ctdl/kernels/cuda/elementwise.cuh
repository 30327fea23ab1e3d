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
#include <memory>
#include <string>
#include <type_traits>

#include "ctdl/core/device.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/expr/eval.hpp"
#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/reduce.cuh"

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

template <StoreOp Op, class C, class T>
__global__ void store_kernel(const C* from, T* out, index_t total) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) expr::store<Op>(out[i], from[i]);
}

/// One thread per element o of out (its extents `oext`, right-aligned and padded with 1s
/// to e's rank R): out[o] += the sum, in A, of e over the positions that broadcast onto
/// o, walked in row-major order (a fixed order: the result does not vary from run to run).
template <class A, class Ev, class T, std::size_t R>
__global__ void sum_to_kernel(Ev ev, T* out, std::array<index_t, R> ext, std::array<index_t, R> oext,
                              index_t out_total, index_t per_output) {
  const index_t o = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= out_total) return;
  index_t base[R];
  index_t rest_o = o;
  for (std::size_t d = R; d-- > 0;) {
    base[d] = rest_o % oext[d];
    rest_o /= oext[d];
  }
  A acc = A(0);
  for (index_t r = 0; r < per_output; ++r) {
    index_t idx[R];
    index_t rest = r;
    for (std::size_t d = R; d-- > 0;) {
      if (oext[d] == 1 && ext[d] != 1) {
        idx[d] = rest % ext[d];
        rest /= ext[d];
      } else {
        idx[d] = base[d];
      }
    }
    if constexpr (R > 1) ev.seek(idx);
    acc += static_cast<A>(ev.at(idx[R - 1]));
  }
  out[o] = convert<T>(convert<A>(out[o]) + acc);
}

/// Element (r, col) of an expression as float, r counting over its leading axes (for
/// add_column_sums_of: a bias's gradient summed back over the rows).
template <class Ev, std::size_t R>
struct LeadingAxesElements {
  Ev ev;
  std::array<index_t, R> ext;
  __device__ float operator()(std::int64_t r, std::int64_t col) const {
    index_t outer[R];  // r's index over the leading axes (outer[R - 1] unused)
    for (std::size_t d = R - 1; d-- > 0;) {
      outer[d] = r % ext[d];
      r /= ext[d];
    }
    outer[R - 1] = 0;
    Ev row = ev;  // seek moves the evaluator to the row
    row.seek(outer);
    return static_cast<float>(row.at(col));
  }
};

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
  if (expr::reads_destination_elsewhere(e, out, out_extents)) {
    // As on the CPU (expr/eval.hpp): t = t - t[0] would read row 0 while other threads
    // overwrite it. Evaluate into a temporary of the expression's compute type, then
    // store it: the result is what it would be with no aliasing, rounded once.
    using C = std::remove_cvref_t<decltype(ev.at_flat(0))>;
    const std::unique_ptr<C, void (*)(void*) noexcept> tmp(
        static_cast<C*>(DeviceAllocator<Cuda>::allocate(sizeof(C) * static_cast<std::size_t>(total))),
        &DeviceAllocator<Cuda>::deallocate);
    detail::evaluate_kernel<StoreOp::assign><<<blocks, threads, 0, stream>>>(ev, tmp.get(), out_extents, total,
                                                                            ev.flat_ok());
    check(cudaGetLastError(), "cuda::evaluate launch (into a temporary)");
    detail::store_kernel<Op><<<blocks, threads, 0, stream>>>(tmp.get(), out, total);
    check(cudaGetLastError(), "cuda::evaluate launch (the temporary stored)");
    // The temporary is freed on the legacy default stream: on another, wait for it first.
    if (stream != nullptr) check(cudaStreamSynchronize(stream), "cuda::evaluate");
    return;
  }
  detail::evaluate_kernel<Op><<<blocks, threads, 0, stream>>>(ev, out, out_extents, total, ev.flat_ok());
  check(cudaGetLastError(), "cuda::evaluate launch");
}

/// out (device memory, extents `out_extents`, rank r <= e's) += e summed over the axes
/// along which out broadcasts to e (the device twin of expr::sum_to: a bias's gradient
/// from its [rows, width] upstream), accumulating in accumulate_t<T>, on `stream`.
template <class E, class T, std::size_t r>
void sum_to(const E& e, T* out, const std::array<index_t, r>& out_extents, cudaStream_t stream = nullptr) {
  constexpr std::size_t R = E::rank;
  static_assert(r <= R, "cuda::sum_to: the destination has a higher rank than the expression");
  if constexpr (R == 0) {
    evaluate<StoreOp::add>(e, out, out_extents, stream);  // a scalar onto a scalar: nothing to sum
  } else {
    const auto& ext = e.extents();
    std::array<index_t, R> oext;  // out's extents, right-aligned to e's rank
    oext.fill(1);
    for (std::size_t d = 0; d < r; ++d) oext[R - r + d] = out_extents[d];
    for (std::size_t d = 0; d < R; ++d) {
      if (oext[d] != ext[d] && oext[d] != 1) {
        throw ShapeError("cuda::sum_to: extents " + format_extents(out_extents) + " do not broadcast to " +
                         format_extents(ext));
      }
    }
    const index_t out_total = numel(out_extents), total = numel(ext);
    if (out_total == 0 || total == 0) return;
    const auto ev = e.template make_eval<R>(ext);
    if constexpr (R > 1 && std::is_same_v<accumulate_t<T>, float>) {
      // A bias's gradient (every axis but the last summed): reduce.cuh's column sums, in
      // parallel over row blocks and in a fixed order, not one thread walking each column.
      bool leading_only = oext[R - 1] == ext[R - 1] && total > out_total;
      for (std::size_t d = 0; d + 1 < R; ++d) leading_only = leading_only && oext[d] == 1;
      if (leading_only && stream == nullptr) {  // (the scratch is ordered on the legacy default stream)
        const index_t rows = total / out_total;
        const auto bytes = sizeof(float) * static_cast<std::size_t>(column_sums_workspace(rows, out_total));
        // Freed stream-ordered, after the kernels.
        const std::unique_ptr<float, void (*)(void*) noexcept> scratch(
            static_cast<float*>(DeviceAllocator<Cuda>::allocate(bytes)), &DeviceAllocator<Cuda>::deallocate);
        add_column_sums_of(detail::LeadingAxesElements<std::remove_const_t<decltype(ev)>, R>{ev, ext}, out, rows, out_total, scratch.get(),
                           stream);
        return;
      }
    }
    constexpr int threads = 256;
    const auto blocks = static_cast<unsigned>((out_total + threads - 1) / threads);
    detail::sum_to_kernel<accumulate_t<T>><<<blocks, threads, 0, stream>>>(ev, out, ext, oext, out_total,
                                                                           total / out_total);
    check(cudaGetLastError(), "cuda::sum_to launch");
  }
}

}  // namespace ctdl::cuda

namespace ctdl {

/// Tensor<T, S, Cuda> evaluates assigned expressions with the kernel above, queued on
/// the legacy default stream like every other ctdl kernel and copy: work queued after it
/// (kernels, the stream-ordered frees of its operands, a copy to the host) sees the
/// result, and the host does not wait for it (a wait per expression would leave the GPU
/// idle between kernels). A launch error is reported here; an error while the kernel
/// runs, at the next call that waits (CUDA_LAUNCH_BLOCKING=1 pins it to its kernel).
template <>
struct DeviceEvaluator<Cuda> {
  static constexpr bool available = true;
  template <StoreOp Op, class E, class T, std::size_t R>
  static void evaluate(const E& e, T* out, const std::array<index_t, R>& extents) {
    cuda::evaluate<Op>(e, out, extents);
  }
  /// out += e summed back over the axes out broadcasts along (Var::accumulate).
  template <class E, class T, std::size_t R>
  static void sum_to(const E& e, T* out, const std::array<index_t, R>& extents) {
    cuda::sum_to(e, out, extents);
  }
};

}  // namespace ctdl

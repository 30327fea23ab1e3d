#pragma once
// Evaluation of an elementwise expression on a CUDA device: the device twin of
// expr/eval.hpp, running the same evaluators and CTDL_HOST_DEVICE functors. One thread
// per output element; the flat path when no operand is broadcast, otherwise each thread
// seeks its row through the broadcast strides.
//
// The expression's leaves must point to device memory (Tensor<T, S, Cuda>). Including
// this header also makes `device_tensor = expression` use it (DeviceEvaluator<Cuda>).

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <string>

#include "ctdl/core/device.hpp"
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

/// sum_to's common case, a bias's gradient: e [rows..., cols] summed over every axis but
/// the last. Block (32 columns x 8 row lanes) x, row slice y: the slice's sums of its 32
/// columns, row lane by row lane, then the 8 lanes in order, into partial[slice][column].
/// Reads are coalesced (a warp reads 32 neighbours of one row) and the GPU is filled by
/// slices; the one-thread-per-output kernel above walks each column alone.
inline constexpr int kColumnLanes = 8;
template <class A, class Ev, std::size_t R>
__global__ void column_partials_kernel(Ev ev, A* partial, std::array<index_t, R> ext, index_t rows, index_t cols,
                                       index_t rows_per_slice) {
  __shared__ A lanes[kColumnLanes][33];
  const index_t j = static_cast<index_t>(blockIdx.x) * 32 + threadIdx.x;
  const index_t begin = static_cast<index_t>(blockIdx.y) * rows_per_slice;
  const index_t end = begin + rows_per_slice < rows ? begin + rows_per_slice : rows;
  A acc = A(0);
  if (j < cols) {
    for (index_t r = begin + threadIdx.y; r < end; r += kColumnLanes) {
      index_t outer[R];  // row r's index over the leading axes (outer[R - 1] unused)
      index_t rest = r;
      for (std::size_t d = R - 1; d-- > 0;) {
        outer[d] = rest % ext[d];
        rest /= ext[d];
      }
      outer[R - 1] = 0;
      ev.seek(outer);
      acc += static_cast<A>(ev.at(j));
    }
  }
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    A sum = lanes[0][threadIdx.x];
    for (int k = 1; k < kColumnLanes; ++k) sum += lanes[k][threadIdx.x];
    partial[static_cast<index_t>(blockIdx.y) * cols + j] = sum;
  }
}

/// out[j] += the slices' partial sums of column j, in slice order.
template <class A, class T>
__global__ void add_column_partials_kernel(const A* partial, T* out, index_t cols, index_t slices) {
  const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  A sum = A(0);
  for (index_t k = 0; k < slices; ++k) sum += partial[k * cols + j];
  out[j] = convert<T>(convert<A>(out[j]) + sum);
}

/// out[j] += the sum of e over its leading axes (rows x cols elements in all), on the
/// legacy default stream: the two kernels above and their scratch.
template <class Ev, class T, std::size_t R>
void add_leading_sums(const Ev& ev, T* out, const std::array<index_t, R>& ext, index_t rows, index_t cols) {
  using A = accumulate_t<T>;
  const index_t column_blocks = (cols + 31) / 32;
  // About 1,024 blocks in all, a slice at least 64 rows: fixed by the sizes alone, so the
  // sums are added in the same order on every run.
  index_t slices = std::min<index_t>({(1024 + column_blocks - 1) / column_blocks, (rows + 63) / 64, 65535});
  slices = std::max<index_t>(1, slices);
  const index_t rows_per_slice = (rows + slices - 1) / slices;
  slices = (rows + rows_per_slice - 1) / rows_per_slice;
  auto* partial = static_cast<A*>(DeviceAllocator<Cuda>::allocate(sizeof(A) * static_cast<std::size_t>(slices * cols)));
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(slices));
  column_partials_kernel<A><<<grid, dim3(32, kColumnLanes)>>>(ev, partial, ext, rows, cols, rows_per_slice);
  const cudaError_t launched = cudaGetLastError();
  if (launched == cudaSuccess)
    add_column_partials_kernel<<<static_cast<unsigned>((cols + 255) / 256), 256>>>(partial, out, cols, slices);
  DeviceAllocator<Cuda>::deallocate(partial);  // stream-ordered: after the kernels
  check(launched, "cuda::sum_to launch (column partials)");
  check(cudaGetLastError(), "cuda::sum_to launch (column sums)");
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
    if constexpr (R > 1) {
      bool leading_only = oext[R - 1] == ext[R - 1] && total > out_total;  // a bias's gradient
      for (std::size_t d = 0; d + 1 < R; ++d) leading_only = leading_only && oext[d] == 1;
      if (leading_only && stream == nullptr) {  // (its scratch is ordered on the legacy default stream)
        detail::add_leading_sums(ev, out, ext, total / out_total, out_total);
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

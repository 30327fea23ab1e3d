#pragma once
// softmax over the last axis on a CUDA device: the kernels of ops/softmax.hpp.
//
// x is `rows` rows of `n` contiguous elements; the optional additive mask broadcasts to
// x (NumPy rules, right-aligned: BERT's [B, 1, 1, S] against scores [B, heads, S, S]),
// described by a MaskLayout built on the host from both extents.
//   z = x + mask,  m = max(z),  e = exp(z - m),  s = sum(e),  y = e / s    (row-wise)
// Backward (the mask is a constant):
//   dx += y * (dy - sum(dy * y))                                           (row-wise)
//
// Rounding points are the CPU op's, so bf16/fp16 results match it up to the last bit of
// a float sum: m, e, s and sum(dy * y) are rounded to T where the CPU stores them in a
// Tensor<T>; everything else is float arithmetic, stored once. One block per row (a
// grid-stride loop over rows); the sums and the max are block reductions in float.

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "ctdl/core/config.hpp"
#include "ctdl/core/shape.hpp"
#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/rows.cuh"

namespace ctdl::cuda {

/// Where row r of x reads its mask: mask + row_offset(r) + j * col_stride for column j.
/// Built by mask_layout(); trivially copyable, passed to the kernel by value.
struct MaskLayout {
  static constexpr int kMaxRowAxes = 7;  // x of rank up to 8
  int row_axes = 0;                      // x's rank - 1
  std::int64_t row_extents[kMaxRowAxes] = {};
  std::int64_t row_strides[kMaxRowAxes] = {};  // the mask's, 0 along broadcast axes
  std::int64_t col_stride = 0;                 // 1, or 0 when the mask's last extent is 1

  CTDL_HOST_DEVICE std::int64_t row_offset(std::int64_t r) const {
    std::int64_t offset = 0;
    for (int d = row_axes - 1; d >= 0; --d) {
      offset += (r % row_extents[d]) * row_strides[d];
      r /= row_extents[d];
    }
    return offset;
  }
};

/// The layout of a mask of extents `mask` broadcast to x of extents `x` (right-aligned,
/// each mask extent equal to x's or 1). Throws ctdl::Error naming both when it does not
/// broadcast, when the mask has the higher rank, or when x's rank exceeds 8.
inline MaskLayout mask_layout(std::span<const index_t> x, std::span<const index_t> mask);

/// y = softmax(x) over rows of n (n >= 1). x and y may alias.
template <class T>
void softmax_forward(const T* x, T* y, std::int64_t rows, std::int64_t n, cudaStream_t stream = current_stream());

/// y = softmax(x + mask), the mask read through `layout` (from mask_layout()).
template <class T>
void softmax_forward(const T* x, const T* mask, const MaskLayout& layout, T* y, std::int64_t rows, std::int64_t n,
                     cudaStream_t stream = current_stream());

/// dx += y * (dy - sum(dy * y)) row-wise, from the forward's y.
template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, std::int64_t rows, std::int64_t n,
                      cudaStream_t stream = current_stream());

// ============================================================================

namespace norm_detail {

template <class T, bool Masked>
__global__ __launch_bounds__(kMaxRowThreads) void softmax_forward_kernel(const T* x, const T* mask, MaskLayout layout,
                                                                         T* y, std::int64_t rows, std::int64_t n) {
  __shared__ float scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const T* mr = Masked ? mask + layout.row_offset(r) : nullptr;
    auto z = [&](std::int64_t j) {
      float v = load(xr, j);
      if constexpr (Masked) v += load(mr, j * layout.col_stride);
      return v;
    };
    float m = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, z(j));
    m = round_to<T>(block_max(m, scratch));  // CPU: max(z, last_axis) is a Tensor<T>
    float s = 0.0f;
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float e = round_to<T>(expf(z(j) - m));  // CPU: e is a Tensor<T>
      store(yr, j, e);
      s += e;
    }
    s = round_to<T>(block_sum(s, scratch));  // CPU: sum(e, last_axis) is a Tensor<T>
    // Each thread reads back only the elements it wrote itself: no barrier needed.
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) store(yr, j, load(yr, j) / s);
  }
}

template <class T>
__global__ __launch_bounds__(kMaxRowThreads) void softmax_backward_kernel(const T* y, const T* dy, T* dx,
                                                                          std::int64_t rows, std::int64_t n) {
  __shared__ float scratch[32];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *yr = y + r * n, *dyr = dy + r * n;
    T* dxr = dx + r * n;
    float dot = 0.0f;
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) dot += load(dyr, j) * load(yr, j);
    dot = round_to<T>(block_sum(dot, scratch));  // CPU: sum(dy * y, last_axis) is a Tensor<T>
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      store(dxr, j, load(dxr, j) + load(yr, j) * (load(dyr, j) - dot));
    }
  }
}

inline void check_softmax_sizes(const char* op, std::int64_t rows, std::int64_t n) {
  if (rows < 0 || n < 1) {
    throw Error(std::string(op) + ": rows of " + std::to_string(n) + " elements (" + std::to_string(rows) +
                " rows): softmax needs at least one element per row");
  }
}

}  // namespace norm_detail

inline MaskLayout mask_layout(std::span<const index_t> x, std::span<const index_t> mask) {
  auto describe = [](std::span<const index_t> e) { return format_extents(e.data(), e.size()); };
  const std::string both = "mask " + describe(mask) + " against x " + describe(x);
  if (x.empty() || x.size() > MaskLayout::kMaxRowAxes + 1) {
    throw Error("softmax (cuda): x must have rank 1 to " + std::to_string(MaskLayout::kMaxRowAxes + 1) + ": " + both);
  }
  if (mask.size() > x.size()) throw Error("softmax (cuda): the mask has a higher rank than x: " + both);
  // The mask's contiguous strides, right-aligned against x's axes; 0 where it broadcasts.
  const std::size_t rank = x.size(), offset = rank - mask.size();
  std::array<std::int64_t, MaskLayout::kMaxRowAxes + 1> strides{};
  std::int64_t acc = 1;
  for (std::size_t i = mask.size(); i-- > 0;) {
    const index_t m = mask[i], e = x[offset + i];
    if (m != e && m != 1) throw Error("softmax (cuda): the mask does not broadcast to x: " + both);
    strides[offset + i] = (m == 1 && e != 1) ? 0 : acc;
    acc *= m;
  }
  MaskLayout layout;
  layout.row_axes = static_cast<int>(rank - 1);
  for (std::size_t d = 0; d + 1 < rank; ++d) {
    layout.row_extents[d] = x[d];
    layout.row_strides[d] = strides[d];
  }
  layout.col_stride = strides[rank - 1];
  return layout;
}

template <class T>
void softmax_forward(const T* x, T* y, std::int64_t rows, std::int64_t n, cudaStream_t stream) {
  norm_detail::check_softmax_sizes("softmax_forward", rows, n);
  if (rows == 0) return;
  norm_detail::softmax_forward_kernel<T, false>
      <<<norm_detail::row_blocks(rows), norm_detail::row_threads(n), 0, stream>>>(x, nullptr, MaskLayout{}, y, rows, n);
  check_launch("softmax_forward_kernel");
}

template <class T>
void softmax_forward(const T* x, const T* mask, const MaskLayout& layout, T* y, std::int64_t rows, std::int64_t n,
                     cudaStream_t stream) {
  norm_detail::check_softmax_sizes("softmax_forward (masked)", rows, n);
  if (!mask) throw Error("softmax_forward (masked): the mask pointer is null");
  if (rows == 0) return;
  norm_detail::softmax_forward_kernel<T, true>
      <<<norm_detail::row_blocks(rows), norm_detail::row_threads(n), 0, stream>>>(x, mask, layout, y, rows, n);
  check_launch("softmax_forward_kernel (masked)");
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, std::int64_t rows, std::int64_t n, cudaStream_t stream) {
  norm_detail::check_softmax_sizes("softmax_backward", rows, n);
  if (rows == 0) return;
  norm_detail::softmax_backward_kernel<T>
      <<<norm_detail::row_blocks(rows), norm_detail::row_threads(n), 0, stream>>>(y, dy, dx, rows, n);
  check_launch("softmax_backward_kernel");
}

}  // namespace ctdl::cuda

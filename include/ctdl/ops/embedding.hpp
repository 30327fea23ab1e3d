#pragma once
// embedding: a gather of table rows by id.
//
// Shape contract: table is Var<T, Shape<V, H>, D> (V rows); ids is a host tensor of int32
// or int64 with any shape, also when the table is on Cuda (a batch's ids are read on the
// host); y is Var<T, Shape<dyn, H>, D> with one row per id (flattened).
//   y[n] = table[ids[n]]
// Backward: table.grad[ids[n]] += dy[n] (a scatter-add; repeated ids accumulate).
// An id outside [0, V) throws ctdl::Error naming the position, the id and V, on the host
// before anything runs, whatever the device.
// CPU: row copies; a sequential scatter-add. CUDA: kernels/cuda/embedding.cuh on a device
// copy of the ids (kept by the tape for backward); the scatter-add is an atomicAdd, so
// repeated ids are added in no fixed order (float: the last bits vary run to run).

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/dispatch.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/embedding.cuh"
#endif

namespace ctdl::ops {

template <class T, index_t V, index_t H, class I, class SI, Device D>
Var<T, Shape<dyn, H>, D> embedding(Tape& tape, const Var<T, Shape<V, H>, D>& table, const Tensor<I, SI>& ids);

// ============================================================================

namespace detail {

/// The ids a tape entry keeps for backward: a host copy, or on Cuda the device copy the
/// forward read.
template <class I, class D>
using KeptIds = std::conditional_t<on_cuda<D>, Tensor<I, Shape<dyn>, Cuda>, std::vector<I>>;

/// Host ids (any shape), flattened into memory of device D (a synchronous copy).
template <class D, class I, class SI>
Tensor<I, Shape<dyn>, D> ids_to_device(const Tensor<I, SI>& ids) {
  auto out = Tensor<I, Shape<dyn>, D>::uninitialized({ids.size()});
  DeviceAllocator<D>::copy_from_host(out.data(), ids.data(), sizeof(I) * static_cast<std::size_t>(ids.size()));
  return out;
}

template <class T, index_t V, index_t H, class I, class D>
struct EmbeddingEntry final : TapeEntry {
  GradRef<T, Shape<V, H>, D> table;
  GradRef<T, Shape<dyn, H>, D> y;
  KeptIds<I, D> ids;
  EmbeddingEntry(GradRef<T, Shape<V, H>, D> t, GradRef<T, Shape<dyn, H>, D> y_, KeptIds<I, D> ids_)
      : table(std::move(t)), y(std::move(y_)), ids(std::move(ids_)) {}
  const char* name() const override { return "embedding"; }
  void backward() override {
    if (!y.has_grad()) return;
    const index_t h = table.extents()[1];
    T* g = table.node_ptr()->grad_data();
    const T* dy = y.grad().data();
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      cuda::embedding_backward(dy, ids.data(), g, ids.size(), table.extents()[0], h);
#endif
    } else {
      using C = compute_t<T>;
      // Sequential: repeated ids write the same row.
      for (std::size_t n = 0; n < ids.size(); ++n) {
        T* row = g + static_cast<index_t>(ids[n]) * h;
        const T* d = dy + static_cast<index_t>(n) * h;
        for (index_t j = 0; j < h; ++j) row[j] = convert<T>(convert<C>(row[j]) + convert<C>(d[j]));
      }
    }
  }
};

}  // namespace detail

template <class T, index_t V, index_t H, class I, class SI, Device D>
Var<T, Shape<dyn, H>, D> embedding(Tape& tape, const Var<T, Shape<V, H>, D>& table, const Tensor<I, SI>& ids) {
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  require_kernels<D>();
  const index_t rows = table.extents()[0], h = table.extents()[1], n = ids.size();
  for (index_t i = 0; i < n; ++i) {
    if (ids.data()[i] < 0 || ids.data()[i] >= rows) {
      throw Error("embedding: id " + std::to_string(ids.data()[i]) + " at position " + std::to_string(i) +
                  " is outside the table's " + std::to_string(rows) + " rows");
    }
  }
  auto value = Tensor<T, Shape<dyn, H>, D>::uninitialized({n, h});
  const bool needs_grad = tape.recording() && table.requires_grad();
  detail::KeptIds<I, D> kept;
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    kept = detail::ids_to_device<Cuda>(ids);
    cuda::embedding_forward(table.value().data(), kept.data(), value.data(), n, rows, h);
#endif
  } else {
    const T* t = table.value().data();
#pragma omp parallel for schedule(static) if (n * h >= expr::kParallelThreshold)
    for (index_t i = 0; i < n; ++i) {
      std::memcpy(value.data() + i * h, t + static_cast<index_t>(ids.data()[i]) * h, sizeof(T) * h);
    }
    if (needs_grad) kept.assign(ids.data(), ids.data() + n);
  }
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) tape.push(std::make_unique<detail::EmbeddingEntry<T, V, H, I, D>>(table, y, std::move(kept)));
  return y;
}

}  // namespace ctdl::ops

#pragma once
// embedding: a gather of table rows by id.
//
// Shape contract: table is Var<T, Shape<V, H>> (V rows); ids is a tensor of int32 or
// int64 with any shape; y is Var<T, Shape<dyn, H>> with one row per id (flattened).
//   y[n] = table[ids[n]]
// Backward: table.grad[ids[n]] += dy[n] (a scatter-add; repeated ids accumulate).
// An id outside [0, V) throws ctdl::Error naming the position, the id and V.

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ctdl/autograd/tape.hpp"

namespace ctdl::ops {

template <class T, index_t V, index_t H, class I, class SI>
Var<T, Shape<dyn, H>> embedding(Tape& tape, const Var<T, Shape<V, H>>& table, const Tensor<I, SI>& ids);

// ============================================================================

namespace detail {

template <class T, index_t V, index_t H, class I>
struct EmbeddingEntry final : TapeEntry {
  GradRef<T, Shape<V, H>> table;
  GradRef<T, Shape<dyn, H>> y;
  std::vector<I> ids;
  EmbeddingEntry(GradRef<T, Shape<V, H>> t, GradRef<T, Shape<dyn, H>> y_, std::vector<I> ids_)
      : table(std::move(t)), y(std::move(y_)), ids(std::move(ids_)) {}
  const char* name() const override { return "embedding"; }
  void backward() override {
    if (!y.has_grad()) return;
    const index_t h = table.extents()[1];
    T* g = table.node_ptr()->grad_data();
    const T* dy = y.grad().data();
    using C = compute_t<T>;
    // Sequential: repeated ids write the same row.
    for (std::size_t n = 0; n < ids.size(); ++n) {
      T* row = g + static_cast<index_t>(ids[n]) * h;
      const T* d = dy + static_cast<index_t>(n) * h;
      for (index_t j = 0; j < h; ++j) row[j] = convert<T>(convert<C>(row[j]) + convert<C>(d[j]));
    }
  }
};

}  // namespace detail

template <class T, index_t V, index_t H, class I, class SI>
Var<T, Shape<dyn, H>> embedding(Tape& tape, const Var<T, Shape<V, H>>& table, const Tensor<I, SI>& ids) {
  static_assert(std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>, "embedding ids are int32 or int64");
  const index_t rows = table.extents()[0], h = table.extents()[1], n = ids.size();
  for (index_t i = 0; i < n; ++i) {
    if (ids.data()[i] < 0 || ids.data()[i] >= rows) {
      throw Error("embedding: id " + std::to_string(ids.data()[i]) + " at position " + std::to_string(i) +
                  " is outside the table's " + std::to_string(rows) + " rows");
    }
  }
  auto value = Tensor<T, Shape<dyn, H>>::uninitialized({n, h});
  const T* t = table.value().data();
#pragma omp parallel for schedule(static) if (n * h >= expr::kParallelThreshold)
  for (index_t i = 0; i < n; ++i) std::memcpy(value.data() + i * h, t + static_cast<index_t>(ids.data()[i]) * h, sizeof(T) * h);
  const bool needs_grad = tape.recording() && table.requires_grad();
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<detail::EmbeddingEntry<T, V, H, I>>(table, y, std::vector<I>(ids.data(), ids.data() + n)));
  }
  return y;
}

}  // namespace ctdl::ops

#pragma once
// Zero-copy views between ctdl tensors and xtensor containers, for users who compute
// with xtensor around ctdl.
//
//   Tensor<float, Shape<dyn, 768>> h = ...;
//   auto x = interop::to_xtensor(h.view());        // xt::xtensor_adaptor over h's elements
//   x *= 2.0f;                                      // writes h
//
//   xt::xtensor<float, 2> a = xt::zeros<float>({4, 768});
//   auto v = interop::from_xtensor<Shape<dyn, 768>>(a);   // TensorView<float, Shape<dyn, 768>>
//
// Neither side owns the other's memory: a view is valid while the tensor or container it
// views lives and is not resized (ctdl tensors have no resize; xt::xarray::resize
// reallocates). xtensor -> ctdl needs a row-major, contiguous container (a ctdl
// TensorView has no strides); a column-major one or a strided view is an error naming its
// layout, to be copied first (xt::xtensor<T, N, xt::layout_type::row_major> c = expr).
// A ctdl Tensor cannot adopt an xtensor buffer (it owns aligned storage of its own), so
// the ctdl side of a shared buffer is always a TensorView.
//
// Needs xtensor (Debian: libxtensor-dev): link ctdl::xtensor in CMake.

#include <xtensor/xadapt.hpp>
#include <xtensor/xlayout.hpp>

#include <array>
#include <string>
#include <type_traits>

#include "ctdl/core/error.hpp"
#include "ctdl/core/shape.hpp"
#include "ctdl/core/tensor.hpp"

namespace ctdl::interop {

/// An xtensor adaptor (static rank, row-major) over a host tensor view's elements.
/// Writes through it change the tensor (when T is not const).
template <class T, ShapeType S>
auto to_xtensor(TensorView<T, S, Cpu> view);
template <class T, ShapeType S>
auto to_xtensor(Tensor<T, S, Cpu>& tensor) {
  return to_xtensor(tensor.view());
}
template <class T, ShapeType S>
auto to_xtensor(const Tensor<T, S, Cpu>& tensor) {
  return to_xtensor(tensor.view());
}

/// A ctdl view of an xtensor container's (xarray, xtensor, adaptor) buffer. Throws
/// ShapeError when the container's rank or extents do not fit S, and Error when it is not
/// row-major and contiguous.
template <ShapeType S, class C>
auto from_xtensor(C& container);

// ============================================================================

template <class T, ShapeType S>
auto to_xtensor(TensorView<T, S, Cpu> view) {
  std::array<std::size_t, S::rank> shape;
  std::copy(view.extents().begin(), view.extents().end(), shape.begin());
  return xt::adapt(view.data(), static_cast<std::size_t>(view.size()), xt::no_ownership(), shape);
}

template <ShapeType S, class C>
auto from_xtensor(C& container) {
  using element = std::remove_reference_t<decltype(*container.data())>;
  const auto& shape = container.shape();
  if (shape.size() != S::rank) {
    throw ShapeError("from_xtensor: the container has rank " + std::to_string(shape.size()) + ", " + S::name() +
                     " has rank " + std::to_string(S::rank));
  }
  Extents<S> extents{};
  for (std::size_t a = 0; a < S::rank; ++a) extents[a] = static_cast<index_t>(shape[a]);
  // Row-major and contiguous: each stride is the product of the extents after it (axes of
  // extent 1 may carry any stride, xtensor writes 0 there).
  const auto& strides = container.strides();
  std::size_t expected = 1;
  for (std::size_t a = S::rank; a-- > 0;) {
    if (shape[a] != 1 && static_cast<std::size_t>(strides[a]) != expected) {
      throw Error("from_xtensor: the container " + format_extents(extents) +
                  " is not row-major and contiguous (axis " + std::to_string(a) + " has stride " +
                  std::to_string(strides[a]) + ", " + std::to_string(expected) +
                  " expected): copy it into an xt::xtensor<T, N, xt::layout_type::row_major> first");
    }
    expected *= shape[a];
  }
  return TensorView<element, S, Cpu>(container.data() + container.data_offset(), extents);
}

}  // namespace ctdl::interop

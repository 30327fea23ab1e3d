#pragma once
// Shape<Dims...>: a tensor's extents as a type. A static extent is a non-negative
// number; `dyn` marks an extent known only at run time.
//
//   Shape<dyn, dyn, 768>   batch x sequence x 768 (hidden width fixed at compile time)
//   Shape<>                a scalar (rank 0)
//
// Compiler messages print `dyn` as -1.

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/fwd.hpp"

namespace ctdl {


/// Runtime extents of a tensor of shape S.
template <ShapeType S>
using Extents = std::array<index_t, S::rank>;

std::string format_extents(const index_t* extents, std::size_t rank);
template <std::size_t N>
std::string format_extents(const std::array<index_t, N>& extents);

// ============================================================================

template <index_t... Dims>
struct Shape {
  static_assert(((Dims >= 0 || Dims == dyn) && ...),
                "Shape extents must be non-negative or ctdl::dyn");

  static constexpr std::size_t rank = sizeof...(Dims);
  static constexpr std::array<index_t, rank> static_extents{Dims...};
  static constexpr bool is_static = ((Dims != dyn) && ...);
  /// Number of elements when every extent is static, else dyn.
  static constexpr index_t static_size = is_static ? (index_t{1} * ... * Dims) : dyn;

  /// The type as written in source, e.g. "Shape<dyn, 768>".
  static std::string name() {
    std::string s = "Shape<";
    bool first = true;
    for (index_t d : static_extents) {
      if (!first) s += ", ";
      first = false;
      s += d == dyn ? std::string("dyn") : std::to_string(d);
    }
    return s + ">";
  }

  /// True when `extents` agree with every static extent.
  static constexpr bool accepts(const std::array<index_t, rank>& extents) {
    for (std::size_t i = 0; i < rank; ++i) {
      if (extents[i] < 0) return false;
      if (static_extents[i] != dyn && static_extents[i] != extents[i]) return false;
    }
    return true;
  }

  /// Throws ShapeError (naming `op`) unless `extents` fit this shape.
  static void check(const std::array<index_t, rank>& extents, const char* op) {
    if (!accepts(extents)) {
      throw ShapeError(std::string(op) + ": extents " + format_extents(extents) +
                       " do not fit " + name());
    }
  }

  /// Extents with every runtime extent set to 0 (an empty tensor of this shape).
  static constexpr std::array<index_t, rank> empty_extents() {
    std::array<index_t, rank> e{};
    for (std::size_t i = 0; i < rank; ++i) e[i] = static_extents[i] == dyn ? 0 : static_extents[i];
    return e;
  }
};

/// The most elements a tensor may have: 2^59, so that the bytes of any element type up
/// to 16 bytes wide still fit in index_t (and size_t) without overflow.
inline constexpr index_t kMaxElements = index_t{1} << 59;

/// The element count of `extents`. Throws ShapeError (naming the extents) when the
/// product exceeds kMaxElements -- sizes read from files (bert_config.json) reach here,
/// and a wrapped product would allocate a small buffer and write far past it.
template <std::size_t N>
constexpr index_t numel(const std::array<index_t, N>& extents);

namespace detail {
// Out of line and cold: numel is on hot paths (Tensor::size()), its check must cost a branch.
// An extent of 0 makes the product 0 however large the others are.
[[gnu::cold, gnu::noinline]] inline index_t numel_past_limit(const index_t* extents, std::size_t rank) {
  for (std::size_t i = 0; i < rank; ++i)
    if (extents[i] == 0) return 0;
  throw ShapeError("a tensor of extents " + format_extents(extents, rank) + " would have more than 2^59 elements");
}
}  // namespace detail

template <std::size_t N>
constexpr index_t numel(const std::array<index_t, N>& extents) {
  index_t n = 1;
  for (index_t e : extents)
    if (__builtin_mul_overflow(n, e, &n) || n > kMaxElements) [[unlikely]]
      return detail::numel_past_limit(extents.data(), N);
  return n;
}

/// "Shape<dyn, 768> [8, 768]": a shape type with the runtime extents it has.
template <ShapeType S>
std::string describe(const Extents<S>& extents) {
  return S::name() + " " + format_extents(extents);
}

// ---- shape arithmetic on types ----

namespace detail {
template <class S>
struct drop_first;
template <index_t D0, index_t... Ds>
struct drop_first<Shape<D0, Ds...>> {
  using type = Shape<Ds...>;
};
template <class S>
struct leading_dyn;
template <index_t D0, index_t... Ds>
struct leading_dyn<Shape<D0, Ds...>> {
  using type = Shape<dyn, Ds...>;
};
template <class S, class Seq>
struct last_to_one_impl;
template <index_t... Ds, std::size_t... I>
struct last_to_one_impl<Shape<Ds...>, std::index_sequence<I...>> {
  static constexpr std::array<index_t, sizeof...(Ds)> e{Ds...};
  using type = Shape<(I + 1 == sizeof...(Ds) ? index_t{1} : e[I])...>;
};
}  // namespace detail

/// Shape<A, B, C> -> Shape<B, C>: the shape of one row along the leading axis.
template <ShapeType S>
using drop_first_t = typename detail::drop_first<S>::type;
/// Shape<A, B, C> -> Shape<dyn, B, C>: the shape of a slice along the leading axis.
template <ShapeType S>
using leading_dyn_t = typename detail::leading_dyn<S>::type;
/// Shape<A, B, C> -> Shape<A, B, 1>: the shape of a last-axis reduction (keepdims).
template <ShapeType S>
using last_to_one_t = typename detail::last_to_one_impl<S, std::make_index_sequence<S::rank>>::type;

/// True when two shapes of equal rank have no pair of static extents that differ.
/// Used in static_asserts, so that the compiler's note names both shapes.
template <class A, class B>
inline constexpr bool static_extents_agree = [] {
  if constexpr (A::rank != B::rank) {
    return false;
  } else {
    for (std::size_t i = 0; i < A::rank; ++i) {
      const index_t a = A::static_extents[i], b = B::static_extents[i];
      if (a != dyn && b != dyn && a != b) return false;
    }
    return true;
  }
}();

// ============================================================================

inline std::string format_extents(const index_t* extents, std::size_t rank) {
  std::string s = "[";
  for (std::size_t i = 0; i < rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(extents[i]);
  }
  return s + "]";
}

template <std::size_t N>
std::string format_extents(const std::array<index_t, N>& extents) {
  return format_extents(extents.data(), N);
}

}  // namespace ctdl

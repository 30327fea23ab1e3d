#pragma once
// The node types of lazy elementwise expressions and their evaluators.
//
// An expression is a small value type describing a computation, not its result:
//
//   Leaf<T, S, Keep>      a tensor operand. Lvalue tensors and views are held by view
//                         (reference semantics, Keep = NoKeep: a raw pointer); rvalue
//                         tensors and autograd Vars are kept alive by the `Keep` handle.
//                         So an `auto` expression built from temporaries never dangles;
//                         one over an lvalue tensor or a view must not outlive it.
//   Scalar<T>             a runtime constant, broadcast everywhere (rank 0)
//   Constant<T, V>        a constant known at compile time: Zero<T>, One<T> and -1 (the
//                         partial of a negation); they appear in derivative trees and
//                         are simplified away where possible
//   Map<F, Args...>       the elementwise functor F applied to its arguments, with NumPy
//                         broadcasting of their shapes
// GradSum (grad.hpp) is the node grad() returns.
//
// Every node has `value_type` (its element type when stored), `shape_type` (its static
// shape, the broadcast of its arguments'), `extents()` (its runtime extents) and
// `num_leaves` (how many Leaf nodes it holds; leaves are numbered left to right, which is
// how compile-time derivatives name "with respect to which operand").
//
// Evaluation (`eval_into`) runs one fused loop over the destination; see evaluate().

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "ctdl/core/config.hpp"
#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/core/shape.hpp"
#include "ctdl/core/tensor.hpp"

namespace ctdl {

/// Base of every expression node. Being a class in namespace ctdl, it makes ctdl's
/// operators and functions visible to argument-dependent lookup for every node type.
template <class Derived>
struct ExprBase {
  using ctdl_expression_tag = void;

  /// Evaluates the expression into `out` (extents `out_extents`, to which the expression
  /// must broadcast), combining with the existing values as `Op` says.
  template <StoreOp Op, class T, std::size_t R>
  void eval_into(T* out, const std::array<index_t, R>& out_extents) const;
};

namespace expr {

// ---- static and runtime broadcasting ----

namespace detail {
template <class A, class B>
struct broadcast_impl {
  static constexpr std::size_t rank = A::rank > B::rank ? A::rank : B::rank;
  static constexpr index_t at(const auto& e, std::size_t r, std::size_t i) {
    return i + r < rank ? index_t{1} : e[i + r - rank];
  }
  static constexpr std::pair<bool, std::array<index_t, rank>> compute() {
    std::array<index_t, rank> out{};
    bool ok = true;
    for (std::size_t i = 0; i < rank; ++i) {
      const index_t a = at(A::static_extents, A::rank, i), b = at(B::static_extents, B::rank, i);
      if (a == b) out[i] = a;
      else if (a == 1) out[i] = b;
      else if (b == 1) out[i] = a;
      else if (a == dyn) out[i] = b;
      else if (b == dyn) out[i] = a;
      else { ok = false; out[i] = a; }
    }
    return {ok, out};
  }
  static constexpr auto result = compute();
  template <std::size_t... I>
  static auto make(std::index_sequence<I...>) -> Shape<result.second[I]...>;
  using type = decltype(make(std::make_index_sequence<rank>{}));
};
}  // namespace detail

/// True when shapes A and B broadcast (NumPy rules) as far as their static extents say.
template <class A, class B>
inline constexpr bool broadcastable = detail::broadcast_impl<A, B>::result.first;

template <class A, class B>
struct broadcast_shape {
  static_assert(broadcastable<A, B>, "static extents differ: these shapes do not broadcast");
  using type = typename detail::broadcast_impl<A, B>::type;
};

/// The broadcast of any number of shapes.
template <class... S>
struct broadcast_all;
template <>
struct broadcast_all<> {
  using type = Shape<>;
};
template <class S>
struct broadcast_all<S> {
  using type = S;
};
template <class A, class B, class... Rest>
struct broadcast_all<A, B, Rest...> {
  using type = typename broadcast_all<typename broadcast_shape<A, B>::type, Rest...>::type;
};
template <class... S>
using broadcast_t = typename broadcast_all<S...>::type;

/// Broadcasts runtime extents `b` into `out` (rank R >= b's rank, starting all ones);
/// false when an extent pair is neither equal nor 1.
template <std::size_t R, std::size_t Rb>
bool broadcast_into(std::array<index_t, R>& out, const std::array<index_t, Rb>& b) {
  static_assert(Rb <= R);
  for (std::size_t i = 0; i < Rb; ++i) {
    index_t& o = out[R - Rb + i];
    const index_t e = b[i];
    if (o == e || e == 1) continue;
    if (o != 1) return false;
    o = e;
  }
  return true;
}

/// Strides of an operand of extents `e` when read at the indices of an output of
/// extents `out`: 0 along axes it is broadcast over.
template <std::size_t R, std::size_t r>
std::array<index_t, R> broadcast_strides(const std::array<index_t, r>& e, const std::array<index_t, R>& out) {
  static_assert(r <= R);
  std::array<index_t, R> s{};
  index_t acc = 1;
  for (std::size_t i = r; i-- > 0;) {
    const std::size_t o = R - r + i;
    s[o] = (e[i] == 1 && out[o] != 1) ? 0 : acc;
    acc *= e[i];
  }
  return s;
}

// ---- node types ----

/// The evaluator type of node X for an output of rank R.
template <class X, std::size_t R>
using eval_t = decltype(std::declval<const X&>().template make_eval<R>(std::declval<const std::array<index_t, R>&>()));

/// No ownership: the leaf views an lvalue tensor that outlives the expression.
struct NoKeep {};

template <class T, ShapeType S, class Keep = NoKeep>
struct Leaf : ExprBase<Leaf<T, S, Keep>> {
  using value_type = T;
  using shape_type = S;
  static constexpr std::size_t rank = S::rank;
  static constexpr int num_leaves = 1;

  const T* data;
  std::array<index_t, rank> ext;
  Keep keep;  // keeps an owned tensor or an autograd node alive, or nothing

  const std::array<index_t, rank>& extents() const { return ext; }

  template <std::size_t R>
  struct Eval {
    using C = compute_t<T>;
    const T* base;
    const T* row;
    std::array<index_t, R> strides;
    bool flat;

    CTDL_HOST_DEVICE bool flat_ok() const { return flat; }
    CTDL_HOST_DEVICE void seek(const index_t* outer) {
      const T* p = base;
      for (std::size_t d = 0; d + 1 < R; ++d) p += outer[d] * strides[d];
      row = p;
    }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE C at(index_t j) const {
      if constexpr (R == 0) return convert<C>(base[0]);
      else return convert<C>(row[j * strides[R - 1]]);
    }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE C at_flat(index_t i) const { return convert<C>(base[i]); }
  };

  template <std::size_t R>
  Eval<R> make_eval(const std::array<index_t, R>& out) const {
    return {data, data, broadcast_strides(ext, out), numel(ext) == numel(out)};
  }
};

/// A runtime constant of element type T (rank 0: broadcasts to any shape).
template <class T>
struct Scalar : ExprBase<Scalar<T>> {
  using value_type = T;
  using shape_type = Shape<>;
  static constexpr std::size_t rank = 0;
  static constexpr int num_leaves = 0;
  compute_t<T> value;

  std::array<index_t, 0> extents() const { return {}; }
  struct Eval {
    compute_t<T> v;
    CTDL_HOST_DEVICE bool flat_ok() const { return true; }
    CTDL_HOST_DEVICE void seek(const index_t*) {}
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE compute_t<T> at(index_t) const { return v; }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE compute_t<T> at_flat(index_t) const { return v; }
  };
  template <std::size_t R>
  Eval make_eval(const std::array<index_t, R>&) const {
    return {value};
  }
};

/// A constant known at compile time (0, 1 or -1), produced by differentiation.
template <class T, int V>
struct Constant : ExprBase<Constant<T, V>> {
  using value_type = T;
  using shape_type = Shape<>;
  static constexpr std::size_t rank = 0;
  static constexpr int num_leaves = 0;

  std::array<index_t, 0> extents() const { return {}; }
  struct Eval {
    CTDL_HOST_DEVICE bool flat_ok() const { return true; }
    CTDL_HOST_DEVICE void seek(const index_t*) {}
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE compute_t<T> at(index_t) const { return compute_t<T>(V); }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE compute_t<T> at_flat(index_t) const { return compute_t<T>(V); }
  };
  template <std::size_t R>
  Eval make_eval(const std::array<index_t, R>&) const {
    return {};
  }
};
template <class T>
using Zero = Constant<T, 0>;
template <class T>
using One = Constant<T, 1>;

template <class E>
inline constexpr bool is_zero_v = false;
template <class T>
inline constexpr bool is_zero_v<Constant<T, 0>> = true;
template <class E>
inline constexpr bool is_one_v = false;
template <class T>
inline constexpr bool is_one_v<Constant<T, 1>> = true;

/// The elementwise functor F applied to Args, broadcast together.
template <class F, class... Args>
struct Map : ExprBase<Map<F, Args...>> {
  using value_type = typename F::template result<typename Args::value_type...>;
  using shape_type = broadcast_t<typename Args::shape_type...>;
  static constexpr std::size_t rank = shape_type::rank;
  static constexpr int num_leaves = (0 + ... + Args::num_leaves);

  F f;
  std::tuple<Args...> args;
  std::array<index_t, rank> ext;

  Map(F f_, Args... a) : f(f_), args(std::move(a)...) {
    ext.fill(1);
    const bool ok = std::apply([&](const auto&... arg) { return (broadcast_into(ext, arg.extents()) && ...); }, args);
    if (!ok) throw_broadcast_error();
    shape_type::check(ext, F::name);
  }

  const std::array<index_t, rank>& extents() const { return ext; }

  /// "add: cannot broadcast Shape<dyn, 768> [8, 768] with Shape<dyn> [5]"
  [[gnu::cold, gnu::noinline]] void throw_broadcast_error() const {
    std::string msg = F::name;
    msg.append(": cannot broadcast");
    const char* sep = " ";
    std::apply(
        [&](const auto&... arg) {
          ((msg.append(sep).append(describe<typename std::remove_cvref_t<decltype(arg)>::shape_type>(arg.extents())),
            sep = " with "),
           ...);
        },
        args);
    throw ShapeError(msg);
  }

  template <std::size_t R>
  struct Eval {
    F f;
    std::tuple<eval_t<Args, R>...> evs;
    bool flat;

    CTDL_HOST_DEVICE bool flat_ok() const { return flat; }
    CTDL_HOST_DEVICE void seek(const index_t* outer) {
      std::apply([&](auto&... e) { (e.seek(outer), ...); }, evs);
    }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE auto at(index_t j) const {
      return std::apply([&](const auto&... e) { return f(e.at(j)...); }, evs);
    }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE auto at_flat(index_t i) const {
      return std::apply([&](const auto&... e) { return f(e.at_flat(i)...); }, evs);
    }
  };

  template <std::size_t R>
  Eval<R> make_eval(const std::array<index_t, R>& out) const {
    Eval<R> ev{f, std::apply([&](const auto&... a) { return std::make_tuple(a.template make_eval<R>(out)...); }, args),
               true};
    ev.flat = std::apply([](const auto&... e) { return (e.flat_ok() && ...); }, ev.evs);
    return ev;
  }
};

template <class E>
inline constexpr bool is_leaf_v = false;
template <class T, class S, class K>
inline constexpr bool is_leaf_v<Leaf<T, S, K>> = true;

/// Whether a leaf's Keep is an autograd Var's (specialised in autograd/var.hpp).
template <class K>
inline constexpr bool is_var_keep_v = false;

/// Whether expression E has a leaf over an autograd Var (a node the tape knows).
template <class E>
struct holds_var : std::false_type {};
template <class T, class S, class K>
struct holds_var<Leaf<T, S, K>> : std::bool_constant<is_var_keep_v<K>> {};
template <class F, class... Args>
struct holds_var<Map<F, Args...>> : std::disjunction<holds_var<Args>...> {};
template <class E>
inline constexpr bool holds_var_v = holds_var<std::remove_cvref_t<E>>::value;

// ---- turning operands into expressions ----

/// Types that can stand in an expression: expressions, tensors, views, and anything with
/// an `as_expression()` member (autograd Vars).
template <class A>
concept ExprOperand = Expression<A> || is_tensor<std::remove_cvref_t<A>>::value ||
                      is_tensor_view<std::remove_cvref_t<A>>::value ||
                      requires(const std::remove_cvref_t<A>& a) { a.as_expression(); };

template <class A>
concept ScalarOperand = std::is_arithmetic_v<std::remove_cvref_t<A>> || is_half_v<std::remove_cvref_t<A>>;

/// The expression node for an operand. Lvalue tensors are viewed; rvalue tensors are
/// moved into shared ownership so that the expression can outlive the statement.
template <class A>
auto as_expr(A&& a) {
  using D = std::remove_cvref_t<A>;
  if constexpr (Expression<D>) {
    return D(std::forward<A>(a));
  } else if constexpr (is_tensor<D>::value) {
    using T = typename D::value_type;
    using S = typename D::shape_type;
    if constexpr (std::is_lvalue_reference_v<A>) {
      return Leaf<T, S>{{}, a.data(), a.extents(), {}};
    } else {
      auto owned = std::make_shared<const D>(std::move(a));
      return Leaf<T, S, std::shared_ptr<const D>>{{}, owned->data(), owned->extents(), owned};
    }
  } else if constexpr (is_tensor_view<D>::value) {
    return Leaf<typename D::value_type, typename D::shape_type>{{}, a.data(), a.extents(), {}};
  } else {
    return a.as_expression();
  }
}

template <class A>
using expr_t = decltype(as_expr(std::declval<A>()));

// ---- taking ownership of viewed operands ----

/// A copy of `e` that views nothing: every Leaf over a tensor or view it does not keep
/// (NoKeep: an lvalue tensor, a TensorView) becomes a Leaf over a copy of those elements,
/// held by shared ownership; leaves that keep their operand (rvalue tensors, Vars) are
/// shared, not copied. What the tape stores, so that backward never reads freed memory.
/// Leaves are numbered as in `e`, so derivative<K> means the same operand in both.
template <class E>
E owning(const E& e) {
  static_assert(E::num_leaves == 0 || is_leaf_v<E>, "owning: an expression node type it does not know");
  return e;
}
template <class T, ShapeType S, class K>
auto owning(const Leaf<T, S, K>& leaf) {
  if constexpr (std::is_same_v<K, NoKeep>) {
    auto copy = Tensor<T, S>::uninitialized(leaf.ext);
    std::copy_n(leaf.data, copy.size(), copy.data());
    auto owned = std::make_shared<const Tensor<T, S>>(std::move(copy));
    return Leaf<T, S, std::shared_ptr<const Tensor<T, S>>>{{}, owned->data(), owned->extents(), owned};
  } else {
    return leaf;
  }
}
template <class F, class... Args>
auto owning(const Map<F, Args...>& m) {
  return std::apply(
      [&](const auto&... a) { return Map<F, decltype(owning(a))...>(m.f, owning(a)...); }, m.args);
}

}  // namespace expr
}  // namespace ctdl

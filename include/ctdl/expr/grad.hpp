#pragma once
// Compile-time differentiation of elementwise expressions.
//
// Leaves are numbered left to right (0 .. num_leaves-1). `derivative<K>(e)` is the
// expression for ∂e/∂(leaf K), elementwise, built by the chain rule from each functor's
// `partial` at compile time. Because leaf K sits in exactly one argument of each node on
// its path, the result is a single product chain, no sums; constants Zero/One are
// simplified away as the tree is built, so d(x*w + b)/db is just One and d(x*w + b)/dx
// is just w.
//
// `grad(e, wrt)` is the user-facing form: the sum of derivative<K>(e) over the leaves K
// whose data pointer equals `wrt`'s (a tensor may appear more than once): the same
// tensor, or any view that starts at its first element (its full view, but also x[0] or
// a slice from 0, while x[1] does not count). Avoid mixing a tensor and its leading rows
// in one expression you differentiate with grad. It evaluates in one fused loop over
// e's extents; for an operand that e broadcasts, sum the result over the broadcast axes
// (expr::sum_to, which adds into its destination) to get the gradient of sum(e) with
// respect to it. The GradSum that grad returns has no leaves, so grad(grad(e, x), x)
// does not compile.

#include <array>
#include <tuple>
#include <utility>

#include "ctdl/expr/functions.hpp"

namespace ctdl::expr {

/// p * d with compile-time simplification of the constants 0, 1 and -1.
template <class T, class P, class D>
auto chain_product(const P& p, const D& d) {
  if constexpr (is_zero_v<P> || is_zero_v<D>) return Zero<T>{};
  else if constexpr (is_one_v<P>) return d;
  else if constexpr (is_one_v<D>) return p;
  else if constexpr (std::is_same_v<P, Constant<T, -1>>) return make_map(Neg{}, d);
  else return make_map(Mul{}, p, d);
}

template <class... A>
constexpr std::array<int, sizeof...(A) + 1> leaf_offsets() {
  std::array<int, sizeof...(A) + 1> o{};
  int i = 0, acc = 0;
  ((o[i++] = acc, acc += A::num_leaves), ...);
  o[i] = acc;
  return o;
}

/// Which argument of a node holds leaf K.
template <int K, class... A>
constexpr std::size_t argument_of_leaf() {
  constexpr auto o = leaf_offsets<A...>();
  std::size_t i = 0;
  while (!(K >= o[i] && K < o[i + 1])) ++i;
  return i;
}

template <int K, class E>
auto derivative(const E& e);

template <int K, class F, class... A>
auto derivative_of_map(const Map<F, A...>& m) {
  using T = typename Map<F, A...>::value_type;
  constexpr std::size_t i = argument_of_leaf<K, A...>();
  constexpr int local = K - leaf_offsets<A...>()[i];
  const auto& arg = std::get<i>(m.args);
  auto d_arg = derivative<local>(arg);
  if constexpr (is_cast_v<F>) {
    // d cast<U>(u) = du, seen as type U (not rounded through U).
    using U = typename Map<F, A...>::value_type;
    if constexpr (is_zero_v<decltype(d_arg)>) return Zero<U>{};
    else if constexpr (is_one_v<decltype(d_arg)>) return One<U>{};
    else return make_map(Retype<U>{}, d_arg);
  } else {
    auto p = std::apply([&](const auto&... a) { return F::template partial<i, T>(m.f, a...); }, m.args);
    return chain_product<T>(p, d_arg);
  }
}

template <int K, class E>
auto derivative(const E& e) {
  static_assert(K >= 0 && K < E::num_leaves, "derivative<K>: the expression has no leaf K");
  if constexpr (is_leaf_v<E>) return One<typename E::value_type>{};
  else return derivative_of_map<K>(e);
}

template <class E>
struct argument_leaf_offsets;
template <class F, class... A>
struct argument_leaf_offsets<Map<F, A...>> {
  static constexpr auto value = leaf_offsets<A...>();
};

/// Calls fn(leaf, integral_constant<int, K>) for every leaf K of e, left to right.
template <int Base = 0, class E, class Fn>
void for_each_leaf(const E& e, Fn&& fn) {
  if constexpr (is_leaf_v<E>) {
    fn(e, std::integral_constant<int, Base>{});
  } else if constexpr (E::num_leaves > 0) {
    constexpr auto o = argument_leaf_offsets<E>::value;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (for_each_leaf<Base + o[I]>(std::get<I>(e.args), fn), ...);
    }(std::make_index_sequence<std::tuple_size_v<decltype(e.args)>>{});
  }
}

/// ∂e/∂wrt elementwise: Σ over the leaves K of e whose data pointer is `wrt`'s of
/// derivative<K>(e), each switched on or off at run time. Shape: e's extents.
template <class E, std::size_t... K>
struct GradSum : ExprBase<GradSum<E, K...>> {
  using value_type = typename E::value_type;
  using shape_type = typename E::shape_type;
  static constexpr std::size_t rank = shape_type::rank;
  static constexpr int num_leaves = 0;  // not differentiable again through this node

  template <std::size_t k>
  using term_t = decltype(derivative<static_cast<int>(k)>(std::declval<const E&>()));
  std::tuple<term_t<K>...> terms;
  std::array<bool, sizeof...(K)> on;
  std::array<index_t, rank> ext;

  const std::array<index_t, rank>& extents() const { return ext; }

  template <std::size_t R>
  struct Eval {
    std::tuple<eval_t<term_t<K>, R>...> evs;
    std::array<bool, sizeof...(K)> on;
    bool flat;
    CTDL_HOST_DEVICE bool flat_ok() const { return flat; }
    CTDL_HOST_DEVICE void seek(const index_t* outer) {
      std::apply([&](auto&... e) { (e.seek(outer), ...); }, evs);
    }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE compute_t<value_type> at(index_t j) const {
      compute_t<value_type> s{};
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((on[I] ? (void)(s += static_cast<compute_t<value_type>>(std::get<I>(evs).at(j))) : (void)0), ...);
      }(std::index_sequence_for<decltype(K)...>{});
      return s;
    }
    CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE compute_t<value_type> at_flat(index_t i) const {
      compute_t<value_type> s{};
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((on[I] ? (void)(s += static_cast<compute_t<value_type>>(std::get<I>(evs).at_flat(i))) : (void)0), ...);
      }(std::index_sequence_for<decltype(K)...>{});
      return s;
    }
  };

  template <std::size_t R>
  Eval<R> make_eval(const std::array<index_t, R>& out) const {
    Eval<R> ev{std::apply([&](const auto&... t) { return std::make_tuple(t.template make_eval<R>(out)...); }, terms), on,
               true};
    // A term whose operands are all broadcast-free may still be a rank-0 constant; the
    // flat path is valid whenever every term allows it.
    ev.flat = std::apply([](const auto&... e) { return (e.flat_ok() && ...); }, ev.evs);
    return ev;
  }
};

template <class E, std::size_t... K>
struct holds_var<GradSum<E, K...>> : holds_var<E> {};

template <class E, std::size_t... K>
auto make_grad_sum(const E& e, const void* wrt, std::index_sequence<K...>) {
  GradSum<E, K...> g{{}, std::make_tuple(derivative<static_cast<int>(K)>(e)...), {}, e.extents()};
  bool any = false;
  for_each_leaf(e, [&](const auto& leaf, auto k) {
    g.on[k.value] = static_cast<const void*>(leaf.data) == wrt;
    any = any || g.on[k.value];
  });
  if (!any) throw Error("grad: the tensor given as `wrt` does not appear in the expression");
  return g;
}

}  // namespace ctdl::expr

namespace ctdl {

/// ∂e/∂wrt, elementwise over e's extents, as an expression (see the header comment).
/// `wrt` is identified by its first element's address: pass the tensor (or view) used
/// in `e` (see the header comment for views that start at the same element).
template <class E, class W>
  requires Expression<E> && expr::ExprOperand<W>
auto grad(const E& e, const W& wrt) {
  static_assert(E::num_leaves > 0, "grad: the expression has no tensor operands");
  return expr::make_grad_sum(e, static_cast<const void*>(expr::as_expr(wrt).data),
                             std::make_index_sequence<E::num_leaves>{});
}

}  // namespace ctdl

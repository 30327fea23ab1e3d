#pragma once
// The user-facing expression functions and operators. Each builds a node; nothing is
// computed until the expression is assigned to a tensor (or reduced, or recorded on a
// tape). Operands may be tensors, views, expressions, autograd Vars, and plain numbers
// (which take the element type of the other operand).
//
//   a + b, a - b, a * b, a / b, -a          maximum(a, b), minimum(a, b)
//   exp log tanh erf sqrt rsqrt square      pow(a, p)
//   gelu(a) (erf form), gelu_tanh(a)        cast<U>(a)
//   a < b, a <= b, a > b, a >= b, equal(a, b), not_equal(a, b)   -> bool masks
//   where(mask, a, b)

#include <type_traits>
#include <utility>

#include "ctdl/expr/eval.hpp"
#include "ctdl/expr/functors.hpp"

namespace ctdl {

namespace expr {

/// At least one operand is a tensor-like expression operand, the others expression
/// operands or plain numbers.
template <class... A>
concept Operands = ((ExprOperand<A> || ScalarOperand<A>) && ...) && (ExprOperand<A> || ...);

/// The expression for operand `a`, where a plain number becomes a Scalar of element
/// type T.
template <class T, class A>
auto operand(A&& a) {
  if constexpr (ScalarOperand<A>) return Scalar<T>{{}, static_cast<compute_t<T>>(static_cast<double>(a))};
  else return as_expr(std::forward<A>(a));
}

/// Element type plain numbers take: that of the first non-mask expression operand.
template <class... A>
struct number_type {
  template <class X>
  static constexpr bool usable() {
    if constexpr (ExprOperand<X>) return !std::is_same_v<typename expr_t<X>::value_type, bool>;
    else return false;
  }
  template <class X, class... R>
  static auto pick() {
    if constexpr (usable<X>()) return std::type_identity<typename expr_t<X>::value_type>{};
    else if constexpr (sizeof...(R) > 0) return pick<R...>();
    else return std::type_identity<float>{};
  }
  using type = typename decltype(pick<A...>())::type;
};

template <class F, class... A>
auto build(F f, A&&... a) {
  using T = typename number_type<A...>::type;
  return make_map(f, operand<T>(std::forward<A>(a))...);
}

}  // namespace expr

// ---- arithmetic operators ----

template <class A, class B>
  requires expr::Operands<A, B>
auto operator+(A&& a, B&& b) {
  return expr::build(expr::Add{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto operator-(A&& a, B&& b) {
  return expr::build(expr::Sub{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto operator*(A&& a, B&& b) {
  return expr::build(expr::Mul{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto operator/(A&& a, B&& b) {
  return expr::build(expr::Div{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A>
  requires expr::Operands<A>
auto operator-(A&& a) {
  return expr::build(expr::Neg{}, std::forward<A>(a));
}

// ---- comparisons (bool masks) ----

template <class A, class B>
  requires expr::Operands<A, B>
auto operator<(A&& a, B&& b) {
  return expr::build(expr::Less{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto operator<=(A&& a, B&& b) {
  return expr::build(expr::LessEq{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto operator>(A&& a, B&& b) {
  return expr::build(expr::Greater{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto operator>=(A&& a, B&& b) {
  return expr::build(expr::GreaterEq{}, std::forward<A>(a), std::forward<B>(b));
}
/// Elementwise a == b (a named function: operator== keeps its usual meaning).
template <class A, class B>
  requires expr::Operands<A, B>
auto equal(A&& a, B&& b) {
  return expr::build(expr::Equal{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto not_equal(A&& a, B&& b) {
  return expr::build(expr::NotEqual{}, std::forward<A>(a), std::forward<B>(b));
}

/// `a` where `mask` is true, else `b`.
template <class M, class A, class B>
  requires expr::Operands<M, A, B>
auto where(M&& mask, A&& a, B&& b) {
  using T = typename expr::number_type<A, B>::type;
  return expr::make_map(expr::Where{}, expr::as_expr(std::forward<M>(mask)), expr::operand<T>(std::forward<A>(a)),
                        expr::operand<T>(std::forward<B>(b)));
}

// ---- functions ----

#define CTDL_UNARY_FUNCTION(fn, Functor)            \
  template <class A>                                \
    requires expr::Operands<A>                      \
  auto fn(A&& a) {                                  \
    return expr::build(expr::Functor{}, std::forward<A>(a)); \
  }
CTDL_UNARY_FUNCTION(exp, Exp)
CTDL_UNARY_FUNCTION(log, Log)
CTDL_UNARY_FUNCTION(tanh, Tanh)
CTDL_UNARY_FUNCTION(erf, Erf)
CTDL_UNARY_FUNCTION(sqrt, Sqrt)
CTDL_UNARY_FUNCTION(rsqrt, Rsqrt)
CTDL_UNARY_FUNCTION(square, Square)
/// GELU, erf form (BERT's `gelu`): x Φ(x).
CTDL_UNARY_FUNCTION(gelu, GeluErf)
/// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
CTDL_UNARY_FUNCTION(gelu_tanh, GeluTanh)
#undef CTDL_UNARY_FUNCTION

/// a^p for a scalar exponent p.
template <class A>
  requires expr::Operands<A>
auto pow(A&& a, double p) {
  return expr::build(expr::Pow{{}, p}, std::forward<A>(a));
}

template <class A, class B>
  requires expr::Operands<A, B>
auto maximum(A&& a, B&& b) {
  return expr::build(expr::Maximum{}, std::forward<A>(a), std::forward<B>(b));
}
template <class A, class B>
  requires expr::Operands<A, B>
auto minimum(A&& a, B&& b) {
  return expr::build(expr::Minimum{}, std::forward<A>(a), std::forward<B>(b));
}

/// Converts to element type U, rounding to nearest even.
template <class U, class A>
  requires expr::Operands<A>
auto cast(A&& a) {
  return expr::make_map(expr::Cast<U>{}, expr::as_expr(std::forward<A>(a)));
}

/// Makes any expression operand (tensor, view, Var) an expression, e.g. to hold it in
/// an `auto` or to pass it where an expression is expected.
template <class A>
  requires expr::ExprOperand<A>
auto lazy(A&& a) {
  return expr::as_expr(std::forward<A>(a));
}

}  // namespace ctdl

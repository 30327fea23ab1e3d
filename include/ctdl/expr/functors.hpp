#pragma once
// Elementwise functors: the math of every expression node, written once and shared by
// the CPU evaluator and CUDA kernels (CTDL_HOST_DEVICE), each beside its derivative.
//
// A functor F provides
//   name                       for error messages
//   result<Ts...>              the element type of F applied to operands of types Ts
//   operator()(c...)           the value, on compute types (float for bf16/fp16)
//   partial<I, T>(f, args...)  ∂F/∂(argument I) as an expression over the argument
//                              expressions; T is the result's element type
// Differentiation (grad.hpp) multiplies partial<I> by the derivative of argument I.
// Cast and Retype have no partial (grad.hpp retypes the derivative through a cast), nor
// do GeluErfGrad and GeluTanhGrad: differentiating a GELU derivative does not compile.
//
// Derivatives, with u the argument:
//   exp: exp(u)   log: 1/u   tanh: 1 - tanh(u)^2   erf: 2/sqrt(pi) exp(-u^2)
//   sqrt: 1/(2 sqrt(u))   rsqrt: -rsqrt(u)/(2u)   pow(u, p): p u^(p-1)
//   gelu (erf form, x Φ(x)): Φ(x) + x φ(x)
//   gelu (tanh form, 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)):
//        0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2),  t = tanh(...)
//   maximum(a, b): 1 to a where a >= b, else to b (ties go to a); minimum likewise
//   comparisons: 0 (they produce masks)   where(c, a, b): mask c to a, !c to b

#include <cmath>
#include <type_traits>

#include "ctdl/core/math.hpp"
#include "ctdl/expr/expression.hpp"

namespace ctdl::expr {

template <class... Ts>
struct same_type;
template <class T, class... Ts>
struct same_type<T, Ts...> {
  static_assert((std::is_same_v<T, Ts> && ...),
                "element types differ within one expression: convert operands with ctdl::cast<T>(...)");
  using type = T;
};
/// The single element type shared by all operands (a compile error if they differ).
template <class... Ts>
using same_t = typename same_type<Ts...>::type;

template <class F, class... A>
auto make_map(F f, A... a) {
  return Map<F, A...>(f, std::move(a)...);
}
template <class T>
Scalar<T> scalar(double v) {
  return Scalar<T>{{}, static_cast<compute_t<T>>(v)};
}

struct Neg;
struct Add;
struct Sub;
struct Mul;
struct Div;
struct Exp;
struct Square;
struct Where;
struct GreaterEq;
struct Greater;
struct LessEq;
struct Rsqrt;
struct Sqrt;
struct Tanh;
struct GeluErfGrad;
struct GeluTanhGrad;

/// Base of the arithmetic functors: result type is the operands' common element type.
struct Arithmetic {
  template <class... Ts>
  using result = same_t<Ts...>;
};

// ---- comparisons and selection ----

/// Base of comparisons: operands share a type; the result is a bool mask whose
/// derivative is zero.
template <class Derived>
struct Comparison {
  template <class... Ts>
  using result = std::conditional_t<true, bool, same_t<Ts...>>;
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Derived&, const A&, const B&) { return Zero<T>{}; }
};

struct Less : Comparison<Less> {
  static constexpr const char* name = "less";
  template <class C>
  CTDL_HOST_DEVICE bool operator()(C a, C b) const { return a < b; }
};
struct LessEq : Comparison<LessEq> {
  static constexpr const char* name = "less_equal";
  template <class C>
  CTDL_HOST_DEVICE bool operator()(C a, C b) const { return a <= b; }
};
struct Greater : Comparison<Greater> {
  static constexpr const char* name = "greater";
  template <class C>
  CTDL_HOST_DEVICE bool operator()(C a, C b) const { return a > b; }
};
struct GreaterEq : Comparison<GreaterEq> {
  static constexpr const char* name = "greater_equal";
  template <class C>
  CTDL_HOST_DEVICE bool operator()(C a, C b) const { return a >= b; }
};
struct Equal : Comparison<Equal> {
  static constexpr const char* name = "equal";
  template <class C>
  CTDL_HOST_DEVICE bool operator()(C a, C b) const { return a == b; }
};
struct NotEqual : Comparison<NotEqual> {
  static constexpr const char* name = "not_equal";
  template <class C>
  CTDL_HOST_DEVICE bool operator()(C a, C b) const { return a != b; }
};

/// where(c, a, b): a where the mask c is true, else b.
struct Where {
  static constexpr const char* name = "where";
  template <class Cond, class A, class B>
  using result = std::enable_if_t<std::is_same_v<Cond, bool>, same_t<A, B>>;
  template <class C>
  CTDL_HOST_DEVICE C operator()(bool c, C a, C b) const { return c ? a : b; }
  template <std::size_t I, class T, class Cd, class A, class B>
  static auto partial(const Where&, const Cd& c, const A&, const B&) {
    if constexpr (I == 0) return Zero<T>{};
    else if constexpr (I == 1) return make_map(Where{}, c, One<T>{}, Zero<T>{});
    else return make_map(Where{}, c, Zero<T>{}, One<T>{});
  }
};

// ---- arithmetic ----

struct Neg : Arithmetic {
  static constexpr const char* name = "neg";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return -a; }
  template <std::size_t I, class T, class A>
  static auto partial(const Neg&, const A&) { return Constant<T, -1>{}; }
};

struct Add : Arithmetic {
  static constexpr const char* name = "add";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a, C b) const { return a + b; }
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Add&, const A&, const B&) { return One<T>{}; }
};

struct Sub : Arithmetic {
  static constexpr const char* name = "sub";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a, C b) const { return a - b; }
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Sub&, const A&, const B&) {
    if constexpr (I == 0) return One<T>{};
    else return Constant<T, -1>{};
  }
};

struct Mul : Arithmetic {
  static constexpr const char* name = "mul";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a, C b) const { return a * b; }
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Mul&, const A& a, const B& b) {
    if constexpr (I == 0) return b;
    else return a;
  }
};

struct Div : Arithmetic {
  static constexpr const char* name = "div";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a, C b) const { return a / b; }
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Div&, const A& a, const B& b) {
    if constexpr (I == 0) return make_map(Div{}, One<T>{}, b);                             // 1/b
    else return make_map(Neg{}, make_map(Div{}, a, make_map(Mul{}, b, b)));                // -a/b^2
  }
};

struct Square : Arithmetic {
  static constexpr const char* name = "square";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return a * a; }
  template <std::size_t I, class T, class A>
  static auto partial(const Square&, const A& a) { return make_map(Mul{}, scalar<T>(2.0), a); }
};

struct Maximum : Arithmetic {
  static constexpr const char* name = "maximum";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a, C b) const { return a >= b ? a : b; }
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Maximum&, const A& a, const B& b) {
    if constexpr (I == 0) return make_map(Where{}, make_map(GreaterEq{}, a, b), One<T>{}, Zero<T>{});
    else return make_map(Where{}, make_map(GreaterEq{}, a, b), Zero<T>{}, One<T>{});
  }
};

struct Minimum : Arithmetic {
  static constexpr const char* name = "minimum";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a, C b) const { return a <= b ? a : b; }
  template <std::size_t I, class T, class A, class B>
  static auto partial(const Minimum&, const A& a, const B& b) {
    if constexpr (I == 0) return make_map(Where{}, make_map(LessEq{}, a, b), One<T>{}, Zero<T>{});
    else return make_map(Where{}, make_map(LessEq{}, a, b), Zero<T>{}, One<T>{});
  }
};

// ---- transcendental ----

struct Exp : Arithmetic {
  static constexpr const char* name = "exp";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return math::exp(a); }
  template <std::size_t I, class T, class A>
  static auto partial(const Exp&, const A& a) { return make_map(Exp{}, a); }
};

struct Log : Arithmetic {
  static constexpr const char* name = "log";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return std::log(a); }
  template <std::size_t I, class T, class A>
  static auto partial(const Log&, const A& a) { return make_map(Div{}, One<T>{}, a); }
};

struct Tanh : Arithmetic {
  static constexpr const char* name = "tanh";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return math::tanh(a); }
  template <std::size_t I, class T, class A>
  static auto partial(const Tanh&, const A& a) {
    return make_map(Sub{}, One<T>{}, make_map(Square{}, make_map(Tanh{}, a)));
  }
};

struct Erf : Arithmetic {
  static constexpr const char* name = "erf";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return math::erf(a); }
  template <std::size_t I, class T, class A>
  static auto partial(const Erf&, const A& a) {
    constexpr double two_over_sqrt_pi = 1.1283791670955126;
    return make_map(Mul{}, scalar<T>(two_over_sqrt_pi), make_map(Exp{}, make_map(Neg{}, make_map(Square{}, a))));
  }
};

struct Sqrt : Arithmetic {
  static constexpr const char* name = "sqrt";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return std::sqrt(a); }
  template <std::size_t I, class T, class A>
  static auto partial(const Sqrt&, const A& a) { return make_map(Div{}, scalar<T>(0.5), make_map(Sqrt{}, a)); }
};

struct Rsqrt : Arithmetic {
  static constexpr const char* name = "rsqrt";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return C(1) / std::sqrt(a); }
  template <std::size_t I, class T, class A>
  static auto partial(const Rsqrt&, const A& a) {
    return make_map(Mul{}, scalar<T>(-0.5), make_map(Div{}, make_map(Rsqrt{}, a), a));
  }
};

/// u^p for a runtime scalar exponent p.
struct Pow : Arithmetic {
  static constexpr const char* name = "pow";
  double p;
  template <class C>
  CTDL_HOST_DEVICE C operator()(C a) const { return std::pow(a, static_cast<C>(p)); }
  template <std::size_t I, class T, class A>
  static auto partial(const Pow& f, const A& a) { return make_map(Mul{}, scalar<T>(f.p), make_map(Pow{{}, f.p - 1}, a)); }
};

// ---- GELU, both forms ----

/// d/dx of GeluErf: Φ(x) + x φ(x).
struct GeluErfGrad : Arithmetic {
  static constexpr const char* name = "gelu_grad";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C x) const {
    const C cdf = C(0.5) * (C(1) + math::erf(x * C(0.70710678118654752440)));
    const C pdf = math::exp(C(-0.5) * x * x) * C(0.39894228040143267794);
    return cdf + x * pdf;
  }
};

/// x Φ(x) = 0.5 x (1 + erf(x / sqrt 2)): BERT's `gelu`.
struct GeluErf : Arithmetic {
  static constexpr const char* name = "gelu";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C x) const {
    return C(0.5) * x * (C(1) + math::erf(x * C(0.70710678118654752440)));
  }
  template <std::size_t I, class T, class A>
  static auto partial(const GeluErf&, const A& a) { return make_map(GeluErfGrad{}, a); }
};


/// d/dx of GeluTanh.
struct GeluTanhGrad : Arithmetic {
  static constexpr const char* name = "gelu_tanh_grad";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C x) const {
    constexpr C k = C(0.79788456080286535588);
    const C t = math::tanh(k * (x + C(0.044715) * x * x * x));
    return C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * k * (C(1) + C(3 * 0.044715) * x * x);
  }
};

/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): `gelu_new` / `gelu_pytorch_tanh`.
struct GeluTanh : Arithmetic {
  static constexpr const char* name = "gelu_tanh";
  template <class C>
  CTDL_HOST_DEVICE C operator()(C x) const {
    const C u = C(0.79788456080286535588) * (x + C(0.044715) * x * x * x);
    return C(0.5) * x * (C(1) + math::tanh(u));
  }
  template <std::size_t I, class T, class A>
  static auto partial(const GeluTanh&, const A& a) { return make_map(GeluTanhGrad{}, a); }
};


// ---- conversion ----

/// Rounds to element type U (nearest even) and continues in U's compute type.
template <class U>
struct Cast {
  static constexpr const char* name = "cast";
  template <class T>
  using result = U;
  template <class C>
  CTDL_HOST_DEVICE compute_t<U> operator()(C a) const {
    return convert<compute_t<U>>(convert<U>(a));
  }
  // The chain rule through a cast retypes the derivative without rounding (grad.hpp).
};

/// Changes the element type without rounding through it: the chain rule through
/// cast<U> (the derivative of a rounding is 1, and rounding it again would lose bits).
template <class U>
struct Retype {
  static constexpr const char* name = "retype";
  template <class T>
  using result = U;
  template <class C>
  CTDL_HOST_DEVICE compute_t<U> operator()(C a) const {
    return static_cast<compute_t<U>>(a);
  }
};

template <class F>
inline constexpr bool is_cast_v = false;
template <class U>
inline constexpr bool is_cast_v<Cast<U>> = true;

}  // namespace ctdl::expr

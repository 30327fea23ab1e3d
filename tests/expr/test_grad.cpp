// Compile-time derivatives: every node type passes gradcheck (through the tape), grad()
// agrees with finite differences directly, and the derivative trees simplify.
#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {

using SX = Shape<dyn, 4>;
using SY = Shape<4>;

Var<double, SX> var_x(double lo, double hi, unsigned seed = 11) {
  return Var<double, SX>(test::uniform<double, SX>({3, 4}, lo, hi, seed));
}
Var<double, SY> var_y(double lo, double hi, unsigned seed = 12) {
  return Var<double, SY>(test::uniform<double, SY>({4}, lo, hi, seed));
}

/// gradcheck of x -> f(x), recorded as one expression entry.
template <class F>
void check_unary(F f, double lo, double hi) {
  auto x = var_x(lo, hi);
  auto r = gradcheck([&](Tape& t, const auto& xv) { return t.record(f(xv)); }, x);
  INFO(r.report);
  REQUIRE(r.ok);
  REQUIRE(r.checked == 12);
}

/// gradcheck of (x, y) -> f(x, y) with y broadcast along x's rows.
template <class F>
void check_binary(F f, double lo, double hi) {
  auto x = var_x(lo, hi);
  auto y = var_y(lo, hi);
  auto r = gradcheck([&](Tape& t, const auto& xv, const auto& yv) { return t.record(f(xv, yv)); }, x, y);
  INFO(r.report);
  REQUIRE(r.ok);
  REQUIRE(r.checked == 16);
}

}  // namespace

TEST_CASE("gradcheck: leaf and scalar") {
  check_unary([](const auto& x) { return lazy(x); }, -2, 2);
  check_unary([](const auto& x) { return x * 2.5; }, -2, 2);
  check_unary([](const auto& x) { return 3.0 - x; }, -2, 2);
}

TEST_CASE("gradcheck: arithmetic") {
  check_unary([](const auto& x) { return -x; }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return x + y; }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return x - y; }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return x * y; }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return x / y; }, 0.5, 2);
  check_binary([](const auto& x, const auto& y) { return y / x; }, 0.5, 2);
  check_unary([](const auto& x) { return square(x); }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return maximum(x, y); }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return minimum(x, y); }, -2, 2);
}

TEST_CASE("gradcheck: transcendental functions") {
  check_unary([](const auto& x) { return exp(x); }, -2, 2);
  check_unary([](const auto& x) { return log(x); }, 0.2, 3);
  check_unary([](const auto& x) { return tanh(x); }, -2, 2);
  check_unary([](const auto& x) { return erf(x); }, -2, 2);
  check_unary([](const auto& x) { return sqrt(x); }, 0.2, 3);
  check_unary([](const auto& x) { return rsqrt(x); }, 0.2, 3);
  check_unary([](const auto& x) { return pow(x, 2.5); }, 0.2, 3);
  check_unary([](const auto& x) { return pow(x, -1.5); }, 0.2, 3);
}

TEST_CASE("gradcheck: both GELU forms") {
  check_unary([](const auto& x) { return gelu(x); }, -3, 3);
  check_unary([](const auto& x) { return gelu_tanh(x); }, -3, 3);
  check_binary([](const auto& x, const auto& b) { return gelu(x * 1.5 + b); }, -3, 3);
}

TEST_CASE("gradcheck: comparisons, where and cast") {
  // The mask is piecewise constant; no element lies near the threshold 0.05 here.
  check_binary([](const auto& x, const auto& y) { return where(x > y, x * y, -x); }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return where(x <= 0.05, y, exp(x)); }, -2, 2);
  check_unary([](const auto& x) { return cast<double>(x * x) * cast<double>(x >= 0); }, -2, 2);
  check_binary([](const auto& x, const auto& y) { return x * cast<double>(not_equal(x, y)) + cast<double>(equal(x, x)); }, -2, 2);
}

TEST_CASE("gradcheck: a deep tree with one operand used several times") {
  check_binary([](const auto& x, const auto& y) { return tanh(x * x + y) * exp(-x) / (1.0 + square(y)) - sqrt(x * x + 1.0); },
               -1.5, 1.5);
}

TEST_CASE("grad(): elementwise derivative agrees with finite differences") {
  auto x = test::uniform<double, Shape<dyn>>({9}, 0.3, 2, 21);
  auto w = test::uniform<double, Shape<dyn>>({9}, -1, 1, 22);
  auto f = [&] { return gelu_tanh(x * w) + log(x) * x - rsqrt(x + w * w); };
  Tensor<double, Shape<dyn>> g = grad(f(), x);
  const double eps = 1e-6;
  for (index_t i = 0; i < 9; ++i) {
    const double x0 = x(i);
    x(i) = x0 + eps;
    Tensor<double, Shape<dyn>> plus = f();
    x(i) = x0 - eps;
    Tensor<double, Shape<dyn>> minus = f();
    x(i) = x0;
    const double numeric = (plus(i) - minus(i)) / (2 * eps);
    REQUIRE(test::close(g(i), numeric, 1e-7));
  }
  REQUIRE_THROWS_WITH(grad(x * 2.0, w), Catch::Matchers::Contains("does not appear in the expression"));
}

TEST_CASE("grad(): derivative trees simplify at compile time") {
  Tensor<double, Shape<dyn>> x({3}, {1, 2, 3}), w({3}, {4, 5, 6}), b({3}, {7, 8, 9});
  auto e = x * w + b;
  using Leaf = expr::Leaf<double, Shape<dyn>>;
  STATIC_REQUIRE(std::is_same_v<decltype(expr::derivative<2>(e)), expr::One<double>>);  // d/db = 1
  STATIC_REQUIRE(std::is_same_v<decltype(expr::derivative<0>(e)), Leaf>);              // d/dx = w
  STATIC_REQUIRE(std::is_same_v<decltype(expr::derivative<1>(e)), Leaf>);              // d/dw = x
  STATIC_REQUIRE(std::is_same_v<decltype(expr::derivative<0>(x < w)), expr::Zero<bool>>);
  Tensor<double, Shape<dyn>> dx = grad(e, x), db = grad(e, b);
  REQUIRE(dx(1) == 5.0);
  REQUIRE(db(2) == 1.0);
  // x appears twice: d(x * x)/dx = 2x, the sum over both leaves.
  Tensor<double, Shape<dyn>> d2 = grad(x * x, x);
  REQUIRE(d2(2) == 6.0);
}

TEST_CASE("grad(): through a cast, the derivative is retyped, not rounded") {
  Tensor<double, Shape<dyn>> x({2}, {0.1, 0.2});
  auto e = cast<float>(x) * 3.0f;
  auto g = grad(e, x);
  STATIC_REQUIRE(std::is_same_v<decltype(g)::value_type, float>);
  Tensor<float, Shape<dyn>> gt = g;
  REQUIRE(gt(0) == 3.0f);
}

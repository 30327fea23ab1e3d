// Values of every expression function against a double-precision reference, for each dtype.
#include <catch2/catch.hpp>

#include <functional>

#include "../test_util.hpp"

using namespace ctdl;
using test::tolerance;

namespace {

constexpr double kPi = 3.14159265358979323846;
double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / kPi) * (x + 0.044715 * x * x * x)));
}

/// Evaluates `make(a, b)` into a tensor and compares each element with ref(a_i, b_i).
template <class T, class Make, class Ref>
void check_binary(Make make, Ref ref, double lo, double hi) {
  using S = Shape<dyn, 7>;
  auto a = test::uniform<T, S>({5, 7}, lo, hi, 1);
  auto b = test::uniform<T, S>({5, 7}, lo, hi, 2);
  Tensor<T, S> out = make(a, b);
  for (index_t i = 0; i < out.size(); ++i) {
    const double expect = ref(test::to_double(a.data()[i]), test::to_double(b.data()[i]));
    INFO("element " << i << " a=" << test::to_double(a.data()[i]) << " b=" << test::to_double(b.data()[i]));
    REQUIRE(test::close(test::to_double(out.data()[i]), expect, tolerance<T>()));
  }
}

template <class T, class Make, class Ref>
void check_unary(Make make, Ref ref, double lo, double hi) {
  check_binary<T>([&](const auto& a, const auto&) { return make(a); }, [&](double a, double) { return ref(a); }, lo, hi);
}

}  // namespace

TEMPLATE_TEST_CASE("expr: arithmetic", "[expr]", float, double, bf16, fp16) {
  using T = TestType;
  check_binary<T>([](auto& a, auto& b) { return a + b; }, std::plus<>{}, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return a - b; }, std::minus<>{}, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return a * b; }, std::multiplies<>{}, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return a / b; }, std::divides<>{}, 0.5, 3);
  check_unary<T>([](auto& a) { return -a; }, std::negate<>{}, -3, 3);
  check_unary<T>([](auto& a) { return a * 2 + 1; }, [](double a) { return a * 2 + 1; }, -3, 3);
  check_unary<T>([](auto& a) { return 1.5 - a; }, [](double a) { return 1.5 - a; }, -3, 3);
  check_unary<T>([](auto& a) { return square(a); }, [](double a) { return a * a; }, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return maximum(a, b); }, [](double a, double b) { return std::max(a, b); }, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return minimum(a, b); }, [](double a, double b) { return std::min(a, b); }, -3, 3);
}

TEMPLATE_TEST_CASE("expr: transcendental functions", "[expr]", float, double, bf16, fp16) {
  using T = TestType;
  check_unary<T>([](auto& a) { return exp(a); }, [](double a) { return std::exp(a); }, -3, 3);
  check_unary<T>([](auto& a) { return log(a); }, [](double a) { return std::log(a); }, 0.1, 5);
  check_unary<T>([](auto& a) { return tanh(a); }, [](double a) { return std::tanh(a); }, -3, 3);
  check_unary<T>([](auto& a) { return erf(a); }, [](double a) { return std::erf(a); }, -3, 3);
  check_unary<T>([](auto& a) { return sqrt(a); }, [](double a) { return std::sqrt(a); }, 0.1, 5);
  check_unary<T>([](auto& a) { return rsqrt(a); }, [](double a) { return 1 / std::sqrt(a); }, 0.1, 5);
  check_unary<T>([](auto& a) { return pow(a, 1.7); }, [](double a) { return std::pow(a, 1.7); }, 0.1, 3);
  check_unary<T>([](auto& a) { return gelu(a); }, gelu_ref, -4, 4);
  check_unary<T>([](auto& a) { return gelu_tanh(a); }, gelu_tanh_ref, -4, 4);
}

TEMPLATE_TEST_CASE("expr: comparisons, where and cast", "[expr]", float, double, bf16, fp16) {
  using T = TestType;
  check_binary<T>([](auto& a, auto& b) { return where(a < b, a, b); }, [](double a, double b) { return a < b ? a : b; }, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return where(a >= b, a * 2, 0); },
                  [](double a, double b) { return a >= b ? a * 2 : 0; }, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return cast<T>(a > b); }, [](double a, double b) { return a > b ? 1.0 : 0.0; }, -3, 3);
  check_binary<T>([](auto& a, auto& b) { return cast<T>(a <= b) + cast<T>(equal(a, a)) - cast<T>(not_equal(a, b)); },
                  [](double a, double b) { return (a <= b) + 1.0 - (a != b); }, -3, 3);
  // A mask stored as a bool tensor.
  using S = Shape<dyn, 7>;
  auto a = test::uniform<T, S>({5, 7}, -1, 1, 3);
  Tensor<bool, S> mask = a > 0;
  for (index_t i = 0; i < a.size(); ++i) REQUIRE(mask.data()[i] == (test::to_double(a.data()[i]) > 0));
}

TEST_CASE("expr: cast rounds to the target type once, to nearest even") {
  Tensor<double, Shape<dyn>> x({3}, {1.0 + std::ldexp(1.0, -8), 1.0 + 3 * std::ldexp(1.0, -8), 0.1});
  Tensor<bf16, Shape<dyn>> b = cast<bf16>(x);
  REQUIRE(convert<double>(b(0)) == 1.0);
  REQUIRE(convert<double>(b(1)) == 1.0 + std::ldexp(1.0, -6));
  // A fused bf16 expression rounds once at the store, not after every operation:
  // (x * 3) / 3 in float is exact for x = bf16(0.1), so the result equals the input.
  Tensor<bf16, Shape<dyn>> y = lazy(b) * 3 / 3;
  REQUIRE(convert<double>(y(2)) == convert<double>(b(2)));
  Tensor<float, Shape<dyn>> f = cast<float>(b) + 0.0f;
  REQUIRE(f(2) == convert<float>(b(2)));
}

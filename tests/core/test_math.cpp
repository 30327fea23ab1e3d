#include <catch2/catch.hpp>

#include <ctdl/core/math.hpp>

#include <cmath>
#include <limits>

using namespace ctdl;

namespace {
/// Largest relative error of f against the double-precision reference over [lo, hi].
template <class F, class R>
double max_relative_error(F f, R ref, float lo, float hi, int n = 2000003) {
  double worst = 0;
  for (int i = 0; i <= n; ++i) {
    const float x = lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(n);
    const double want = ref(static_cast<double>(x));
    if (want == 0 || std::abs(want) < 1e-37) continue;
    worst = std::max(worst, std::abs(static_cast<double>(f(x)) - want) / std::abs(want));
  }
  return worst;
}
}  // namespace

TEST_CASE("math::exp is within 2 ulp of exp, with the edge cases of expf") {
  const double e = max_relative_error([](float x) { return math::exp(x); }, [](double x) { return std::exp(x); }, -87.0f, 88.0f);
  INFO("max relative error " << e);
  REQUIRE(e <= 2 * std::numeric_limits<float>::epsilon());
  REQUIRE(math::exp(0.0f) == 1.0f);
  REQUIRE(math::exp(-10000.0f) == 0.0f);
  REQUIRE(math::exp(100.0f) == std::numeric_limits<float>::infinity());
  REQUIRE(std::isnan(math::exp(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("math::erf and math::tanh are within 4e-7 relative of the reference") {
  const double e1 = max_relative_error([](float x) { return math::erf(x); }, [](double x) { return std::erf(x); }, -6.0f, 6.0f);
  const double e2 = max_relative_error([](float x) { return math::tanh(x); }, [](double x) { return std::tanh(x); }, -12.0f, 12.0f);
  INFO("erf " << e1 << ", tanh " << e2);
  REQUIRE(e1 <= 4e-7);
  REQUIRE(e2 <= 4e-7);
  REQUIRE(math::erf(0.0f) == 0.0f);
  REQUIRE(math::tanh(0.0f) == 0.0f);
  REQUIRE(math::erf(50.0f) == 1.0f);
  REQUIRE(math::tanh(-50.0f) == -1.0f);
  REQUIRE(std::isnan(math::tanh(std::numeric_limits<float>::quiet_NaN())));
}

#include <catch2/catch.hpp>

#include <ctdl/ops/cross_entropy.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {
double reference(const Tensor<double, Shape<dyn, 4>>& x, const std::vector<int>& y, const std::vector<double>& w) {
  double loss = 0, total = 0;
  for (index_t n = 0; n < x.extent(0); ++n) {
    if (w[n] == 0) continue;
    double m = -1e300, s = 0;
    for (index_t c = 0; c < 4; ++c) m = std::max(m, x(n, c));
    for (index_t c = 0; c < 4; ++c) s += std::exp(x(n, c) - m);
    loss += w[n] * (m + std::log(s) - x(n, y[n]));
    total += w[n];
  }
  return loss / total;
}
}  // namespace

TEST_CASE("cross_entropy: mean over examples, masked rows ignored") {
  auto x = test::uniform<double, Shape<dyn, 4>>({5, 4}, -3, 3, 1);
  Tensor<std::int32_t, Shape<dyn>> labels({5}, {0, 3, 2, -100, 1});
  Tensor<double, Shape<dyn>> mask({5}, {1, 1, 1, 0, 1});
  Tape tape;
  auto l = ops::cross_entropy(tape, Var<double, Shape<dyn, 4>>(x), labels, mask);
  REQUIRE(test::close(l.value().item(), reference(x, {0, 3, 2, 0, 1}, {1, 1, 1, 0, 1}), 1e-14));
  Tensor<std::int32_t, Shape<dyn>> all({5}, {0, 3, 2, 1, 1});
  auto l2 = ops::cross_entropy(tape, Var<double, Shape<dyn, 4>>(x), all);
  REQUIRE(test::close(l2.value().item(), reference(x, {0, 3, 2, 1, 1}, {1, 1, 1, 1, 1}), 1e-14));
  REQUIRE_THROWS_WITH(ops::cross_entropy(tape, Var<double, Shape<dyn, 4>>(x), labels),
                      Catch::Matchers::Contains("label -100 of row 3 is outside [0, 4)"));
}

TEST_CASE("cross_entropy: gradcheck, with and without a mask") {
  Var<double, Shape<dyn, 4>> x(test::uniform<double, Shape<dyn, 4>>({5, 4}, -3, 3, 2));
  Tensor<std::int32_t, Shape<dyn>> labels({5}, {0, 3, 2, 1, 1});
  Tensor<double, Shape<dyn>> mask({5}, {1, 0, 1, 1, 0});
  auto r = gradcheck([&](Tape& t, const auto& xv) { return ops::cross_entropy(t, xv, labels); }, x);
  INFO(r.report);
  REQUIRE(r.ok);
  auto r2 = gradcheck([&](Tape& t, const auto& xv) { return ops::cross_entropy(t, xv, labels, mask); }, x);
  INFO(r2.report);
  REQUIRE(r2.ok);
}

#include <catch2/catch.hpp>

#include <ctdl/ops/layer_norm.hpp>

#include "../test_util.hpp"

using namespace ctdl;

TEMPLATE_TEST_CASE("layer_norm: values against a double reference (biased variance)", "[ops]", float, double) {
  using T = TestType;
  using S = Shape<dyn, 8>;
  auto x = test::uniform<T, S>({5, 8}, -3, 3, 1);
  auto g = test::uniform<T, Shape<8>>({8}, 0.5, 1.5, 2);
  auto b = test::uniform<T, Shape<8>>({8}, -1, 1, 3);
  Tape tape;
  auto y = ops::layer_norm(tape, Var<T, S>(x), Var<T, Shape<8>>(g), Var<T, Shape<8>>(b), 1e-12);
  for (index_t r = 0; r < 5; ++r) {
    double mu = 0, var = 0;
    for (index_t c = 0; c < 8; ++c) mu += x(r, c) / 8.0;
    for (index_t c = 0; c < 8; ++c) var += (x(r, c) - mu) * (x(r, c) - mu) / 8.0;
    for (index_t c = 0; c < 8; ++c) {
      const double expect = (x(r, c) - mu) / std::sqrt(var + 1e-12) * g(c) + b(c);
      REQUIRE(test::close(y.value()(r, c), expect, test::tolerance<T>() * 10));
    }
  }
}

TEST_CASE("layer_norm: gradcheck for x, gamma and beta") {
  using S = Shape<dyn, 6>;
  Var<double, S> x(test::uniform<double, S>({4, 6}, -2, 2, 4));
  Var<double, Shape<6>> g(test::uniform<double, Shape<6>>({6}, 0.5, 1.5, 5));
  Var<double, Shape<6>> b(test::uniform<double, Shape<6>>({6}, -1, 1, 6));
  auto r = gradcheck([](Tape& t, const auto& xv, const auto& gv, const auto& bv) {
    return ops::layer_norm(t, xv, gv, bv, 1e-5);
  }, x, g, b);
  INFO(r.report);
  REQUIRE(r.ok);
  Tape tape;
  Var<double, Shape<6>> wrong(Tensor<double, Shape<6>>({6}));
  Var<double, Shape<dyn, dyn>> xd(Tensor<double, Shape<dyn, dyn>>({2, 5}));
  Var<double, Shape<dyn>> gd(Tensor<double, Shape<dyn>>({6})), bd(Tensor<double, Shape<dyn>>({6}));
  REQUIRE_THROWS_AS(ops::layer_norm(tape, xd, gd, bd), ShapeError);
}

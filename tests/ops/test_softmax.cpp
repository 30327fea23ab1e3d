#include <catch2/catch.hpp>

#include <ctdl/ops/softmax.hpp>

#include "../test_util.hpp"

using namespace ctdl;

TEMPLATE_TEST_CASE("softmax: values against a double reference, with the BERT additive mask", "[ops]", float, double,
                   bf16) {
  using T = TestType;
  using S = Shape<dyn, 3, 6>;  // batch x query x key
  auto x = test::uniform<T, S>({2, 3, 6}, -3, 3, 1);
  // BERT: (1 - attention_mask) * -10000, one mask row per example broadcast over queries.
  Tensor<T, Shape<dyn, 1, 6>> mask({2, 1, 6});
  for (index_t k = 0; k < 6; ++k) {
    mask(0, 0, k) = convert<T>(k < 4 ? 0.0 : -10000.0);
    mask(1, 0, k) = convert<T>(0.0);
  }
  Tape tape;
  auto y = ops::softmax(tape, Var<T, S>(x), mask);
  for (index_t b = 0; b < 2; ++b)
    for (index_t q = 0; q < 3; ++q) {
      double z[6], m = -1e300, s = 0;
      for (index_t k = 0; k < 6; ++k) m = std::max(m, z[k] = test::to_double(x(b, q, k)) + test::to_double(mask(b, 0, k)));
      for (double& v : z) s += v = std::exp(v - m);
      for (index_t k = 0; k < 6; ++k) REQUIRE(test::close(test::to_double(y.value()(b, q, k)), z[k] / s, test::tolerance<T>()));
      if (b == 0) REQUIRE(test::to_double(y.value()(b, q, 5)) < 1e-6);  // masked keys get ~0
    }
}

TEST_CASE("softmax: gradcheck, plain and masked") {
  using S = Shape<dyn, 7>;
  Var<double, S> x(test::uniform<double, S>({4, 7}, -2, 2, 2));
  auto r = gradcheck([](Tape& t, const auto& xv) { return ops::softmax(t, xv); }, x);
  INFO(r.report);
  REQUIRE(r.ok);
  Tensor<double, Shape<7>> mask({7}, {0, 0, -10000, 0, 0, -10000, 0});
  auto r2 = gradcheck([&](Tape& t, const auto& xv) { return ops::softmax(t, t.record(xv * 2.0), mask); }, x);
  INFO(r2.report);
  REQUIRE(r2.ok);
}

TEST_CASE("softmax and the reductions over the last axis take empty inputs (as the CUDA kernels do)") {
  using S = Shape<dyn, dyn>;
  for (const Extents<S> e : {Extents<S>{0, 5}, Extents<S>{3, 0}}) {
    INFO("[" << e[0] << ", " << e[1] << "]");
    Tape tape;
    Var<float, S> x{Tensor<float, S>(e)};
    auto y = ops::softmax(tape, x);
    CHECK(y.value().extents() == e);
    tape.backward(ops::sum(tape, y));
    CHECK(x.has_grad());
    CHECK(x.grad().extents() == e);

    const auto sums = ops::sum(tape, x, last_axis).value(), means = ops::mean(tape, x, last_axis).value();
    REQUIRE(sums.size() == e[0]);
    REQUIRE(means.size() == e[0]);
    for (index_t r = 0; r < e[0]; ++r) {
      CHECK(sums.data()[r] == 0.0f);         // the sum of no element
      CHECK(std::isnan(means.data()[r]));    // and their mean, 0 / 0
    }
    CHECK(std::isnan(ops::mean(tape, x).value().item()));
  }
}

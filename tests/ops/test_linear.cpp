#include <catch2/catch.hpp>

#include <ctdl/ops/linear.hpp>

#include "../test_util.hpp"

using namespace ctdl;

TEMPLATE_TEST_CASE("linear: y = x W^T + b against a double reference", "[ops]", float, double, bf16) {
  using T = TestType;
  auto x = test::uniform<T, Shape<dyn, 6>>({5, 6}, -1, 1, 1);
  auto w = test::uniform<T, Shape<4, 6>>({4, 6}, -1, 1, 2);
  auto b = test::uniform<T, Shape<4>>({4}, -1, 1, 3);
  Tape tape;
  auto y = ops::linear(tape, Var<T, Shape<dyn, 6>>(x), Var<T, Shape<4, 6>>(w), Var<T, Shape<4>>(b));
  for (index_t n = 0; n < 5; ++n)
    for (index_t o = 0; o < 4; ++o) {
      double s = test::to_double(b(o));
      for (index_t i = 0; i < 6; ++i) s += test::to_double(x(n, i)) * test::to_double(w(o, i));
      REQUIRE(test::close(test::to_double(y.value()(n, o)), s, test::tolerance<T>()));
    }
}

TEST_CASE("linear: gradcheck for x, weight and bias") {
  Var<double, Shape<dyn, 5>> x(test::uniform<double, Shape<dyn, 5>>({3, 5}, -1, 1, 4));
  Var<double, Shape<2, 5>> w(test::uniform<double, Shape<2, 5>>({2, 5}, -1, 1, 5));
  Var<double, Shape<2>> b(test::uniform<double, Shape<2>>({2}, -1, 1, 6));
  auto r = gradcheck([](Tape& t, const auto& xv, const auto& wv, const auto& bv) {
    return ops::linear(t, xv, wv, bv);
  }, x, w, b);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEMPLATE_TEST_CASE("linear: the weight reordered once is reused while unchanged and remade after every change", "[ops]",
                   float, bf16) {
  using G = TestType;
  using SX = Shape<dyn, 64>;
  using SW = Shape<48, 64>;
  Var<float, SX> x(test::uniform<float, SX>({37, 64}, -1, 1, 1), /*requires_grad=*/false);
  Var<float, SW> w(test::uniform<float, SW>({48, 64}, -1, 1, 2));
  Var<float, Shape<48>> b(test::uniform<float, Shape<48>>({48}, -1, 1, 3));
  // The reference, in double from the inputs rounded to G.
  auto check = [&](const Tensor<float, Shape<dyn, 48>>& y) {
    const auto& xv = x.value();
    const auto& wv = std::as_const(w).value();
    for (index_t r = 0; r < 37; ++r)
      for (index_t o = 0; o < 48; ++o) {
        double s = std::as_const(b).value()(o);
        for (index_t i = 0; i < 64; ++i) {
          s += static_cast<double>(convert<float>(convert<G>(xv(r, i)))) * convert<float>(convert<G>(wv(o, i)));
        }
        REQUIRE(y(r, o) == Approx(s).epsilon(1e-5).margin(1e-5));
      }
  };
  auto recorded = [&] {
    Tape tape;
    return Tensor<float, Shape<dyn, 48>>(ops::linear<G>(tape, x, w, b).value());  // a training step's forward
  };
  auto inferred = [&] {
    Tape tape;
    NoGrad no_grad(tape);
    return Tensor<float, Shape<dyn, 48>>(ops::linear<G>(tape, x, w, b).value());
  };
  check(inferred());
  const void* kept = w.node_ptr()->kernel_cache.get();
  REQUIRE((kept != nullptr) == ops::linear_reuses_weights_for<G, float>(37));
  check(recorded());  // e.g. the micro-batches of one optimizer step
  check(inferred());
  REQUIRE(w.node_ptr()->kernel_cache.get() == kept);  // reused, not made again
  // An optimizer-style change through value(): the next forward must see it.
  auto& wv = w.value();
  for (index_t i = 0; i < wv.size(); ++i) wv.data()[i] *= 0.5f;
  wv.data()[5] = 3.0f;
  check(recorded());
  w.value().data()[7] = -2.0f;  // each change through a fresh value() (var.hpp: version)
  check(inferred());
}

TEST_CASE("linear: without a bias, y = x W^T, gradcheck for x and W") {
  using SX = Shape<dyn, 5>;
  using SW = Shape<3, 5>;
  Var<double, SX> x(test::uniform<double, SX>({4, 5}, -1, 1, 11));
  Var<double, SW> w(test::uniform<double, SW>({3, 5}, -1, 1, 12));
  auto r = gradcheck([](Tape& t, const auto& xv, const auto& wv) { return ops::linear(t, xv, wv); }, x, w);
  INFO(r.report);
  REQUIRE(r.ok);
  Tape tape;
  Var<double, Shape<3>> zero(Tensor<double, Shape<3>>({3}));
  auto with_zero_bias = ops::linear(tape, x, w, zero);
  auto without = ops::linear(tape, x, w);
  for (index_t i = 0; i < without.value().size(); ++i) REQUIRE(without.value().data()[i] == with_zero_bias.value().data()[i]);
}

TEST_CASE("linear: several layers of one input in one call, gradcheck for x and every weight and bias") {
  using SX = Shape<dyn, 5>;
  using SW = Shape<3, 5>;
  using SB = Shape<3>;
  Var<double, SX> x(test::uniform<double, SX>({4, 5}, -1, 1, 21));
  Var<double, SW> w0(test::uniform<double, SW>({3, 5}, -1, 1, 22)), w1(test::uniform<double, SW>({3, 5}, -1, 1, 23)),
      w2(test::uniform<double, SW>({3, 5}, -1, 1, 24));
  Var<double, SB> b0(test::uniform<double, SB>({3}, -1, 1, 25)), b1(test::uniform<double, SB>({3}, -1, 1, 26)),
      b2(test::uniform<double, SB>({3}, -1, 1, 27));
  auto r = gradcheck(
      [](Tape& t, const auto& xv, const auto& v0, const auto& c0, const auto& v1, const auto& c1, const auto& v2,
         const auto& c2) {
        using L = ops::LinearWeights<double, 5, 3>;
        auto [y0, y1, y2] = ops::linear(t, xv, std::array{L{v0, c0}, L{v1, c1}, L{v2, c2}});
        return t.record(y0 + y1 * y2);  // every output reaches the loss differently
      },
      x, w0, b0, w1, b1, w2, b2);
  INFO(r.report);
  REQUIRE(r.ok);
}

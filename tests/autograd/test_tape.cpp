#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {
template <class S>
Var<double, S> make_var(const Extents<S>& e, double lo, double hi, unsigned seed) {
  return Var<double, S>(test::uniform<double, S>(e, lo, hi, seed));
}
}  // namespace

TEST_CASE("tape: one entry per recorded expression, backward in reverse, then cleared") {
  auto x = make_var<Shape<dyn, 3>>({2, 3}, -1, 1, 1);
  auto w = make_var<Shape<3>>({3}, -1, 1, 2);
  Tape tape;
  auto h = tape.record(tanh(x * w));
  auto y = tape.record(h * h + 1.0);
  auto loss = ops::sum(tape, y);
  REQUIRE(tape.size() == 3);
  tape.backward(loss);
  REQUIRE(tape.size() == 0);
  // d/dx sum(tanh(xw)^2 + 1) = 2 tanh(xw) (1 - tanh^2(xw)) w
  for (index_t r = 0; r < 2; ++r)
    for (index_t c = 0; c < 3; ++c) {
      const double t = std::tanh(x.value()(r, c) * w.value()(c));
      REQUIRE(test::close(x.grad()(r, c), 2 * t * (1 - t * t) * w.value()(c), 1e-14));
    }
}

TEST_CASE("tape: gradients accumulate across uses of one Var") {
  auto x = make_var<Shape<dyn>>({4}, -1, 1, 3);
  Tape tape;
  auto a = tape.record(x * 2.0);   // first use
  auto b = tape.record(x * x);     // second and third use, in one expression
  auto c = tape.record(a + b + x); // fourth use
  tape.backward(ops::sum(tape, c));
  for (index_t i = 0; i < 4; ++i) REQUIRE(test::close(x.grad()(i), 2.0 + 2 * x.value()(i) + 1.0, 1e-14));
  // A second backward adds to the same gradient until zero_grad().
  auto d = tape.record(x * 1.0);
  tape.backward(ops::sum(tape, d));
  REQUIRE(test::close(x.grad()(0), 4.0 + 2 * x.value()(0), 1e-14));
  x.zero_grad();
  REQUIRE(x.grad()(0) == 0.0);
}

TEST_CASE("tape: a broadcast operand receives the gradient summed over the broadcast axes") {
  auto x = make_var<Shape<dyn, 3>>({5, 3}, -1, 1, 4);
  auto b = make_var<Shape<3>>({3}, -1, 1, 5);
  Tape tape;
  auto y = tape.record(x + b);
  tape.backward(ops::sum(tape, y));
  for (index_t c = 0; c < 3; ++c) REQUIRE(b.grad()(c) == 5.0);
}

TEST_CASE("tape: NoGrad records nothing and keeps no activations") {
  auto x = make_var<Shape<dyn>>({4}, -1, 1, 6);
  Tape tape;
  {
    NoGrad no_grad(tape);
    REQUIRE_FALSE(tape.recording());
    auto y = tape.record(exp(x));
    auto s = ops::sum(tape, y);
    REQUIRE(tape.size() == 0);
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE_FALSE(s.requires_grad());
    REQUIRE(x.value_use_count() == 1);  // nothing holds on to x
    REQUIRE_THROWS_AS(tape.backward(s), Error);
  }
  REQUIRE(tape.recording());
  auto y = tape.record(exp(x));
  REQUIRE(x.value_use_count() == 2);  // the tape keeps x for backward
  tape.backward(ops::sum(tape, y));
  REQUIRE(x.value_use_count() == 1);  // released after backward
}

TEST_CASE("tape: constants get no gradient and need no entry") {
  Var<double, Shape<dyn>> c(Tensor<double, Shape<dyn>>({3}, {1, 2, 3}), /*requires_grad=*/false);
  Tape tape;
  auto y = tape.record(c * 2.0);
  REQUIRE(tape.size() == 0);
  REQUIRE_FALSE(y.requires_grad());
}

TEST_CASE("tape: backward needs a one-element loss or a seed of the right shape") {
  auto x = make_var<Shape<dyn>>({3}, -1, 1, 7);
  Tape tape;
  auto y = tape.record(x * 3.0);
  REQUIRE_THROWS_WITH(tape.backward(y), Catch::Matchers::Contains("the loss must hold one element"));
  REQUIRE_THROWS_AS(tape.backward(y, Tensor<double, Shape<dyn>>({2})), ShapeError);
  tape.backward(y, Tensor<double, Shape<dyn>>({3}, {1, 10, 100}));
  REQUIRE(x.grad()(2) == 300.0);
}

TEST_CASE("tape: mixed precision, a bf16 operand of an fp32 expression gets a bf16 gradient") {
  Var<bf16, Shape<dyn>> xb(Tensor<bf16, Shape<dyn>>({3}, {bf16(1.0f), bf16(2.0f), bf16(-1.0f)}));
  Var<float, Shape<dyn>> w(Tensor<float, Shape<dyn>>({3}, {0.1f, 0.3f, 1.0f / 3}));
  Tape tape;
  auto y = tape.record(cast<float>(xb) * w);
  tape.backward(ops::sum(tape, y));
  for (index_t i = 0; i < 3; ++i) {
    REQUIRE(convert<float>(xb.grad()(i)) == convert<float>(convert<bf16>(w.value()(i))));
    REQUIRE(w.grad()(i) == convert<float>(xb.value()(i)));
  }
}

#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {
Var<double, Shape<dyn, 5>> input(unsigned seed) {
  return Var<double, Shape<dyn, 5>>(test::uniform<double, Shape<dyn, 5>>({3, 5}, -2, 2, seed));
}
template <class F>
void check(F f) {
  auto x = input(31);
  auto r = gradcheck([&](Tape& t, const auto& xv) { return f(t, t.record(xv * xv - xv)); }, x);
  INFO(r.report);
  REQUIRE(r.ok);
}
}  // namespace

TEST_CASE("ops::sum / mean / max over all elements pass gradcheck") {
  check([](Tape& t, const auto& v) { return ops::sum(t, v); });
  check([](Tape& t, const auto& v) { return ops::mean(t, v); });
  check([](Tape& t, const auto& v) { return ops::max(t, v); });
}

TEST_CASE("ops::sum / mean / max over the last axis pass gradcheck") {
  check([](Tape& t, const auto& v) { return ops::sum(t, v, last_axis); });
  check([](Tape& t, const auto& v) { return ops::mean(t, v, last_axis); });
  check([](Tape& t, const auto& v) { return ops::max(t, v, last_axis); });
  // Composed with broadcasting back: x - max(x) along rows (the softmax shift).
  auto x = input(32);
  auto r = gradcheck([](Tape& t, const auto& xv) {
    auto m = ops::max(t, xv, last_axis);
    return t.record(exp(xv - m));
  }, x);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("ops::max shares the gradient equally among tied maxima") {
  Var<double, Shape<dyn, 4>> x(Tensor<double, Shape<dyn, 4>>({2, 4}, {1, 3, 3, 0, 5, 2, 5, 5}));
  Tape tape;
  auto m = ops::max(tape, x, last_axis);
  tape.backward(ops::sum(tape, m));
  const double expect[8] = {0, 0.5, 0.5, 0, 1.0 / 3, 0, 1.0 / 3, 1.0 / 3};
  for (int i = 0; i < 8; ++i) REQUIRE(test::close(x.grad().data()[i], expect[i], 1e-15));
}

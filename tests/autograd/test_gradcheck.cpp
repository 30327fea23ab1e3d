// gradcheck itself: it must catch a wrong backward, and pass a right one.
#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {

/// y = 3x with a backward that claims dy/dx = `slope` (3 is right).
struct ScaleEntry final : TapeEntry {
  Var<double, Shape<dyn>> x, y;
  double slope;
  ScaleEntry(Var<double, Shape<dyn>> x_, Var<double, Shape<dyn>> y_, double s) : x(x_), y(y_), slope(s) {}
  const char* name() const override { return "scale"; }
  void backward() override { x.node_ptr()->accumulate(lazy(y.grad()) * slope); }
};

auto scale(Tape& tape, const Var<double, Shape<dyn>>& x, double claimed_slope) {
  Tensor<double, Shape<dyn>> v = x * 3.0;
  const bool needs_grad = tape.recording() && x.requires_grad();
  auto y = make_result(std::move(v), needs_grad);
  if (needs_grad) tape.push(std::make_unique<ScaleEntry>(x, y, claimed_slope));
  return y;
}

}  // namespace

TEST_CASE("gradcheck: a correct hand-written backward passes") {
  Var<double, Shape<dyn>> x(test::uniform<double, Shape<dyn>>({5}, -1, 1, 1));
  auto r = gradcheck([](Tape& t, const auto& xv) { return scale(t, xv, 3.0); }, x);
  INFO(r.report);
  REQUIRE(r.ok);
  REQUIRE(r.checked == 5);
  REQUIRE(r.max_abs_error < 1e-8);
}

TEST_CASE("gradcheck: a wrong backward is caught and reported by element") {
  Var<double, Shape<dyn>> x(test::uniform<double, Shape<dyn>>({5}, -1, 1, 1));
  auto r = gradcheck([](Tape& t, const auto& xv) { return scale(t, xv, 3.001); }, x);
  REQUIRE_FALSE(r.ok);
  REQUIRE_THAT(r.report, Catch::Matchers::Contains("gradcheck FAILED") && Catch::Matchers::Contains("input 0 element 0"));
}

TEST_CASE("gradcheck: an input left out of backward is caught") {
  Var<double, Shape<dyn>> x(test::uniform<double, Shape<dyn>>({3}, -1, 1, 2));
  Var<double, Shape<dyn>> y(test::uniform<double, Shape<dyn>>({3}, -1, 1, 3));
  // The function uses y, but through a detached copy, so backward never reaches y.
  auto r = gradcheck(
      [](Tape& t, const auto& xv, const auto& yv) {
        Var<double, Shape<dyn>> detached(Tensor<double, Shape<dyn>>(yv.value()), false);
        return t.record(xv * detached);
      },
      x, y);
  REQUIRE_FALSE(r.ok);
  REQUIRE_THAT(r.report, Catch::Matchers::Contains("input 1"));
}

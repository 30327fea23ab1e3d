// The fused evaluator: parallel and broadcast paths, aliasing, ownership, compound assignment.
#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;

TEST_CASE("eval: large flat and broadcast evaluations match a plain loop") {
  // Above kParallelThreshold the loop is split among threads.
  using S = Shape<dyn, 1000>;
  auto a = test::uniform<float, S>({300, 1000}, -1, 1, 1);
  auto b = test::uniform<float, S>({300, 1000}, -1, 1, 2);
  auto bias = test::uniform<float, Shape<1000>>({1000}, -1, 1, 3);
  auto col = test::uniform<float, Shape<dyn, 1>>({300, 1}, -1, 1, 4);
  REQUIRE(a.size() > expr::kParallelThreshold);
  Tensor<float, S> flat = a * b + a;
  Tensor<float, S> bcast = a * bias + col;
  for (index_t r = 0; r < 300; ++r)
    for (index_t c = 0; c < 1000; ++c) {
      // Tolerance of an ulp or so: the compiler may contract a * b + c into one FMA.
      REQUIRE(test::close(flat(r, c), a(r, c) * b(r, c) + a(r, c), 1e-6));
      REQUIRE(test::close(bcast(r, c), a(r, c) * bias(c) + col(r, 0), 1e-6));
    }
}

TEST_CASE("eval: a tensor may appear on both sides elementwise") {
  Tensor<double, Shape<dyn>> a({4}, {1, 2, 3, 4});
  a = a * a + 1.0;
  REQUIRE(a(3) == 17.0);
  a += lazy(a);
  REQUIRE(a(0) == 4.0);
  a -= lazy(a) * 0.5;
  REQUIRE(a(0) == 2.0);
  a *= lazy(a);
  REQUIRE(a(0) == 4.0);
}

TEST_CASE("eval: an auto expression over a temporary tensor owns it and does not dangle") {
  auto make = [] { return Tensor<double, Shape<dyn>>({3}, {1, 2, 3}); };
  auto e = make() * 2.0 + make();  // both temporaries are moved into the expression
  std::vector<Tensor<double, Shape<dyn>>> churn;
  for (int i = 0; i < 16; ++i) churn.emplace_back(std::array<index_t, 1>{3});  // reuse freed memory, if any
  Tensor<double, Shape<dyn>> out = e;
  REQUIRE(out(0) == 3.0);
  REQUIRE(out(2) == 9.0);
}

TEST_CASE("eval: an lvalue operand is viewed, so later changes are seen") {
  Tensor<double, Shape<dyn>> a({2}, {1, 2});
  auto e = a + 1.0;
  a(0) = 10;
  Tensor<double, Shape<dyn>> out = e;
  REQUIRE(out(0) == 11.0);
}

TEST_CASE("eval: rank-0 and empty tensors") {
  Tensor<float, Shape<>> s;
  s.item() = 3;
  Tensor<float, Shape<>> t = s * s;
  REQUIRE(t.item() == 9);
  Tensor<float, Shape<dyn, 3>> empty({0, 3});
  Tensor<float, Shape<dyn, 3>> e2 = empty + 1.0f;
  REQUIRE(e2.size() == 0);
}

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

TEST_CASE("eval: a destination read at other positions (its own row, a shifted view) goes through a temporary") {
  Tensor<double, Shape<dyn, 4>> t({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  t = t - t[0];  // row 0 is overwritten before row 1 reads it, unless copied first
  for (index_t c = 0; c < 4; ++c) {
    REQUIRE(t(0, c) == 0.0);
    REQUIRE(t(1, c) == 4.0);
  }
  Tensor<double, Shape<dyn, 4>> u({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  u += lazy(u[1]);  // compound assignment broadcasting the destination's own row 1
  REQUIRE(u(0, 0) == 6.0);
  REQUIRE(u(1, 3) == 16.0);
  Tensor<double, Shape<dyn>> s({6}, {1, 2, 3, 4, 5, 6});
  s.view().slice(1, 6) = lazy(s.view().slice(0, 5)) * 10.0;  // shifted by one element
  const double want[] = {1, 10, 20, 30, 40, 50};
  for (index_t i = 0; i < 6; ++i) REQUIRE(s(i) == want[i]);
  Tensor<double, Shape<dyn>> r({6}, {1, 2, 3, 4, 5, 6});
  r.view().slice(0, 5) = lazy(r.view().slice(1, 6)) + lazy(r.view().slice(0, 5));  // shifted the other way
  const double want_r[] = {3, 5, 7, 9, 11, 6};
  for (index_t i = 0; i < 6; ++i) REQUIRE(r(i) == want_r[i]);
}

TEST_CASE("eval: same-position aliasing stays in place, without a temporary") {
  // 4 MiB: a temporary would be a large block, counted by the CPU allocator.
  auto t = Tensor<float, Shape<dyn>>::full({1 << 20}, 2.0f);
  DeviceAllocator<Cpu>::reset_peak_live_bytes();
  const std::size_t live = DeviceAllocator<Cpu>::live_bytes();
  t = t * t + lazy(t);
  t += lazy(t) * 0.5f;
  REQUIRE(t(12345) == 9.0f);
  REQUIRE(DeviceAllocator<Cpu>::live_bytes() == live);
  REQUIRE(DeviceAllocator<Cpu>::peak_live_bytes() == live);
}

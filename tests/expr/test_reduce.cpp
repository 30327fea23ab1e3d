#include <catch2/catch.hpp>

#include <omp.h>

#include <array>
#include <cmath>
#include <limits>

#include "../test_util.hpp"

using namespace ctdl;
using test::tolerance;

TEMPLATE_TEST_CASE("reduce: sum, mean, max over everything and over the last axis", "[expr]", float, double, bf16,
                   fp16) {
  using T = TestType;
  using S = Shape<dyn, 37>;
  auto x = test::uniform<T, S>({11, 37}, -2, 2, 7);
  double total = 0, mx = -1e300;
  std::vector<double> row_sum(11, 0), row_max(11, -1e300);
  for (index_t r = 0; r < 11; ++r)
    for (index_t c = 0; c < 37; ++c) {
      const double v = test::to_double(x(r, c));
      total += v;
      mx = std::max(mx, v);
      row_sum[r] += v;
      row_max[r] = std::max(row_max[r], v);
    }
  REQUIRE(test::close(test::to_double(sum(x).item()), total, tolerance<T>()));
  REQUIRE(test::close(test::to_double(mean(x).item()), total / x.size(), tolerance<T>()));
  REQUIRE(test::to_double(max(x).item()) == mx);
  auto rs = sum(x, last_axis);
  STATIC_REQUIRE(std::is_same_v<decltype(rs), Tensor<T, Shape<dyn, 1>>>);
  auto rm = mean(x * 2, last_axis);
  auto rx = max(x, last_axis);
  for (index_t r = 0; r < 11; ++r) {
    REQUIRE(test::close(test::to_double(rs(r, 0)), row_sum[r], tolerance<T>()));
    REQUIRE(test::close(test::to_double(rm(r, 0)), 2 * row_sum[r] / 37, tolerance<T>()));
    REQUIRE(test::to_double(rx(r, 0)) == row_max[r]);
  }
  // The keepdims result broadcasts back: a numerically stable softmax numerator.
  Tensor<T, S> shifted = x - rx;
  REQUIRE(test::to_double(max(shifted).item()) == 0.0);
}

TEMPLATE_TEST_CASE("reduce: half-precision inputs accumulate in float", "[expr]", bf16, fp16) {
  using T = TestType;
  // 20000 * 0.1: a half-precision accumulator would stop growing long before the end
  // (bf16 at 32: 0.1 is below half an ulp), float accumulation gets ~2000.
  auto x = Tensor<T, Shape<dyn>>::full({20000}, convert<T>(0.1));
  const double expect = 20000 * test::to_double(convert<T>(0.1));
  REQUIRE(test::close(test::to_double(sum(x).item()), expect, tolerance<T>()));
  REQUIRE(test::close(test::to_double(sum(x, last_axis)(0)), expect, tolerance<T>()));
}

TEST_CASE("reduce: parallel reduction of a large fused expression") {
  auto a = test::uniform<double, Shape<dyn, dyn>>({400, 300}, -1, 1, 1);
  double ref = 0;
  for (index_t i = 0; i < a.size(); ++i) ref += a.data()[i] * a.data()[i];
  REQUIRE(test::close(sum(a * a).item(), ref, 1e-12));
  REQUIRE_THROWS_AS(max(Tensor<float, Shape<dyn>>({0})), ShapeError);
}

TEST_CASE("reduce: sum_to sums a broadcast expression back to an operand's extents") {
  auto g = test::uniform<double, Shape<dyn, 4>>({3, 4}, -1, 1, 5);
  Tensor<double, Shape<4>> col({4});
  expr::sum_to(lazy(g), col.data(), col.extents());
  Tensor<double, Shape<dyn, 1>> row({3, 1});
  expr::sum_to(lazy(g), row.data(), row.extents());
  for (index_t c = 0; c < 4; ++c) REQUIRE(test::close(col(c), g(0, c) + g(1, c) + g(2, c), 1e-14));
  for (index_t r = 0; r < 3; ++r) REQUIRE(test::close(row(r, 0), g(r, 0) + g(r, 1) + g(r, 2) + g(r, 3), 1e-14));
}

TEST_CASE("reduce: sum and sum_to inside a caller's parallel region") {
  // One reduction per thread of the caller's team, each small enough for the serial
  // path: the per-thread partial buffers must be indexed by the reduction's own threads,
  // not by the caller's thread numbers.
  constexpr int threads = 4;
  std::array<double, threads> sum_error{}, sum_to_error{}, big_error{};
#pragma omp parallel num_threads(threads)
  {
    const int id = omp_get_thread_num();
    const double v = 1.0 + id;
    Tensor<double, Shape<dyn, 3>> x = Tensor<double, Shape<dyn, 3>>::full({5, 3}, v);
    sum_error[id] = std::abs(sum(x).item() - 15 * v);
    Tensor<double, Shape<3>> col({3}, {1, 1, 1});
    expr::sum_to(lazy(x), col.data(), col.extents());
    for (index_t c = 0; c < 3; ++c) sum_to_error[id] = std::max(sum_to_error[id], std::abs(col(c) - (1 + 5 * v)));
    // Large enough for the parallel path of the reduction itself (nested in the caller's).
    auto big = Tensor<float, Shape<dyn>>::full({2 * expr::kParallelThreshold}, 1.0f);
    big_error[id] = std::abs(static_cast<double>(sum(big).item()) - 2.0 * expr::kParallelThreshold);
  }
  for (int t = 0; t < threads; ++t) {
    INFO("thread " << t);
    REQUIRE(sum_error[t] == 0.0);
    REQUIRE(sum_to_error[t] == 0.0);
    REQUIRE(big_error[t] == 0.0);
  }
}

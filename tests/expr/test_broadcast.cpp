#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;
using Catch::Matchers::Contains;

TEST_CASE("broadcast: static result shapes follow NumPy's rules") {
  using expr::broadcast_t;
  STATIC_REQUIRE(std::is_same_v<broadcast_t<Shape<dyn, 768>, Shape<768>>, Shape<dyn, 768>>);
  STATIC_REQUIRE(std::is_same_v<broadcast_t<Shape<dyn, 1>, Shape<5>>, Shape<dyn, 5>>);
  STATIC_REQUIRE(std::is_same_v<broadcast_t<Shape<2, 1, 3>, Shape<4, 1>>, Shape<2, 4, 3>>);
  STATIC_REQUIRE(std::is_same_v<broadcast_t<Shape<dyn>, Shape<dyn>>, Shape<dyn>>);
  STATIC_REQUIRE(std::is_same_v<broadcast_t<Shape<dyn>, Shape<1>>, Shape<dyn>>);
  STATIC_REQUIRE(std::is_same_v<broadcast_t<Shape<>, Shape<3, 4>>, Shape<3, 4>>);
  STATIC_REQUIRE(!expr::broadcastable<Shape<dyn, 768>, Shape<dyn, 1024>>);
  STATIC_REQUIRE(expr::broadcastable<Shape<dyn, dyn>, Shape<dyn, 1024>>);
}

TEST_CASE("broadcast: values against explicit loops") {
  auto a = test::uniform<double, Shape<2, 1, 3>>({2, 1, 3}, -1, 1, 1);
  auto b = test::uniform<double, Shape<dyn, 1>>({4, 1}, -1, 1, 2);
  auto c = test::uniform<double, Shape<3>>({3}, -1, 1, 3);
  Tensor<double, Shape<2, 4, 3>> out = a * b + c;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 3; ++k) REQUIRE(test::close(out(i, j, k), a(i, 0, k) * b(j, 0) + c(k), 1e-15));
}

TEST_CASE("broadcast: runtime extents that do not broadcast throw ShapeError naming both shapes") {
  Tensor<float, Shape<dyn, dyn>> a({8, 5});
  Tensor<float, Shape<dyn, dyn>> b({8, 6});
  REQUIRE_THROWS_MATCHES(a + b, ShapeError,
                         Catch::Matchers::Message("add: cannot broadcast Shape<dyn, dyn> [8, 5] with Shape<dyn, dyn> [8, 6]"));
  Tensor<float, Shape<dyn, 768>> h({8, 768});
  Tensor<float, Shape<dyn>> v({5});
  REQUIRE_THROWS_WITH(h * v, Contains("mul: cannot broadcast Shape<dyn, 768> [8, 768] with Shape<dyn> [5]"));
}

TEST_CASE("broadcast: assignment broadcasts the expression to the destination, never the reverse") {
  Tensor<float, Shape<dyn, 4>> out({3, 4});
  Tensor<float, Shape<4>> row({4}, {1, 2, 3, 4});
  out = row * 2.0f;
  REQUIRE(out(2, 3) == 8.0f);
  Tensor<float, Shape<dyn, 4>> big({5, 4});
  REQUIRE_THROWS_WITH(out = big + 1.0f, Contains("does not broadcast to the destination's extents [3, 4]"));
}

#include <catch2/catch.hpp>

#include <cstdint>

#include "../test_util.hpp"

using namespace ctdl;
using Catch::Matchers::Contains;

TEST_CASE("Tensor: zero-filled, 64-byte aligned, row-major") {
  Tensor<float, Shape<dyn, 3>> t({4, 3});
  REQUIRE(t.size() == 12);
  REQUIRE(t.extents() == std::array<index_t, 2>{4, 3});
  REQUIRE(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  for (index_t i = 0; i < t.size(); ++i) REQUIRE(t.data()[i] == 0.0f);
  t(2, 1) = 5.0f;
  REQUIRE(t.data()[2 * 3 + 1] == 5.0f);
  Tensor<double, Shape<2, 2>> s;  // fully static: allocated by default
  REQUIRE(s.size() == 4);
}

TEST_CASE("Tensor: runtime extents that disagree with the type throw ShapeError") {
  using T = Tensor<float, Shape<dyn, 768>>;
  REQUIRE_THROWS_MATCHES(T({2, 1024}), ShapeError,
                         Catch::Matchers::Message("Tensor: extents [2, 1024] do not fit Shape<dyn, 768>"));
  REQUIRE_THROWS_AS((Tensor<float, Shape<dyn>>({3}, {1.0f, 2.0f})), ShapeError);
}

TEST_CASE("Tensor: copies are deep, moves leave an empty tensor") {
  Tensor<float, Shape<dyn>> a({3}, {1, 2, 3});
  Tensor<float, Shape<dyn>> b = a;
  b(0) = 9;
  REQUIRE(a(0) == 1);
  Tensor<float, Shape<dyn>> c = std::move(a);
  REQUIRE(c(2) == 3);
  REQUIRE(a.size() == 0);  // NOLINT: use after move is defined here
}

TEST_CASE("TensorView: rows, slices, reshape, bounds") {
  Tensor<int, Shape<dyn, 2, 3>> t({4, 2, 3});
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<int>(i);
  auto row = t[2];
  STATIC_REQUIRE(std::is_same_v<decltype(row), TensorView<int, Shape<2, 3>>>);
  REQUIRE(row(1, 2) == 2 * 6 + 5);
  auto s = t.view().slice(1, 3);
  STATIC_REQUIRE(std::is_same_v<decltype(s)::shape_type, Shape<dyn, 2, 3>>);
  REQUIRE(s.extent(0) == 2);
  REQUIRE(s(0, 0, 0) == 6);
  auto flat = t.view().reshape<Shape<dyn, 6>>({4, 6});
  REQUIRE(flat(3, 5) == 23);
  auto bad_reshape = [&] { return t.view().reshape<Shape<dyn, 5>>({4, 5}); };
  REQUIRE_THROWS_WITH(bad_reshape(), Contains("cannot be viewed as Shape<dyn, 5> [4, 5]"));
  REQUIRE_THROWS_AS(t[4], ShapeError);
  REQUIRE_THROWS_AS(t.view().slice(2, 5), ShapeError);
  REQUIRE_THROWS_AS(t(0, 2, 0), ShapeError);
  const auto& ct = t;
  auto cv = ct.view();
  STATIC_REQUIRE(std::is_same_v<decltype(cv)::element_type, const int>);
}

TEST_CASE("TensorView: writing through a view and item()") {
  Tensor<float, Shape<dyn, 4>> t({3, 4});
  t[1] = lazy(t[1]) + 2.0f;  // assign an expression into one row
  REQUIRE(t(1, 3) == 2.0f);
  REQUIRE(t(0, 3) == 0.0f);
  REQUIRE_THROWS_AS(t.item(), ShapeError);
  Tensor<float, Shape<>> s;
  s.item() = 4;
  REQUIRE(s.item() == 4);
}

TEST_CASE("Tensor on Cuda: clear error in a build without CUDA") {
#if !defined(CTDL_WITH_CUDA)
  REQUIRE_THROWS_WITH((Tensor<float, Shape<dyn>, Cuda>({4})), Contains("built without CUDA"));
#else
  SUCCEED("built with CUDA");
#endif
}

TEST_CASE("Tensor::unallocated holds no storage, and a copy of it none either") {
  const auto s = Tensor<float, Shape<4, 5>>::unallocated();  // fully static: no zero-filled 4 x 5
  CHECK(s.data() == nullptr);
  CHECK(s.size() == 0);
  const Tensor<float, Shape<4, 5>> s2 = s;
  CHECK(s2.data() == nullptr);
  const auto scalar = Tensor<float, Shape<>>::unallocated();  // rank 0: size() 1, no element
  CHECK(scalar.data() == nullptr);
  const Tensor<float, Shape<>> copy = scalar;  // copies nothing (no read through a null pointer)
  CHECK(copy.data() == nullptr);
  Tensor<float, Shape<>> assigned;
  assigned = scalar;
  CHECK(assigned.data() == nullptr);
  const Tensor<float, Shape<2>> real({2}, {1.0f, 2.0f});
  const Tensor<float, Shape<2>> real_copy = real;  // an allocated one still copies its elements
  CHECK(real_copy(1) == 2.0f);
}

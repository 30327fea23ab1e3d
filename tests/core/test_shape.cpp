#include <catch2/catch.hpp>

#include "../test_util.hpp"

using namespace ctdl;

TEST_CASE("Shape: rank, static size and names") {
  using S = Shape<dyn, 128, 768>;
  STATIC_REQUIRE(S::rank == 3);
  STATIC_REQUIRE(!S::is_static);
  STATIC_REQUIRE(S::static_size == dyn);
  STATIC_REQUIRE(Shape<2, 3, 4>::static_size == 24);
  STATIC_REQUIRE(Shape<>::rank == 0);
  STATIC_REQUIRE(Shape<>::static_size == 1);
  REQUIRE(S::name() == "Shape<dyn, 128, 768>");
  REQUIRE(Shape<>::name() == "Shape<>");
  REQUIRE(describe<S>({8, 128, 768}) == "Shape<dyn, 128, 768> [8, 128, 768]");
}

TEST_CASE("Shape: runtime extents are checked against static ones") {
  using S = Shape<dyn, 768>;
  REQUIRE(S::accepts({5, 768}));
  REQUIRE(S::accepts({0, 768}));
  REQUIRE_FALSE(S::accepts({5, 1024}));
  REQUIRE_FALSE(S::accepts({-2, 768}));
  REQUIRE_THROWS_MATCHES(S::check({5, 1024}, "my_op"), ShapeError,
                         Catch::Matchers::Message("my_op: extents [5, 1024] do not fit Shape<dyn, 768>"));
}

TEST_CASE("Shape: type arithmetic") {
  STATIC_REQUIRE(std::is_same_v<drop_first_t<Shape<dyn, 4, 5>>, Shape<4, 5>>);
  STATIC_REQUIRE(std::is_same_v<leading_dyn_t<Shape<3, 4>>, Shape<dyn, 4>>);
  STATIC_REQUIRE(std::is_same_v<last_to_one_t<Shape<dyn, 4, 5>>, Shape<dyn, 4, 1>>);
  STATIC_REQUIRE(std::is_same_v<last_to_one_t<Shape<7>>, Shape<1>>);
  STATIC_REQUIRE(static_extents_agree<Shape<dyn, 768>, Shape<8, 768>>);
  STATIC_REQUIRE(!static_extents_agree<Shape<dyn, 768>, Shape<dyn, 1024>>);
  STATIC_REQUIRE(!static_extents_agree<Shape<768>, Shape<1, 768>>);
}

TEST_CASE("numel: element counts that overflow (or pass 2^59) are a ShapeError naming the extents") {
  STATIC_REQUIRE(numel(std::array<index_t, 3>{2, 3, 4}) == 24);
  REQUIRE(numel(std::array<index_t, 2>{index_t{1} << 29, index_t{1} << 30}) == index_t{1} << 59);
  // max_position_embeddings 2^55 x hidden 128 (issue 10): 2^62 elements, 2^64 bytes of fp32.
  REQUIRE_THROWS_MATCHES(numel(std::array<index_t, 2>{index_t{1} << 55, 128}), ShapeError,
                         Catch::Matchers::Message("a tensor of extents [36028797018963968, 128] would have more than 2^59 elements"));
  REQUIRE(numel(std::array<index_t, 3>{index_t{1} << 40, index_t{1} << 40, 0}) == 0);  // wraps first, still empty
  REQUIRE_THROWS_AS(numel(std::array<index_t, 2>{index_t{3037000500}, index_t{3037000500}}), ShapeError);
}

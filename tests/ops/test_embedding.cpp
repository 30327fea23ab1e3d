#include <catch2/catch.hpp>

#include <ctdl/ops/embedding.hpp>

#include "../test_util.hpp"

using namespace ctdl;

TEST_CASE("embedding: gathers rows - backward scatter-adds and repeated ids accumulate") {
  using Table = Shape<dyn, 4>;
  Var<double, Table> table(test::uniform<double, Table>({10, 4}, -1, 1, 1));
  Tensor<std::int32_t, Shape<dyn, dyn>> ids({2, 3}, {3, 0, 3, 9, 9, 9});
  Tape tape;
  auto y = ops::embedding(tape, table, ids);
  REQUIRE(y.extents() == std::array<index_t, 2>{6, 4});
  for (index_t n = 0; n < 6; ++n)
    for (index_t j = 0; j < 4; ++j) REQUIRE(y.value()(n, j) == table.value()(ids.data()[n], j));
  tape.backward(y, Tensor<double, Shape<dyn, 4>>::full(y.extents(), 1.0));
  REQUIRE(table.grad()(3, 0) == 2.0);
  REQUIRE(table.grad()(9, 2) == 3.0);
  REQUIRE(table.grad()(0, 1) == 1.0);
  REQUIRE(table.grad()(5, 1) == 0.0);
}

TEST_CASE("embedding: gradcheck and out-of-range ids") {
  using Table = Shape<dyn, 3>;
  Var<double, Table> table(test::uniform<double, Table>({5, 3}, -1, 1, 2));
  Tensor<std::int64_t, Shape<dyn>> ids({4}, {4, 1, 1, 0});
  auto r = gradcheck([&](Tape& t, const auto& tv) { return t.record(square(ops::embedding(t, tv, ids))); }, table);
  INFO(r.report);
  REQUIRE(r.ok);
  Tape tape;
  Tensor<std::int64_t, Shape<dyn>> bad({2}, {1, 5});
  REQUIRE_THROWS_WITH(ops::embedding(tape, table, bad), Catch::Matchers::Contains("id 5 at position 1 is outside the table's 5 rows"));
}

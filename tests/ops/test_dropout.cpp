#include <catch2/catch.hpp>

#include <ctdl/ops/dropout.hpp>
#include <omp.h>

#include "../test_util.hpp"

using namespace ctdl;

TEST_CASE("dropout: kept values scaled by 1/(1-p), about p dropped, reproducible") {
  const RandomStream stream{.seed = 7, .rank = 0, .tensor_id = 3, .step = 11};
  Var<float, Shape<dyn, 256>> x(Tensor<float, Shape<dyn, 256>>::full({400, 256}, 2.0f));
  Tape tape;
  auto y = ops::dropout(tape, x, 0.1f, stream);
  index_t dropped = 0;
  for (index_t i = 0; i < y.value().size(); ++i) {
    const float v = y.value().data()[i];
    REQUIRE((v == 0.0f || v == Approx(2.0f / 0.9f)));
    dropped += v == 0.0f;
    REQUIRE((v == 0.0f) == !ops::DropoutMask{stream, 0.1f}.keep(static_cast<std::uint64_t>(i)));
  }
  const double frac = static_cast<double>(dropped) / static_cast<double>(y.value().size());
  REQUIRE(std::abs(frac - 0.1) < 0.005);
  // Backward regenerates the same mask.
  tape.backward(y, Tensor<float, Shape<dyn, 256>>::full(y.extents(), 1.0f));
  for (index_t i = 0; i < y.value().size(); ++i) REQUIRE((x.grad().data()[i] == 0.0f) == (y.value().data()[i] == 0.0f));
}

TEST_CASE("dropout: the mask does not depend on the thread count") {
  const RandomStream stream{.seed = 1, .rank = 2, .tensor_id = 5, .step = 3};
  Var<float, Shape<dyn>> x(Tensor<float, Shape<dyn>>::full({100001}, 1.0f));
  Tape tape;
  omp_set_num_threads(1);
  auto a = ops::dropout(tape, x, 0.3f, stream);
  omp_set_num_threads(2);
  auto b = ops::dropout(tape, x, 0.3f, stream);
  for (index_t i = 0; i < x.value().size(); ++i) REQUIRE(a.value().data()[i] == b.value().data()[i]);
}

TEST_CASE("dropout: gradcheck, p = 0 is the identity, bad p is an error") {
  const RandomStream stream{.seed = 9};
  Var<double, Shape<dyn, 5>> x(test::uniform<double, Shape<dyn, 5>>({4, 5}, -1, 1, 1));
  auto r = gradcheck([&](Tape& t, const auto& xv) { return ops::dropout(t, t.record(xv * xv), 0.4f, stream); }, x);
  INFO(r.report);
  REQUIRE(r.ok);
  Tape tape;
  auto same = ops::dropout(tape, x, 0.0f, stream);
  REQUIRE(same.node_ptr() == x.node_ptr());
  REQUIRE_THROWS_AS(ops::dropout(tape, x, 1.0f, stream), Error);
}

TEST_CASE("dropout: for_each_keep visits each element once, in order, with keep(i)'s decision") {
  const RandomStream stream{.seed = 3, .rank = 1, .tensor_id = 4, .step = 8};
  const ops::DropoutMask mask{stream, 0.25f};
  for (const std::uint64_t first : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{3}, std::uint64_t{63},
                                    std::uint64_t{64}, std::uint64_t{65}, (std::uint64_t{1} << 34) - 3})
    for (const index_t n : {index_t{0}, index_t{1}, index_t{5}, index_t{64}, index_t{129}}) {
      INFO("first " << first << ", n " << n);
      index_t next = 0;
      ops::detail::for_each_keep(stream, 0.25f, first, n, [&](index_t j, bool keep) {
        REQUIRE(j == next++);
        REQUIRE(keep == mask.keep(first + static_cast<std::uint64_t>(j)));
      });
      CHECK(next == n);
    }
}

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

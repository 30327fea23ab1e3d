#include <catch2/catch.hpp>

#include <omp.h>

#include <array>
#include <cmath>
#include <vector>

#include "../test_util.hpp"

using namespace ctdl;

namespace {
template <class S>
Var<double, S> make_var(const Extents<S>& e, double lo, double hi, unsigned seed) {
  return Var<double, S>(test::uniform<double, S>(e, lo, hi, seed));
}
}  // namespace

TEST_CASE("tape: one entry per recorded expression, backward in reverse, then cleared") {
  auto x = make_var<Shape<dyn, 3>>({2, 3}, -1, 1, 1);
  auto w = make_var<Shape<3>>({3}, -1, 1, 2);
  Tape tape;
  auto h = tape.record(tanh(x * w));
  auto y = tape.record(h * h + 1.0);
  auto loss = ops::sum(tape, y);
  REQUIRE(tape.size() == 3);
  tape.backward(loss);
  REQUIRE(tape.size() == 0);
  // d/dx sum(tanh(xw)^2 + 1) = 2 tanh(xw) (1 - tanh^2(xw)) w
  for (index_t r = 0; r < 2; ++r)
    for (index_t c = 0; c < 3; ++c) {
      const double t = std::tanh(x.value()(r, c) * w.value()(c));
      REQUIRE(test::close(x.grad()(r, c), 2 * t * (1 - t * t) * w.value()(c), 1e-14));
    }
}

TEST_CASE("tape: gradients accumulate across uses of one Var") {
  auto x = make_var<Shape<dyn>>({4}, -1, 1, 3);
  Tape tape;
  auto a = tape.record(x * 2.0);   // first use
  auto b = tape.record(x * x);     // second and third use, in one expression
  auto c = tape.record(a + b + x); // fourth use
  tape.backward(ops::sum(tape, c));
  for (index_t i = 0; i < 4; ++i) REQUIRE(test::close(x.grad()(i), 2.0 + 2 * x.value()(i) + 1.0, 1e-14));
  // A second backward adds to the same gradient until zero_grad().
  auto d = tape.record(x * 1.0);
  tape.backward(ops::sum(tape, d));
  REQUIRE(test::close(x.grad()(0), 4.0 + 2 * x.value()(0), 1e-14));
  x.zero_grad();
  REQUIRE(x.grad()(0) == 0.0);
}

TEST_CASE("tape: a broadcast operand receives the gradient summed over the broadcast axes") {
  auto x = make_var<Shape<dyn, 3>>({5, 3}, -1, 1, 4);
  auto b = make_var<Shape<3>>({3}, -1, 1, 5);
  Tape tape;
  auto y = tape.record(x + b);
  tape.backward(ops::sum(tape, y));
  for (index_t c = 0; c < 3; ++c) REQUIRE(b.grad()(c) == 5.0);
}

TEST_CASE("tape: NoGrad records nothing and keeps no activations") {
  auto x = make_var<Shape<dyn>>({4}, -1, 1, 6);
  Tape tape;
  {
    NoGrad no_grad(tape);
    REQUIRE_FALSE(tape.recording());
    auto y = tape.record(exp(x));
    auto s = ops::sum(tape, y);
    REQUIRE(tape.size() == 0);
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE_FALSE(s.requires_grad());
    REQUIRE(x.value_use_count() == 1);  // nothing holds on to x
    REQUIRE_THROWS_AS(tape.backward(s), Error);
  }
  REQUIRE(tape.recording());
  auto y = tape.record(exp(x));
  REQUIRE(x.value_use_count() == 2);  // the tape keeps x for backward
  tape.backward(ops::sum(tape, y));
  REQUIRE(x.value_use_count() == 1);  // released after backward
}

TEST_CASE("tape: constants get no gradient and need no entry") {
  Var<double, Shape<dyn>> c(Tensor<double, Shape<dyn>>({3}, {1, 2, 3}), /*requires_grad=*/false);
  Tape tape;
  auto y = tape.record(c * 2.0);
  REQUIRE(tape.size() == 0);
  REQUIRE_FALSE(y.requires_grad());
}

TEST_CASE("tape: backward needs a one-element loss or a seed of the right shape") {
  auto x = make_var<Shape<dyn>>({3}, -1, 1, 7);
  Tape tape;
  auto y = tape.record(x * 3.0);
  REQUIRE_THROWS_WITH(tape.backward(y), Catch::Matchers::Contains("the loss must hold one element"));
  REQUIRE_THROWS_AS(tape.backward(y, Tensor<double, Shape<dyn>>({2})), ShapeError);
  tape.backward(y, Tensor<double, Shape<dyn>>({3}, {1, 10, 100}));
  REQUIRE(x.grad()(2) == 300.0);
}

TEST_CASE("tape: mixed precision, a bf16 operand of an fp32 expression gets a bf16 gradient") {
  Var<bf16, Shape<dyn>> xb(Tensor<bf16, Shape<dyn>>({3}, {bf16(1.0f), bf16(2.0f), bf16(-1.0f)}));
  Var<float, Shape<dyn>> w(Tensor<float, Shape<dyn>>({3}, {0.1f, 0.3f, 1.0f / 3}));
  Tape tape;
  auto y = tape.record(cast<float>(xb) * w);
  tape.backward(ops::sum(tape, y));
  for (index_t i = 0; i < 3; ++i) {
    REQUIRE(convert<float>(xb.grad()(i)) == convert<float>(convert<bf16>(w.value()(i))));
    REQUIRE(w.grad()(i) == convert<float>(xb.value()(i)));
  }
}

TEST_CASE("tape: a plain tensor operand may go out of scope before backward") {
  // The entry reads m in backward (d(x*m)/dx = m): it keeps its own copy, taken when the
  // expression is recorded, so neither freeing m nor changing it afterwards matters.
  auto x = make_var<Shape<dyn>>({1000}, -1, 1, 8);
  Tape tape;
  Var<double, Shape<dyn>> y;
  Tensor<double, Shape<dyn>> expected;
  {
    Tensor<double, Shape<dyn>> m = test::uniform<double, Shape<dyn>>({1000}, 1, 2, 9);
    expected = m;
    y = tape.record(x * m);
    m.fill(-5.0);  // a change after recording does not reach backward either
  }
  // Reuse the freed memory, if the allocator hands it out again.
  std::vector<Tensor<double, Shape<dyn>>> churn;
  for (int i = 0; i < 8; ++i) churn.push_back(Tensor<double, Shape<dyn>>::full({1000}, 99.0));
  tape.backward(ops::sum(tape, y));
  for (index_t i = 0; i < 1000; ++i) REQUIRE(x.grad()(i) == expected(i));
}

TEST_CASE("tape: a view operand and an expression's own temporaries are kept as well") {
  auto x = make_var<Shape<dyn, 4>>({3, 4}, -1, 1, 10);
  Tape tape;
  Var<double, Shape<dyn, 4>> y;
  {
    Tensor<double, Shape<dyn, 4>> rows({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
    y = tape.record(x * rows[1] + Tensor<double, Shape<4>>({4}, {0, 0, 0, 1}) * x);  // a view and a temporary
  }
  std::vector<Tensor<double, Shape<dyn, 4>>> churn;
  for (int i = 0; i < 8; ++i) churn.push_back(Tensor<double, Shape<dyn, 4>>::full({2, 4}, 99.0));
  tape.backward(ops::sum(tape, y));
  for (index_t r = 0; r < 3; ++r)
    for (index_t c = 0; c < 4; ++c) REQUIRE(x.grad()(r, c) == 5.0 + static_cast<double>(c) + (c == 3 ? 1.0 : 0.0));
}

namespace {
/// An entry whose backward fails the first `failures` times it runs.
struct FailingEntry final : TapeEntry {
  int* failures;
  explicit FailingEntry(int* f) : failures(f) {}
  const char* name() const override { return "failing"; }
  void backward() override {
    if (*failures > 0) {
      --*failures;
      throw Error("failing entry: backward failed on purpose");
    }
  }
};
}  // namespace

TEST_CASE("tape: an exception inside backward leaves an empty, usable tape") {
  auto x = make_var<Shape<dyn>>({3}, -1, 1, 11);
  Tape tape;
  int failures = 1;
  auto a = tape.record(x * 2.0);
  tape.push(std::make_unique<FailingEntry>(&failures));
  auto b = tape.record(a * 3.0);
  auto loss = ops::sum(tape, b);
  REQUIRE(tape.size() == 4);
  REQUIRE_THROWS_WITH(tape.backward(loss), Catch::Matchers::Contains("backward failed on purpose"));
  // Basic guarantee: every entry is released (no null entries left behind); gradients
  // accumulated before the failure stay until zero_grad().
  REQUIRE(tape.size() == 0);
  REQUIRE(x.value_use_count() == 1);
  REQUIRE(a.grad()(0) == 3.0);  // reached before the failure
  REQUIRE(x.grad()(0) == 0.0);  // not reached
  REQUIRE_NOTHROW(tape.backward(loss));  // runs no entry (it used to dereference the null ones)
  REQUIRE(x.grad()(0) == 0.0);
  x.zero_grad();
  auto c = tape.record(x * 5.0);
  tape.push(std::make_unique<FailingEntry>(&failures));  // fails no more
  tape.backward(ops::sum(tape, c));
  for (index_t i = 0; i < 3; ++i) REQUIRE(x.grad()(i) == 5.0);
}

TEST_CASE("tape: one tape per thread inside a caller's parallel region") {
  // Each thread's backward sums a broadcast bias gradient (expr::sum_to) on the serial
  // path while its OpenMP thread number is that of the caller's team.
  constexpr int threads = 4;
  std::array<double, threads> error{};
#pragma omp parallel num_threads(threads)
  {
    const int id = omp_get_thread_num();
    Var<double, Shape<dyn, 3>> x(Tensor<double, Shape<dyn, 3>>::full({5, 3}, 1.0 + id));
    Var<double, Shape<3>> b(Tensor<double, Shape<3>>({3}, {1, 2, 3}));
    Tape tape;
    auto y = tape.record(x * b);
    tape.backward(ops::sum(tape, y));
    for (index_t c = 0; c < 3; ++c) error[id] = std::max(error[id], std::abs(b.grad()(c) - 5.0 * (1.0 + id)));
  }
  for (int t = 0; t < threads; ++t) {
    INFO("thread " << t);
    REQUIRE(error[t] == 0.0);
  }
}

TEST_CASE("tape: a static-shape Var allocates its gradient only when one is made, and zero_grad frees it") {
  using S = Shape<256, 1024>;  // 1 MiB of float: blocks the counted (cached) allocator tracks
  constexpr std::size_t bytes = sizeof(float) * 256 * 1024;
  using Host = DeviceAllocator<Cpu>;
  const std::size_t before = Host::live_bytes();
  Var<float, S> w(Tensor<float, S>::full({256, 1024}, 0.5f));
  CHECK(Host::live_bytes() - before == bytes);  // the value alone: no default value or gradient made and dropped
  CHECK_FALSE(w.has_grad());
  {
    Tape tape;
    auto h = tape.record(w * w);  // a static-shape activation: its node holds no gradient yet
    CHECK(Host::live_bytes() - before == 2 * bytes);
    tape.backward(ops::sum(tape, h));
  }
  REQUIRE(w.has_grad());
  CHECK(w.grad().extents() == Extents<S>{256, 1024});
  CHECK(w.grad()(3, 7) == 1.0f);  // d/dw sum(w * w) = 2w
  CHECK(Host::live_bytes() - before == 2 * bytes);  // value and gradient; the activation's are gone
  w.zero_grad();
  CHECK(Host::live_bytes() - before == bytes);
  CHECK_FALSE(w.has_grad());
  CHECK(w.grad()(0, 0) == 0.0f);  // zero-filled when asked for again
}

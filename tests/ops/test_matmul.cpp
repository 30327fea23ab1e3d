#include <catch2/catch.hpp>

#include <ctdl/ops/matmul.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {

/// Reference product in double of stored matrices with optional transposes.
template <class T>
std::vector<double> reference(const T* a, const T* b, index_t m, index_t n, index_t k, bool ta, bool tb) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t p = 0; p < k; ++p) {
        const double av = test::to_double(ta ? a[p * m + i] : a[i * k + p]);
        const double bv = test::to_double(tb ? b[j * k + p] : b[p * n + j]);
        s += av * bv;
      }
      c[static_cast<std::size_t>(i * n + j)] = s;
    }
  return c;
}

template <ops::MatmulOptions Opt, class T>
void check_forward(index_t m, index_t n, index_t k) {
  using S = Shape<dyn, dyn>;
  auto a = test::uniform<T, S>({Opt.transpose_a ? k : m, Opt.transpose_a ? m : k}, -1, 1, 1);
  auto b = test::uniform<T, S>({Opt.transpose_b ? n : k, Opt.transpose_b ? k : n}, -1, 1, 2);
  auto c = ops::matmul<Opt>(a, b);
  REQUIRE(c.extents() == std::array<index_t, 2>{m, n});
  const auto ref = reference(a.data(), b.data(), m, n, k, Opt.transpose_a, Opt.transpose_b);
  // Accumulation is fp32 for float and bf16 inputs; only the output rounding differs.
  const double tol = std::is_same_v<T, double> ? 1e-12 : std::is_same_v<T, float> ? 1e-5 : 1e-2;
  for (index_t i = 0; i < c.size(); ++i) REQUIRE(test::close(test::to_double(c.data()[i]), ref[i], tol));
}

}  // namespace

TEMPLATE_TEST_CASE("matmul: forward against a double reference, all transposes", "[ops]", float, double, bf16) {
  using T = TestType;
  check_forward<ops::MatmulOptions{}, T>(7, 5, 9);
  check_forward<ops::MatmulOptions{.transpose_a = true}, T>(7, 5, 9);
  check_forward<ops::MatmulOptions{.transpose_b = true}, T>(7, 5, 9);
  check_forward<ops::MatmulOptions{.transpose_a = true, .transpose_b = true}, T>(7, 5, 9);
  check_forward<ops::MatmulOptions{}, T>(64, 96, 130);
}

TEST_CASE("matmul: runtime extents that do not multiply throw ShapeError naming both shapes") {
  Tensor<float, Shape<dyn, dyn>> a({3, 4}), b({5, 2});
  REQUIRE_THROWS_WITH(ops::matmul(a, b),
                      Catch::Matchers::Contains("Shape<dyn, dyn> [3, 4] and Shape<dyn, dyn> [5, 2] do not multiply"));
}

TEST_CASE("matmul: gradcheck for every transpose combination, plain and batched") {
  auto x = [](index_t r, index_t c, unsigned seed) {
    return Var<double, Shape<dyn, dyn>>(test::uniform<double, Shape<dyn, dyn>>({r, c}, -1, 1, seed));
  };
  auto run = [](auto fn, auto a, auto b) {
    auto r = gradcheck(fn, a, b);
    INFO(r.report);
    REQUIRE(r.ok);
  };
  run([](Tape& t, const auto& a, const auto& b) { return ops::matmul(t, a, b); }, x(3, 4, 1), x(4, 5, 2));
  run([](Tape& t, const auto& a, const auto& b) { return ops::matmul<ops::MatmulOptions{.transpose_a = true}>(t, a, b); },
      x(4, 3, 1), x(4, 5, 2));
  run([](Tape& t, const auto& a, const auto& b) { return ops::matmul<ops::MatmulOptions{.transpose_b = true}>(t, a, b); },
      x(3, 4, 1), x(5, 4, 2));
  run([](Tape& t, const auto& a, const auto& b) {
    return ops::matmul<ops::MatmulOptions{.transpose_a = true, .transpose_b = true}>(t, a, b);
  }, x(4, 3, 1), x(5, 4, 2));
  using B3 = Shape<dyn, dyn, dyn>;
  Var<double, B3> a3(test::uniform<double, B3>({2, 3, 4}, -1, 1, 3));
  Var<double, B3> b3(test::uniform<double, B3>({2, 5, 4}, -1, 1, 4));
  run([](Tape& t, const auto& a, const auto& b) { return ops::matmul<ops::MatmulOptions{.transpose_b = true}>(t, a, b); },
      a3, b3);
}

TEST_CASE("matmul: float and bf16 backward agree with the double one") {
  auto ad = test::uniform<double, Shape<dyn, dyn>>({6, 8}, -1, 1, 5);
  auto bd = test::uniform<double, Shape<dyn, dyn>>({8, 3}, -1, 1, 6);
  auto grads = [&](auto tag) {
    using T = decltype(tag);
    Var<T, Shape<dyn, dyn>> a(Tensor<T, Shape<dyn, dyn>>(cast<T>(ad))), b(Tensor<T, Shape<dyn, dyn>>(cast<T>(bd)));
    Tape tape;
    auto c = ops::matmul(tape, a, b);
    tape.backward(c, Tensor<T, Shape<dyn, dyn>>::full(c.extents(), T(1)));
    return std::make_pair(Tensor<double, Shape<dyn, dyn>>(cast<double>(a.grad())),
                          Tensor<double, Shape<dyn, dyn>>(cast<double>(b.grad())));
  };
  const auto [da, db] = grads(double{});
  const auto [fa, fb] = grads(float{});
  const auto [ha, hb] = grads(bf16{});
  for (index_t i = 0; i < da.size(); ++i) {
    REQUIRE(test::close(fa.data()[i], da.data()[i], 1e-5));
    REQUIRE(test::close(ha.data()[i], da.data()[i], 4e-2));
  }
  for (index_t i = 0; i < db.size(); ++i) {
    REQUIRE(test::close(fb.data()[i], db.data()[i], 1e-5));
    REQUIRE(test::close(hb.data()[i], db.data()[i], 4e-2));
  }
}

TEST_CASE("matmul: oneDNN reports the implementation it chose") {
  Tensor<float, Shape<dyn, dyn>> a({16, 16}), b({16, 16});
  (void)ops::matmul(a, b);
  const auto impl = kernels::cpu::matmul_implementation(false);
#if defined(CTDL_WITH_ONEDNN)
  REQUIRE(impl != "none");
#endif
  INFO(impl);
  SUCCEED();
}

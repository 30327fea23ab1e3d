#include <catch2/catch.hpp>

#include <ctdl/ops/attention.hpp>

#include "../test_util.hpp"

using namespace ctdl;

namespace {

/// Reference BERT self-attention in double with explicit loops.
std::vector<double> reference(const Tensor<double, Shape<dyn, dyn>>& q, const Tensor<double, Shape<dyn, dyn>>& k,
                              const Tensor<double, Shape<dyn, dyn>>& v, const Tensor<double, Shape<dyn, dyn>>& mask,
                              index_t heads) {
  const index_t b_n = mask.extent(0), s = mask.extent(1), h = q.extent(1), d = h / heads;
  std::vector<double> out(static_cast<std::size_t>(b_n * s * h));
  for (index_t b = 0; b < b_n; ++b)
    for (index_t a = 0; a < heads; ++a)
      for (index_t i = 0; i < s; ++i) {
        std::vector<double> z(static_cast<std::size_t>(s));
        double m = -1e300, sum = 0;
        for (index_t j = 0; j < s; ++j) {
          double dot = 0;
          for (index_t t = 0; t < d; ++t) dot += q(b * s + i, a * d + t) * k(b * s + j, a * d + t);
          z[j] = dot / std::sqrt(static_cast<double>(d)) + mask(b, j);
          m = std::max(m, z[j]);
        }
        for (double& x : z) sum += x = std::exp(x - m);
        for (index_t t = 0; t < d; ++t) {
          double c = 0;
          for (index_t j = 0; j < s; ++j) c += z[j] / sum * v(b * s + j, a * d + t);
          out[static_cast<std::size_t>((b * s + i) * h + a * d + t)] = c;
        }
      }
  return out;
}

}  // namespace

TEST_CASE("attention: values against a loop reference, with padding masked") {
  using S = Shape<dyn, dyn>;
  const index_t batch = 2, seq = 5, hidden = 8, heads = 2;
  auto q = test::uniform<double, S>({batch * seq, hidden}, -1, 1, 1);
  auto k = test::uniform<double, S>({batch * seq, hidden}, -1, 1, 2);
  auto v = test::uniform<double, S>({batch * seq, hidden}, -1, 1, 3);
  Tensor<double, S> mask({batch, seq}, {0, 0, 0, -10000, -10000, 0, 0, 0, 0, 0});
  Tape tape;
  auto out = ops::attention(tape, Var<double, S>(q), Var<double, S>(k), Var<double, S>(v), mask, {.heads = heads});
  const auto ref = reference(q, k, v, mask, heads);
  for (index_t i = 0; i < out.value().size(); ++i) REQUIRE(test::close(out.value().data()[i], ref[i], 1e-12));
  // float and bf16 against the same reference
  auto run = [&](auto tag, double tol) {
    using T = decltype(tag);
    Tape t;
    auto o = ops::attention(t, Var<T, S>(Tensor<T, S>(cast<T>(q))), Var<T, S>(Tensor<T, S>(cast<T>(k))),
                            Var<T, S>(Tensor<T, S>(cast<T>(v))), Tensor<T, S>(cast<T>(mask)), {.heads = heads});
    for (index_t i = 0; i < o.value().size(); ++i) {
      const double got = convert<double>(o.value().data()[i]);
      INFO(dtype_name<T>() << " element " << i << ": " << got << " against " << ref[i]);
      REQUIRE(test::close(got, ref[i], tol));
    }
  };
  run(float{}, 1e-5);
  run(bf16{}, 4e-2);
}

TEST_CASE("attention: gradcheck for q, k and v, with mask and with dropout") {
  using S = Shape<dyn, 6>;
  const index_t batch = 2, seq = 4;
  Var<double, S> q(test::uniform<double, S>({batch * seq, 6}, -1, 1, 4));
  Var<double, S> k(test::uniform<double, S>({batch * seq, 6}, -1, 1, 5));
  Var<double, S> v(test::uniform<double, S>({batch * seq, 6}, -1, 1, 6));
  Tensor<double, Shape<dyn, dyn>> mask({batch, seq}, {0, 0, -10000, -10000, 0, 0, 0, 0});
  for (float p : {0.0f, 0.3f}) {
    const ops::AttentionOptions opt{.heads = 3, .dropout = p, .stream = {.seed = 5, .tensor_id = 9}};
    auto r = gradcheck([&](Tape& t, const auto& qv, const auto& kv, const auto& vv) {
      return ops::attention(t, qv, kv, vv, mask, opt);
    }, q, k, v);
    INFO("dropout " << p << "\n" << r.report);
    REQUIRE(r.ok);
  }
}

TEST_CASE("attention: shape errors") {
  using S = Shape<dyn, 6>;
  Var<double, S> q(Tensor<double, S>({8, 6}));
  Tensor<double, Shape<dyn, dyn>> mask({2, 3});
  Tape tape;
  REQUIRE_THROWS_WITH(ops::attention(tape, q, q, q, mask, {.heads = 3}),
                      Catch::Matchers::Contains("do not fit the mask's batch x sequence [2, 3]"));
  Tensor<double, Shape<dyn, dyn>> mask2({2, 4});
  REQUIRE_THROWS_WITH(ops::attention(tape, q, q, q, mask2, {.heads = 4}),
                      Catch::Matchers::Contains("4 heads do not divide the hidden width 6"));
}

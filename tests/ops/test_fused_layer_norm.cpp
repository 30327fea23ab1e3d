#include <catch2/catch.hpp>

#include <ctdl/ops/fused_layer_norm.hpp>
#include <ctdl/ops/embedding.hpp>
#include <ctdl/ops/layer_norm.hpp>
#include <omp.h>

#include "../test_util.hpp"

using namespace ctdl;

namespace {

constexpr index_t W = 12;
using Rows = Shape<dyn, W>;
using Vec = Shape<W>;

template <class T>
struct AddLnCase {
  Var<T, Rows> h, residual;
  Var<T, Vec> bias, gamma, beta;
  static AddLnCase make(index_t rows, unsigned seed) {
    return {Var<T, Rows>(test::uniform<T, Rows>({rows, W}, -2, 2, seed)),
            Var<T, Rows>(test::uniform<T, Rows>({rows, W}, -1, 1, seed + 1)),
            Var<T, Vec>(test::uniform<T, Vec>({W}, -0.5, 0.5, seed + 2)),
            Var<T, Vec>(test::uniform<T, Vec>({W}, 0.5, 1.5, seed + 3)),
            Var<T, Vec>(test::uniform<T, Vec>({W}, -0.5, 0.5, seed + 4))};
  }
};

/// The unfused composition add_layer_norm stands for.
template <class T>
Var<T, Rows> unfused(Tape& t, const AddLnCase<T>& c, const ops::AddLayerNormOptions& opt) {
  auto hb = t.record(c.h + c.bias);
  auto d = ops::dropout(t, hb, opt.dropout, opt.stream);
  return ops::layer_norm(t, t.record(d + c.residual), c.gamma, c.beta, opt.eps);
}

/// A fixed random upstream gradient.
template <class T, class S>
Tensor<T, S> seed_grad(const Extents<S>& e) {
  return test::uniform<T, S>(e, -1, 1, 99);
}

}  // namespace

TEST_CASE("add_layer_norm: gradcheck in double for h, bias, residual, gamma and beta, with and without dropout") {
  for (float p : {0.0f, 0.3f}) {
    auto c = AddLnCase<double>::make(5, 1);
    const ops::AddLayerNormOptions opt{.dropout = p, .stream = {.seed = 4, .tensor_id = 2}, .eps = 1e-5};
    auto r = gradcheck([&](Tape& t, const auto& h, const auto& b, const auto& res, const auto& g, const auto& be) {
      return ops::add_layer_norm(t, h, b, res, g, be, opt);
    }, c.h, c.bias, c.residual, c.gamma, c.beta);
    INFO("p = " << p << "\n" << r.report);
    REQUIRE(r.ok);
  }
}

TEST_CASE("add_layer_norm: equals LayerNorm(dropout(h + bias) + residual) built from the unfused ops") {
  for (float p : {0.0f, 0.1f}) {
    const ops::AddLayerNormOptions opt{.dropout = p, .stream = {.seed = 11, .tensor_id = 7, .step = 3}, .eps = 1e-12};
    auto a = AddLnCase<float>::make(300, 5);
    auto b = AddLnCase<float>::make(300, 5);
    Tape ta, tb;
    auto ya = ops::add_layer_norm(ta, a.h, a.bias, a.residual, a.gamma, a.beta, opt);
    auto yb = unfused(tb, b, opt);
    for (index_t i = 0; i < ya.value().size(); ++i) REQUIRE(ya.value().data()[i] == Approx(yb.value().data()[i]).margin(2e-6));
    const auto dy = seed_grad<float, Rows>(ya.extents());
    ta.backward(ya, dy);
    tb.backward(yb, dy);
    auto same = [](const auto& x, const auto& y, const char* what) {
      INFO(what);
      for (index_t i = 0; i < x.size(); ++i) REQUIRE(x.data()[i] == Approx(y.data()[i]).margin(1e-5));
    };
    same(a.h.grad(), b.h.grad(), "dh");
    same(a.residual.grad(), b.residual.grad(), "dresidual");
    same(a.bias.grad(), b.bias.grad(), "dbias");
    same(a.gamma.grad(), b.gamma.grad(), "dgamma");
    same(a.beta.grad(), b.beta.grad(), "dbeta");
  }
}

TEST_CASE("add_layer_norm: results and gradients do not depend on the thread count") {
  const ops::AddLayerNormOptions opt{.dropout = 0.1f, .stream = {.seed = 3}, .eps = 1e-12};
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    auto c = AddLnCase<float>::make(20000, 8);
    Tape t;
    auto y = ops::add_layer_norm(t, c.h, c.bias, c.residual, c.gamma, c.beta, opt);
    t.backward(y, seed_grad<float, Rows>(y.extents()));
    std::vector<float> all(y.value().data(), y.value().data() + y.value().size());
    for (const auto* g : {&c.h.grad(), &c.residual.grad()}) all.insert(all.end(), g->data(), g->data() + g->size());
    for (const auto* g : {&c.bias.grad(), &c.gamma.grad(), &c.beta.grad()}) all.insert(all.end(), g->data(), g->data() + g->size());
    runs.push_back(std::move(all));
  }
  omp_set_num_threads(2);
  REQUIRE(runs[0] == runs[1]);
}

TEST_CASE("add_layer_norm: keeps neither h nor the residual for backward") {
  auto c = AddLnCase<float>::make(4, 3);
  Tape t;
  auto h_node = c.h.node_ptr();
  auto r_node = c.residual.node_ptr();
  auto y = ops::add_layer_norm(t, c.h, c.bias, c.residual, c.gamma, c.beta, {});
  c.h = {};
  c.residual = {};
  REQUIRE(h_node->value.size() == 0);  // freed: no Var and no entry reads it
  REQUIRE(r_node->value.size() == 0);
  t.backward(y, seed_grad<float, Rows>(y.extents()));
  REQUIRE(h_node->has_grad);  // the gradients still arrive
  REQUIRE(r_node->has_grad);
}

TEST_CASE("add_layer_norm: a constant h gets no gradient, and the bias the same one (as on the GPU)") {
  const ops::AddLayerNormOptions opt{.dropout = 0.1f, .stream = {.seed = 5, .tensor_id = 2, .step = 1}};
  auto a = AddLnCase<float>::make(7, 9);
  auto b = AddLnCase<float>::make(7, 9);
  b.h = Var<float, Rows>(b.h.value(), /*requires_grad=*/false);
  Tape ta, tb;
  auto ya = ops::add_layer_norm(ta, a.h, a.bias, a.residual, a.gamma, a.beta, opt);
  auto yb = ops::add_layer_norm(tb, b.h, b.bias, b.residual, b.gamma, b.beta, opt);
  const auto dy = seed_grad<float, Rows>(ya.extents());
  ta.backward(ya, dy);
  tb.backward(yb, dy);
  CHECK_FALSE(b.h.has_grad());
  for (index_t j = 0; j < W; ++j) REQUIRE(b.bias.grad().data()[j] == a.bias.grad().data()[j]);
}

TEST_CASE("add_layer_norm: shape and probability errors") {
  auto c = AddLnCase<float>::make(4, 3);
  Var<float, Rows> short_res(Tensor<float, Rows>({3, W}));
  Tape t;
  REQUIRE_THROWS_AS(ops::add_layer_norm(t, c.h, c.bias, short_res, c.gamma, c.beta, {}), ShapeError);
  REQUIRE_THROWS_AS(ops::add_layer_norm(t, c.h, c.bias, c.residual, c.gamma, c.beta, {.dropout = 1.0f}), Error);
}

namespace {

using Ids = Tensor<std::int32_t, Shape<dyn, dyn>>;

Ids make_ids(index_t b, index_t s, std::int32_t mod, int salt) {
  auto ids = Ids::uninitialized({b, s});
  for (index_t i = 0; i < b * s; ++i) ids.data()[i] = static_cast<std::int32_t>((i * 7 + salt) % mod);
  return ids;
}

}  // namespace

TEST_CASE("embedding_layer_norm: gradcheck in double for every table (repeated ids), gamma and beta") {
  using T = double;
  Var<T, Rows> words(test::uniform<T, Rows>({9, W}, -1, 1, 1)), pos(test::uniform<T, Rows>({4, W}, -1, 1, 2)),
      types(test::uniform<T, Rows>({2, W}, -1, 1, 3));
  Var<T, Vec> gamma(test::uniform<T, Vec>({W}, 0.5, 1.5, 4)), beta(test::uniform<T, Vec>({W}, -0.5, 0.5, 5));
  const Ids wi = make_ids(3, 4, 9, 0), pi = make_ids(3, 4, 4, 1), ti = make_ids(3, 4, 2, 0);
  auto r = gradcheck([&](Tape& t, const auto& w, const auto& p, const auto& ty, const auto& g, const auto& b) {
    return ops::embedding_layer_norm(t, std::array{w, p, ty}, std::array{&wi, &pi, &ti}, g, b, 1e-5);
  }, words, pos, types, gamma, beta);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("embedding_layer_norm: equals LayerNorm(sum of the lookups) built from the unfused ops") {
  using T = float;
  auto make = [] {
    return std::array{Var<T, Rows>(test::uniform<T, Rows>({50, W}, -1, 1, 1)),
                      Var<T, Rows>(test::uniform<T, Rows>({16, W}, -1, 1, 2)),
                      Var<T, Rows>(test::uniform<T, Rows>({2, W}, -1, 1, 3))};
  };
  auto ta = make(), tb = make();
  Var<T, Vec> gamma(test::uniform<T, Vec>({W}, 0.5, 1.5, 4)), beta(test::uniform<T, Vec>({W}, -0.5, 0.5, 5));
  const Ids wi = make_ids(6, 16, 50, 3), pi = make_ids(6, 16, 16, 0), ti = make_ids(6, 16, 2, 1);
  Tape a, b;
  auto ya = ops::embedding_layer_norm(a, ta, std::array{&wi, &pi, &ti}, gamma, beta, 1e-12);
  auto sum = b.record(ops::embedding(b, tb[0], wi) + ops::embedding(b, tb[1], pi) + ops::embedding(b, tb[2], ti));
  auto yb = ops::layer_norm(b, sum, gamma, beta, 1e-12);
  for (index_t i = 0; i < ya.value().size(); ++i) REQUIRE(ya.value().data()[i] == Approx(yb.value().data()[i]).margin(2e-6));
  const auto dy = seed_grad<T, Rows>(ya.extents());
  a.backward(ya, dy);
  b.backward(yb, dy);
  for (std::size_t t = 0; t < 3; ++t) {
    INFO("table " << t);
    for (index_t i = 0; i < ta[t].grad().size(); ++i) {
      REQUIRE(ta[t].grad().data()[i] == Approx(tb[t].grad().data()[i]).margin(1e-5));
    }
  }
}

TEST_CASE("embedding_layer_norm: an id outside its table names the lookup and position") {
  Var<float, Rows> words(Tensor<float, Rows>({5, W})), types(Tensor<float, Rows>({2, W}));
  Var<float, Vec> gamma(Tensor<float, Vec>::full({W}, 1.0f)), beta(Tensor<float, Vec>({W}));
  Ids wi = make_ids(1, 4, 5, 0), ti = make_ids(1, 4, 2, 0);
  ti.data()[3] = 2;
  Tape t;
  REQUIRE_THROWS_WITH(ops::embedding_layer_norm(t, std::array{words, types}, std::array<const Ids*, 2>{&wi, &ti}, gamma, beta, 1e-12),
                      Catch::Contains("id 2 at position 3 of lookup 1") && Catch::Contains("2 rows"));
  Ids short_ids = make_ids(1, 3, 2, 0);
  REQUIRE_THROWS_AS(ops::embedding_layer_norm(t, std::array{words, types}, std::array<const Ids*, 2>{&wi, &short_ids}, gamma, beta, 1e-12),
                    ShapeError);
  // One table in two lookups: their scatter-adds would race in backward.
  ti.data()[3] = 1;
  REQUIRE_THROWS_WITH(ops::embedding_layer_norm(t, std::array{words, types, words},
                                                std::array<const Ids*, 3>{&wi, &ti, &wi}, gamma, beta, 1e-12),
                      Catch::Contains("lookups 0 and 2 use the same table"));
}

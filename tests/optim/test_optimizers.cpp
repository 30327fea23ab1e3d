// AdamW, LAMB and SGD against four steps computed with PyTorch in float64
// (tools/make_fixtures.py optim), plus the shared gradient utilities and the schedule.
#include <catch2/catch.hpp>

#include <ctdl/io/safetensors.hpp>
#include <ctdl/optim/adamw.hpp>
#include <ctdl/optim/lamb.hpp>
#include <ctdl/optim/schedule.hpp>
#include <ctdl/optim/sgd.hpp>

#include <cmath>
#include <limits>

using namespace ctdl;

namespace {

struct TwoParams {
  Var<float, Shape<dyn, dyn>> weight;
  Var<float, Shape<dyn>> bias;
  static constexpr std::array names{"weight", "bias"};
};

const io::SafetensorsFile& fixture() {
  static const io::SafetensorsFile f(std::string(CTDL_FIXTURES_DIR) + "/optim_steps.safetensors");
  return f;
}

TwoParams initial() {
  TwoParams m{Var(fixture().tensor<float, Shape<dyn, dyn>>("init.weight")),
              Var(fixture().tensor<float, Shape<dyn>>("init.bias"))};
  m.bias.set_weight_decay(false);  // as nn::Linear marks its bias
  return m;
}

template <class S>
void set_grad(Var<float, S>& p, const Tensor<float, S>& g) {
  p.zero_grad();
  std::copy(g.data(), g.data() + g.size(), p.node_ptr()->grad_data());
}

void set_grads(TwoParams& m, int t, float factor = 1) {
  auto gw = fixture().tensor<float, Shape<dyn, dyn>>("grad." + std::to_string(t) + ".weight");
  auto gb = fixture().tensor<float, Shape<dyn>>("grad." + std::to_string(t) + ".bias");
  for (index_t i = 0; i < gw.size(); ++i) gw.data()[i] *= factor;
  for (index_t i = 0; i < gb.size(); ++i) gb.data()[i] *= factor;
  set_grad(m.weight, gw);
  set_grad(m.bias, gb);
}

double max_rel_error(const float* got, const double* want, index_t n) {
  double worst = 0;
  for (index_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(got[i] - want[i]) / std::max(1e-3, std::abs(want[i])));
  return worst;
}

template <class Opt>
void check_against_fixture(Opt opt, const std::string& key) {
  auto m = initial();
  const auto lr = fixture().tensor<double, Shape<dyn>>("lr");
  for (int t = 0; t < 4; ++t) {
    set_grads(m, t);
    opt.step(m, static_cast<float>(lr.data()[t]));
    const auto w = fixture().tensor<double, Shape<dyn, dyn>>(key + "." + std::to_string(t) + ".weight");
    const auto b = fixture().tensor<double, Shape<dyn>>(key + "." + std::to_string(t) + ".bias");
    INFO(key << " step " << t);
    CHECK(max_rel_error(m.weight.value().data(), w.data(), w.size()) < 2e-5);
    CHECK(max_rel_error(m.bias.value().data(), b.data(), b.size()) < 2e-5);
  }
}

}  // namespace

TEST_CASE("AdamW (BERT's AdamWeightDecay) matches the reference for four steps") {
  check_against_fixture(optim::AdamW{}, "adamw");
}

TEST_CASE("LAMB (NVIDIA's) matches the reference for four steps") { check_against_fixture(optim::Lamb{}, "lamb"); }

TEST_CASE("SGD with momentum matches torch.optim.SGD for four steps") {
  check_against_fixture(optim::Sgd({.momentum = 0.9, .weight_decay = 0.01}), "sgd");
}

TEST_CASE("grad_scale is folded into the update: grads x 4 with grad_scale 1/4 equals grads") {
  auto a = initial(), b = initial();
  optim::AdamW oa, ob;
  for (int t = 0; t < 3; ++t) {
    set_grads(a, t);
    set_grads(b, t, 4.f);
    oa.step(a, 1e-2f);
    ob.step(b, 1e-2f, 0.25f);
  }
  for (index_t i = 0; i < a.weight.value().size(); ++i)
    CHECK(a.weight.value().data()[i] == Approx(b.weight.value().data()[i]).epsilon(1e-6));
}

TEST_CASE("parameters without a gradient are left alone") {
  auto m = initial();
  const auto before = m.bias.value().data()[0];
  set_grads(m, 0);
  m.bias.zero_grad();
  optim::AdamW opt;
  opt.step(m, 0.1f);
  CHECK(m.bias.value().data()[0] == before);
  CHECK(m.weight.value().data()[0] != fixture().tensor<float, Shape<dyn, dyn>>("init.weight").data()[0]);
}

TEST_CASE("global gradient norm, clipping factor and the finiteness check") {
  auto m = initial();
  set_grads(m, 2);
  double sq = 0;
  for (const std::string k : {"weight", "bias"}) {
    const auto& e = fixture().at("grad.2." + k);
    const auto* d = reinterpret_cast<const double*>(e.data);
    for (std::size_t i = 0; i < e.bytes / 8; ++i) sq += d[i] * d[i];
  }
  CHECK(optim::global_grad_norm(m) == Approx(std::sqrt(sq)).epsilon(1e-6));
  CHECK(optim::global_grad_norm(m, 0.5f) == Approx(0.5 * std::sqrt(sq)).epsilon(1e-6));
  CHECK(optim::clip_factor(4.0, 1.0) == Approx(0.25));
  CHECK(optim::clip_factor(0.5, 1.0) == 1.f);
  CHECK(optim::clip_factor(4.0, 0.0) == 1.f);
  CHECK(optim::all_grads_finite(m));
  m.weight.node_ptr()->grad_data()[3] = std::numeric_limits<float>::infinity();
  CHECK_FALSE(optim::all_grads_finite(m));
  m.weight.node_ptr()->grad_data()[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(optim::all_grads_finite(m));
  optim::zero_grad(m);
  CHECK_FALSE(m.weight.has_grad());
}

TEST_CASE("warmup then linear decay to zero at the last step") {
  const auto s = optim::WarmupLinearDecay::with_proportion(1e-3, 100, 0.1);
  CHECK(s.warmup_steps == 10);
  CHECK(s(0) == 0.0);
  CHECK(s(5) == Approx(5e-4));
  CHECK(s(10) == Approx(1e-3));  // the peak
  CHECK(s(55) == Approx(5e-4));
  CHECK(s(100) == 0.0);
  auto google = s;
  google.decay_from_start = true;
  CHECK(google(10) == Approx(9e-4));  // Google's optimization.py: decay counted from step 0
  CHECK(optim::WarmupLinearDecay::with_proportion(1e-3, 10, 0.0)(0) == Approx(1e-3));
}

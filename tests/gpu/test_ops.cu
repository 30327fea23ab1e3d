// The ops of ops/ on Var<T, S, Cuda> against the same ops on the CPU: softmax (with and
// without a broadcast mask), elementwise expressions recorded on the device (their
// backward includes a bias gradient summed back over rows), reductions and
// cross-entropy. Forward values and every gradient, with gradients pre-filled so that
// += is checked. fp32 within 1e-5; bf16 within the tolerances of docs/precision.md.
#include <ctdl/ops/cross_entropy.hpp>
#include <ctdl/ops/reduce.hpp>
#include <ctdl/ops/softmax.hpp>

#include "gpu/ops_twin.hpp"

namespace {

using namespace ctdl;
using gpu_test::Report;
using Rows = Shape<dyn, dyn>;

template <class T>
double tol_of() {
  return std::is_same_v<T, float> ? 1e-5 : std::is_same_v<T, bf16> ? 2e-2 : 2.5e-3;
}

template <class T>
void check_softmax(Report& report, const std::string& type) {
  using S4 = Shape<dyn, dyn, dyn, dyn>;
  auto x = ops_twin::make<T, S4>({2, 3, 5, 37}, 11, true, -4.0f, 4.0f);
  ops_twin::prefill_grad(x, 12);
  // BERT's mask, [B, 1, 1, S]: -10000 on the last keys of the second example.
  auto mask = Tensor<T, S4>::uninitialized({2, 1, 1, 37});
  for (index_t j = 0; j < 37; ++j) {
    mask.data()[j] = T(0.0f);
    mask.data()[37 + j] = T(j < 30 ? 0.0f : -10000.0f);
  }
  const auto mask_gpu = to_device<Cuda>(mask);
  Tape tc, tg;
  auto yc = ops::softmax(tc, x.cpu, mask);
  auto yg = ops::softmax(tg, x.gpu, mask_gpu);
  ops_twin::compare(report, "softmax " + type + " (masked) forward", yc, yg, tol_of<T>());
  ops_twin::backward(tc, tg, yc, yg, 13);
  ops_twin::compare_grad(report, "softmax " + type + " (masked) dx", x, tol_of<T>());

  auto z = ops_twin::make<T, Rows>({7, 129}, 14);
  Tape uc, ug;
  auto wc = ops::softmax(uc, z.cpu);
  auto wg = ops::softmax(ug, z.gpu);
  ops_twin::compare(report, "softmax " + type + " forward", wc, wg, tol_of<T>());
  ops_twin::backward(uc, ug, wc, wg, 15);
  ops_twin::compare_grad(report, "softmax " + type + " dx", z, tol_of<T>());
}

/// BERT's bias + GELU and the pooler's bias + tanh: one recorded expression each, whose
/// backward sums the bias gradient back over the rows on the device (cuda::sum_to through
/// add_column_sums_of: 2 row blocks at 33 rows, 32 at 1,000, and over two leading axes).
template <class T, class S = Rows>
void check_recorded_expressions(Report& report, std::string type, const Extents<S>& extents = {33, 70}) {
  type += " " + describe<S>(extents);
  auto x = ops_twin::make<T, S>(extents, 21);
  auto b = ops_twin::make<T, Shape<dyn>>({extents[S::rank - 1]}, 22);
  ops_twin::prefill_grad(x, 23);
  ops_twin::prefill_grad(b, 24);
  Tape tc, tg;
  auto yc = tc.record(gelu(x.cpu + b.cpu));
  auto yg = tg.record(gelu(x.gpu + b.gpu));
  ops_twin::compare(report, "record gelu(x + b) " + type + " forward", yc, yg, tol_of<T>());
  ops_twin::backward(tc, tg, yc, yg, 25);
  ops_twin::compare_grad(report, "record gelu(x + b) " + type + " dx", x, tol_of<T>());
  ops_twin::compare_grad(report, "record gelu(x + b) " + type + " db (summed over rows)", b, tol_of<T>());

  Tape uc, ug;
  auto zc = uc.record(tanh(x.cpu * 2.0f + b.cpu) * x.cpu);
  auto zg = ug.record(tanh(x.gpu * 2.0f + b.gpu) * x.gpu);
  ops_twin::compare(report, "record tanh(2x + b) * x " + type + " forward", zc, zg, tol_of<T>());
  ops_twin::backward(uc, ug, zc, zg, 26);
  ops_twin::compare_grad(report, "record tanh(2x + b) * x " + type + " dx", x, tol_of<T>());
  ops_twin::compare_grad(report, "record tanh(2x + b) * x " + type + " db", b, tol_of<T>());
}

template <class T>
void check_reductions(Report& report, const std::string& type) {
  auto x = ops_twin::make<T, Rows>({19, 300}, 31);
  ops_twin::prefill_grad(x, 32);
  Tape tc, tg;
  auto sc = ops::sum(tc, x.cpu, last_axis);
  auto sg = ops::sum(tg, x.gpu, last_axis);
  ops_twin::compare(report, "sum(x, last_axis) " + type, sc, sg, tol_of<T>());
  ops_twin::backward(tc, tg, sc, sg, 33);
  ops_twin::compare_grad(report, "sum(x, last_axis) " + type + " dx", x, tol_of<T>());

  auto mc = ops::mean(tc, x.cpu, last_axis);
  auto mg = ops::mean(tg, x.gpu, last_axis);
  ops_twin::compare(report, "mean(x, last_axis) " + type, mc, mg, tol_of<T>());
  ops_twin::backward(tc, tg, mc, mg, 34);
  ops_twin::compare_grad(report, "mean(x, last_axis) " + type + " dx", x, tol_of<T>());

  auto ac = ops::mean(tc, x.cpu);
  auto ag = ops::mean(tg, x.gpu);
  ops_twin::compare(report, "mean(x) " + type, ac, ag, tol_of<T>());
  tc.backward(ac);
  tg.backward(ag);
  ops_twin::compare_grad(report, "mean(x) " + type + " dx (seed 1)", x, tol_of<T>());

  // Empty inputs behave as on the CPU: softmax of no rows or of empty rows is empty (no
  // launch), the sum of nothing is 0 and the mean of nothing is 0 / 0 (NaN).
  for (const Extents<Rows> e : {Extents<Rows>{0, 5}, Extents<Rows>{3, 0}}) {
    const std::string shape = "[" + std::to_string(e[0]) + ", " + std::to_string(e[1]) + "] " + type;
    auto empty = ops_twin::make<T, Rows>(e, 35);
    Tape ec, eg;
    auto yc = ops::softmax(ec, empty.cpu);
    auto yg = ops::softmax(eg, empty.gpu);
    report.expect("softmax of an empty " + shape + " is empty on both devices",
                  yg.value().extents() == yc.value().extents() && yg.value().size() == 0);
    auto rc = ops::mean(ec, empty.cpu, last_axis);
    auto rg = ops::mean(eg, empty.gpu, last_axis);
    const auto mean_c = ops_twin::values(rc.value()), mean_g = ops_twin::values(rg.value());
    bool same = mean_c.size() == mean_g.size();
    for (std::size_t i = 0; same && i < mean_c.size(); ++i)
      same = std::isnan(static_cast<float>(mean_c[i])) == std::isnan(static_cast<float>(mean_g[i]));
    report.expect("mean(x, last_axis) of an empty " + shape + " as on the CPU (NaN for empty rows)", same,
                  std::to_string(mean_g.size()) + " values on the GPU, " + std::to_string(mean_c.size()) + " on the CPU");
    const float all_c = static_cast<float>(ops_twin::values(ops::mean(ec, empty.cpu).value())[0]);
    const float all_g = static_cast<float>(ops_twin::values(ops::mean(eg, empty.gpu).value())[0]);
    report.expect("mean(x) of an empty " + shape + " is NaN on both devices", std::isnan(all_c) && std::isnan(all_g),
                  "cpu " + std::to_string(all_c) + ", gpu " + std::to_string(all_g));
  }
}

template <class T>
void check_cross_entropy(Report& report, const std::string& type) {
  const index_t n = 23, c = 5;
  auto logits = ops_twin::make<T, Shape<dyn, dyn>>({n, c}, 41, true, -3.0f, 3.0f);
  ops_twin::prefill_grad(logits, 42);
  auto labels = Tensor<std::int32_t, Shape<dyn>>::uninitialized({n});
  auto mask = Tensor<T, Shape<dyn>>::uninitialized({n});
  for (index_t i = 0; i < n; ++i) {
    labels.data()[i] = static_cast<std::int32_t>((i * 7) % c);
    mask.data()[i] = T(i % 4 == 3 ? 0.0f : 1.0f);
  }
  labels.data()[3] = 99;  // in a row the mask leaves out: never read
  {
    Tape tc, tg;
    auto lc = ops::cross_entropy(tc, logits.cpu, labels, mask);
    auto lg = ops::cross_entropy(tg, logits.gpu, labels, mask);
    ops_twin::compare(report, "cross_entropy " + type + " (masked) loss", lc, lg, tol_of<T>());
    tc.backward(lc);
    tg.backward(lg);
    ops_twin::compare_grad(report, "cross_entropy " + type + " (masked) dlogits", logits, tol_of<T>());
  }
  labels.data()[3] = 1;
  {
    Tape tc, tg;
    auto lc = ops::cross_entropy(tc, logits.cpu, labels);
    auto lg = ops::cross_entropy(tg, logits.gpu, labels);
    ops_twin::compare(report, "cross_entropy " + type + " loss", lc, lg, tol_of<T>());
    tc.backward(lc);
    tg.backward(lg);
    ops_twin::compare_grad(report, "cross_entropy " + type + " dlogits", logits, tol_of<T>());
  }
  // A counted label out of range: the CPU's message on both devices.
  labels.data()[5] = -2;
  std::string cpu_error, gpu_error;
  try {
    Tape t;
    ops::cross_entropy(t, logits.cpu, labels);
  } catch (const Error& e) {
    cpu_error = e.what();
  }
  try {
    Tape t;
    ops::cross_entropy(t, logits.gpu, labels);
  } catch (const Error& e) {
    gpu_error = e.what();
  }
  report.expect("cross_entropy " + type + ": a bad label gives the CPU's error on the device",
                !cpu_error.empty() && cpu_error == gpu_error, "cpu: '" + cpu_error + "', gpu: '" + gpu_error + "'");
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/ops");
  Report report("gpu/ops");
  gpu_test::guarded(report, "softmax float", [&] { check_softmax<float>(report, "float"); });
  gpu_test::guarded(report, "softmax bf16", [&] { check_softmax<bf16>(report, "bf16"); });
  gpu_test::guarded(report, "recorded float", [&] { check_recorded_expressions<float>(report, "float"); });
  gpu_test::guarded(report, "recorded bf16", [&] { check_recorded_expressions<bf16>(report, "bf16"); });
  gpu_test::guarded(report, "recorded float, 1000 rows", [&] {
    check_recorded_expressions<float>(report, "float", Extents<Rows>{1000, 70});
  });
  gpu_test::guarded(report, "recorded bf16, 1000 rows", [&] {
    check_recorded_expressions<bf16>(report, "bf16", Extents<Rows>{1000, 70});
  });
  gpu_test::guarded(report, "recorded float, 3 axes", [&] {
    check_recorded_expressions<float, Shape<dyn, dyn, dyn>>(report, "float", {4, 250, 37});
  });
  gpu_test::guarded(report, "reductions float", [&] { check_reductions<float>(report, "float"); });
  gpu_test::guarded(report, "reductions bf16", [&] { check_reductions<bf16>(report, "bf16"); });
  gpu_test::guarded(report, "cross_entropy float", [&] { check_cross_entropy<float>(report, "float"); });
  gpu_test::guarded(report, "cross_entropy bf16", [&] { check_cross_entropy<bf16>(report, "bf16"); });
  return report.finish();
}

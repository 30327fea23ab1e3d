// The ops of ops/ on Var<T, S, Cuda> against the same ops on the CPU: softmax (with and
// without a broadcast mask), elementwise expressions recorded on the device (their
// backward includes a bias gradient summed back over rows), reductions and
// cross-entropy. Forward values and every gradient, with gradients pre-filled so that
// += is checked. fp32 within 1e-5; bf16 within the tolerances of docs/precision.md.
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
/// backward sums the bias gradient back over the rows on the device.
template <class T>
void check_recorded_expressions(Report& report, const std::string& type) {
  auto x = ops_twin::make<T, Rows>({33, 70}, 21);
  auto b = ops_twin::make<T, Shape<dyn>>({70}, 22);
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

}  // namespace

int main() {
  gpu_test::require_device("gpu/ops");
  Report report("gpu/ops");
  gpu_test::guarded(report, "softmax float", [&] { check_softmax<float>(report, "float"); });
  gpu_test::guarded(report, "softmax bf16", [&] { check_softmax<bf16>(report, "bf16"); });
  gpu_test::guarded(report, "recorded float", [&] { check_recorded_expressions<float>(report, "float"); });
  gpu_test::guarded(report, "recorded bf16", [&] { check_recorded_expressions<bf16>(report, "bf16"); });
  return report.finish();
}

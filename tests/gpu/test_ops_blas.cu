// The product ops of ops/ on Var<T, S, Cuda> against the same ops on the CPU: matmul
// (plain, A or B transposed, both, batched rank 3), linear (with a bias, without, the
// N = 3 layers of one input as BERT's query/key/value, an input that needs no gradient)
// and attention (trailing keys masked, dropout 0 and 0.1 on the same RandomStream).
// Forward values and every gradient, with gradients pre-filled so that += is checked.
// Each in fp32 and with bf16 products on float Vars (the Bf16Mixed way: ops::<op><bf16>);
// matmul and linear also with fp16 products (Fp16Mixed).
// Without a device: exit 77 (Skipped).
//
// Tolerances (relative; Report::close also bounds every element by tol * max(|want|, rms)),
// those of tests/gpu/test_blas.cu and test_attention.cu for the kernels underneath:
//   fp32              1e-5: fp32 accumulation on both devices, only the order differs.
//   bf16 products     8e-3 for matmul and linear (docs/cuda.md's bound for bf16
//                     products): both devices round the same operands and dy to bf16
//                     (cast<bf16> on the CPU, cuda::copy_converted on the GPU, both to
//                     nearest even), so the float results differ by the accumulation
//                     order alone (test_blas.cu: within 2e-4) unless a dy computed on
//                     each device (the q x k loss of the three layers) rounds to
//                     neighbouring bf16 values, one ulp (2^-8) in a few elements.
//   fp16 products     2e-3 for matmul and linear: likewise with fp16's ulp (2^-11).
//   bf16 attention    2e-2: P and dZ are rounded to bf16 after float sums in another
//                     order, so an element may land one bf16 ulp away (test_attention.cu).
//   tf32 products     3e-3 (attention 1e-2): precision::Tf32, the GPU's products read the
//                     float inputs with TF32's 10-bit significand, the CPU's do not (it has
//                     no TF32): the difference is the input rounding, fp16's ulp (2^-11).
// Dropout masks are the same when the outputs agree: a probability dropped on one device
// and kept on the other would move an output by P_ij V_j / (1 - p), far beyond these.

#include <ctdl/ops/attention.hpp>
#include <ctdl/ops/linear.hpp>
#include <ctdl/ops/matmul.hpp>

#include <algorithm>
#include <array>
#include <string>

#include "gpu/ops_twin.hpp"

namespace {

using namespace ctdl;
using gpu_test::Report;
using Rows = Shape<dyn, dyn>;
using Batched = Shape<dyn, dyn, dyn>;

template <class G>
std::string type_name() {
  if constexpr (std::is_same_v<G, Tf32Products>) return "tf32 products";
  return std::is_same_v<G, float> ? "float" : std::is_same_v<G, bf16> ? "bf16 products" : "fp16 products";
}

/// matmul<Opt, G> on Vars a (stored extents ea) and b (eb), both requiring grad unless
/// `b_grad` is false.
template <ops::MatmulOptions Opt, class G, class S>
void check_matmul(Report& report, const std::string& label, const Extents<S>& ea, const Extents<S>& eb, bool b_grad,
                  double tol, unsigned seed) {
  const std::string what = "matmul " + label + " " + type_name<G>();
  auto a = ops_twin::make<float, S>(ea, seed);
  auto b = ops_twin::make<float, S>(eb, seed + 1, b_grad);
  ops_twin::prefill_grad(a, seed + 2);
  if (b_grad) ops_twin::prefill_grad(b, seed + 3);
  Tape tc, tg;
  auto cc = ops::matmul<Opt, G>(tc, a.cpu, b.cpu);
  auto cg = ops::matmul<Opt, G>(tg, a.gpu, b.gpu);
  ops_twin::compare(report, what + " forward", cc, cg, tol);
  ops_twin::backward(tc, tg, cc, cg, seed + 4);
  ops_twin::compare_grad(report, what + " dA", a, tol);
  if (b_grad) ops_twin::compare_grad(report, what + " dB", b, tol);
  else report.expect(what + " B needs no gradient", !b.cpu.has_grad() && !b.gpu.has_grad());
}

template <class G>
void check_matmuls(Report& report, double tol) {
  using ops::MatmulOptions;
  // op(A) 7 x 19, op(B) 19 x 23: odd sizes, every transpose pair.
  check_matmul<MatmulOptions{}, G, Rows>(report, "7x19 . 19x23", {7, 19}, {19, 23}, true, tol, 100);
  check_matmul<MatmulOptions{.transpose_a = true}, G, Rows>(report, "(19x7)^T . 19x23", {19, 7}, {19, 23}, true, tol,
                                                             110);
  check_matmul<MatmulOptions{.transpose_b = true}, G, Rows>(report, "7x19 . (23x19)^T", {7, 19}, {23, 19}, true, tol,
                                                             120);
  check_matmul<MatmulOptions{.transpose_a = true, .transpose_b = true}, G, Rows>(report, "(19x7)^T . (23x19)^T",
                                                                                 {19, 7}, {23, 19}, true, tol, 130);
  // Batched rank 3, as attention's per-head products; and B as a constant.
  check_matmul<MatmulOptions{}, G, Batched>(report, "batched 5 x 11x13 . 13x9", {5, 11, 13}, {5, 13, 9}, true, tol,
                                            140);
  check_matmul<MatmulOptions{.transpose_b = true}, G, Batched>(report, "batched 3 x 8x16 . (8x16)^T", {3, 8, 16},
                                                               {3, 8, 16}, true, tol, 150);
  check_matmul<MatmulOptions{}, G, Rows>(report, "33x70 . 70x45 (B constant)", {33, 70}, {70, 45}, false, tol, 160);
}

/// linear<G> with a bias, without one, and with x that needs no gradient.
template <class G>
void check_linear(Report& report, index_t rows, index_t in, index_t out, double tol, unsigned seed) {
  const std::string what = "linear " + std::to_string(rows) + "x" + std::to_string(in) + "->" + std::to_string(out) +
                           " " + type_name<G>();
  auto x = ops_twin::make<float, Rows>({rows, in}, seed);
  auto w = ops_twin::make<float, Rows>({out, in}, seed + 1);
  auto b = ops_twin::make<float, Shape<dyn>>({out}, seed + 2);
  ops_twin::prefill_grad(x, seed + 3);
  ops_twin::prefill_grad(w, seed + 4);
  ops_twin::prefill_grad(b, seed + 5);
  {
    Tape tc, tg;
    auto yc = ops::linear<G>(tc, x.cpu, w.cpu, b.cpu);
    auto yg = ops::linear<G>(tg, x.gpu, w.gpu, b.gpu);
    ops_twin::compare(report, what + " (bias) forward", yc, yg, tol);
    ops_twin::backward(tc, tg, yc, yg, seed + 6);
    ops_twin::compare_grad(report, what + " (bias) dx", x, tol);
    ops_twin::compare_grad(report, what + " (bias) dW", w, tol);
    ops_twin::compare_grad(report, what + " (bias) db", b, tol);
  }
  {
    Tape tc, tg;
    auto yc = ops::linear<G>(tc, x.cpu, w.cpu);
    auto yg = ops::linear<G>(tg, x.gpu, w.gpu);
    ops_twin::compare(report, what + " (no bias) forward", yc, yg, tol);
    ops_twin::backward(tc, tg, yc, yg, seed + 7);
    ops_twin::compare_grad(report, what + " (no bias) dx", x, tol);
    ops_twin::compare_grad(report, what + " (no bias) dW", w, tol);
  }
  {
    // x a constant (an input): only dW and db.
    auto xc = ops_twin::make<float, Rows>({rows, in}, seed + 8, false);
    Tape tc, tg;
    auto yc = ops::linear<G>(tc, xc.cpu, w.cpu, b.cpu);
    auto yg = ops::linear<G>(tg, xc.gpu, w.gpu, b.gpu);
    ops_twin::compare(report, what + " (x constant) forward", yc, yg, tol);
    ops_twin::backward(tc, tg, yc, yg, seed + 9);
    report.expect(what + " (x constant) x has no gradient", !xc.cpu.has_grad() && !xc.gpu.has_grad());
    ops_twin::compare_grad(report, what + " (x constant) dW", w, tol);
    ops_twin::compare_grad(report, what + " (x constant) db", b, tol);
  }
}

/// The N = 3 form (BERT's query, key, value of one x; static widths), the value layer's
/// bias a constant; each output gets its own upstream gradient through a sum of products.
template <class G>
void check_linear_layers(Report& report, double tol) {
  constexpr index_t kIn = 48, kOut = 40;
  const std::string what = "linear x3 (q, k, v) 29x48->40 " + type_name<G>();
  using W = Shape<kOut, kIn>;
  auto x = ops_twin::make<float, Shape<dyn, kIn>>({29, kIn}, 300);
  ops_twin::prefill_grad(x, 301);
  std::array<ops_twin::Twin<float, W>, 3> w{ops_twin::make<float, W>({kOut, kIn}, 302),
                                           ops_twin::make<float, W>({kOut, kIn}, 303),
                                           ops_twin::make<float, W>({kOut, kIn}, 304)};
  std::array<ops_twin::Twin<float, Shape<kOut>>, 3> b{ops_twin::make<float, Shape<kOut>>({kOut}, 305),
                                                      ops_twin::make<float, Shape<kOut>>({kOut}, 306),
                                                      ops_twin::make<float, Shape<kOut>>({kOut}, 307, false)};
  for (unsigned i = 0; i < 3; ++i) {
    ops_twin::prefill_grad(w[i], 310 + i);
    if (i < 2) ops_twin::prefill_grad(b[i], 320 + i);
  }
  Tape tc, tg;
  auto yc = ops::linear<G>(tc, x.cpu,
                           std::array{ops::LinearWeights<float, kIn, kOut>{w[0].cpu, b[0].cpu},
                                      ops::LinearWeights<float, kIn, kOut>{w[1].cpu, b[1].cpu},
                                      ops::LinearWeights<float, kIn, kOut>{w[2].cpu, b[2].cpu}});
  auto yg = ops::linear<G>(tg, x.gpu,
                           std::array{ops::LinearWeights<float, kIn, kOut, Cuda>{w[0].gpu, b[0].gpu},
                                      ops::LinearWeights<float, kIn, kOut, Cuda>{w[1].gpu, b[1].gpu},
                                      ops::LinearWeights<float, kIn, kOut, Cuda>{w[2].gpu, b[2].gpu}});
  const char* names[] = {"q", "k", "v"};
  for (std::size_t i = 0; i < 3; ++i) ops_twin::compare(report, what + " forward " + names[i], yc[i], yg[i], tol);
  // One loss over the three outputs: y_q * y_k + y_v, recorded on both tapes.
  auto lc = tc.record(yc[0] * yc[1] + yc[2]);
  auto lg = tg.record(yg[0] * yg[1] + yg[2]);
  ops_twin::backward(tc, tg, lc, lg, 330);
  ops_twin::compare_grad(report, what + " dx (three layers)", x, tol);
  for (std::size_t i = 0; i < 3; ++i) {
    ops_twin::compare_grad(report, what + " dW " + names[i], w[i], tol);
    if (i < 2) ops_twin::compare_grad(report, what + " db " + names[i], b[i], tol);
  }
  report.expect(what + " constant bias of v has no gradient", !b[2].cpu.has_grad() && !b[2].gpu.has_grad());
}

/// attention<G>: example b attends to its first max(1, S - (b + 1) S / 5) keys, the rest
/// masked with -10000 (BERT's padding).
template <class G>
void check_attention(Report& report, index_t batch, index_t seq, index_t hidden, index_t heads, float dropout,
                     bool k_grad, double tol) {
  const std::string what = "attention " + std::to_string(batch) + "x" + std::to_string(seq) + ", hidden " +
                           std::to_string(hidden) + ", heads " + std::to_string(heads) + ", dropout " +
                           std::to_string(dropout).substr(0, 3) + (k_grad ? "" : ", k constant") + " " +
                           type_name<G>();
  const index_t rows = batch * seq;
  const unsigned seed = static_cast<unsigned>(batch * 1000 + seq * 10 + hidden) + (dropout > 0 ? 7u : 0u);
  auto q = ops_twin::make<float, Rows>({rows, hidden}, seed);
  auto k = ops_twin::make<float, Rows>({rows, hidden}, seed + 1, k_grad);
  auto v = ops_twin::make<float, Rows>({rows, hidden}, seed + 2);
  ops_twin::prefill_grad(q, seed + 3);
  if (k_grad) ops_twin::prefill_grad(k, seed + 4);
  ops_twin::prefill_grad(v, seed + 5);
  auto mask = Tensor<float, Rows>::uninitialized({batch, seq});
  for (index_t b = 0; b < batch; ++b) {
    const index_t valid = std::max<index_t>(1, seq - (b + 1) * seq / 5);
    for (index_t j = 0; j < seq; ++j) mask.data()[b * seq + j] = j < valid ? 0.0f : -10000.0f;
  }
  const auto mask_gpu = to_device<Cuda>(mask);
  const ops::AttentionOptions opt{.heads = heads, .dropout = dropout,
                                  .stream = {.seed = 1234, .rank = 0, .tensor_id = 17, .step = 3}};
  Tape tc, tg;
  auto oc = ops::attention<G>(tc, q.cpu, k.cpu, v.cpu, mask, opt);
  auto og = ops::attention<G>(tg, q.gpu, k.gpu, v.gpu, mask_gpu, opt);
  ops_twin::compare(report, what + " forward", oc, og, tol);
  ops_twin::backward(tc, tg, oc, og, seed + 6);
  ops_twin::compare_grad(report, what + " dq", q, tol);
  if (k_grad) ops_twin::compare_grad(report, what + " dk", k, tol);
  else report.expect(what + " k has no gradient", !k.cpu.has_grad() && !k.gpu.has_grad());
  ops_twin::compare_grad(report, what + " dv", v, tol);
}

template <class G>
void check_attentions(Report& report, double tol) {
  for (const float dropout : {0.0f, 0.1f}) {
    check_attention<G>(report, 2, 64, 128, 4, dropout, true, tol);  // heads of 32
    check_attention<G>(report, 3, 37, 10, 2, dropout, true, tol);   // odd: D = 5, S = 37
    check_attention<G>(report, 1, 1, 1, 1, dropout, true, tol);
  }
  check_attention<G>(report, 2, 5, 8, 2, 0.1f, false, tol);
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/ops_blas");
  Report report("gpu/ops_blas");
  gpu_test::guarded(report, "matmul float", [&] { check_matmuls<float>(report, 1e-5); });
  gpu_test::guarded(report, "matmul bf16", [&] { check_matmuls<bf16>(report, 8e-3); });
  gpu_test::guarded(report, "matmul fp16", [&] { check_matmuls<fp16>(report, 2e-3); });
  gpu_test::guarded(report, "linear float", [&] {
    check_linear<float>(report, 33, 70, 45, 1e-5, 200);
    check_linear<float>(report, 256, 768, 768, 1e-5, 210);
    check_linear<float>(report, 1, 1, 1, 1e-5, 220);
  });
  gpu_test::guarded(report, "linear bf16", [&] {
    check_linear<bf16>(report, 33, 70, 45, 8e-3, 230);
    check_linear<bf16>(report, 256, 768, 768, 8e-3, 240);
  });
  gpu_test::guarded(report, "linear fp16", [&] { check_linear<fp16>(report, 33, 70, 45, 2e-3, 250); });
  gpu_test::guarded(report, "linear x3 float", [&] { check_linear_layers<float>(report, 1e-5); });
  gpu_test::guarded(report, "linear x3 bf16", [&] { check_linear_layers<bf16>(report, 8e-3); });
  gpu_test::guarded(report, "attention float", [&] { check_attentions<float>(report, 1e-5); });
  gpu_test::guarded(report, "attention bf16", [&] { check_attentions<bf16>(report, 2e-2); });
  // precision::Tf32: the GPU's products read float inputs with a 10-bit significand (as
  // fp16's), the CPU's are fp32: the results differ by about fp16's rounding.
  gpu_test::guarded(report, "matmul tf32", [&] { check_matmuls<Tf32Products>(report, 3e-3); });
  gpu_test::guarded(report, "linear tf32", [&] { check_linear<Tf32Products>(report, 256, 768, 768, 3e-3, 260); });
  gpu_test::guarded(report, "linear x3 tf32", [&] { check_linear_layers<Tf32Products>(report, 3e-3); });
  gpu_test::guarded(report, "attention tf32", [&] { check_attentions<Tf32Products>(report, 1e-2); });
  return report.finish();
}

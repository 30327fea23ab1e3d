// cuBLASLt products (kernels/cuda/blas.cuh) against the CPU: cuda::gemm against the CPU
// matmul kernel in double (all transposes, strides, batches, broadcast operands, alpha
// and beta, K = 0), the bias and bias+GELU epilogues against ops::linear (+ gelu_tanh),
// and Linear's backward (dx, dW, db, accumulated) against ops::linear's tape entry.
// Without a device: exit 77 (Skipped).
//
// Tolerances (relative; Report::close also bounds every element by tol * max(|want|, rms)).
// Measured on an H100 (2026-11-27) in brackets: the relative error at the BERT sizes.
//   fp32              1e-5: IEEE fp32 accumulation (CUBLAS_COMPUTE_32F, no tensor cores)
//                     against the double reference [5e-7].
//   tf32              5e-3: inputs rounded to TF32's 10-bit significand (2^-11 relative
//                     each): about 4e-4 of a product's rms per element, and the worst of
//                     25 M elements about 5.5 times that [2.6e-4; worst element 1.4e-3].
//   bf16/fp16 -> float 2e-4: operands exact in both paths (the reference takes the same
//                     rounded values), products exact in fp32; only the accumulation
//                     differs, and tensor cores' fp32 adders truncate where IEEE rounds,
//                     growing with K [K = 768: 6e-7; K = 8192: 8.5e-6, worst element 4e-5].
//   bf16 -> bf16      8e-3: plus the result's rounding to bf16, 2^-9 relative (8
//                     significand bits), up to two such roundings apart [1.7e-3].
//   fp16 -> fp16      2e-3: likewise with fp16's 11 bits (2^-11) [2.1e-4].
// The GELU epilogue agrees with ctdl's gelu_tanh within fp32's tolerance [4e-7] (with the
// erf form it would miss by about 1e-4 of the rms): cuBLASLt's GELU is the tanh form.

#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cpu/matmul.hpp>
#include <ctdl/kernels/cuda/blas.cuh>
#include <ctdl/ops/linear.hpp>

#include "gpu/gpu_test.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

using namespace ctdl;
using gpu_test::Buffer;
using gpu_test::random_values;
using gpu_test::guarded;
using gpu_test::Report;

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, bf16>) return "bf16";
  else return "fp16";
}

std::string describe(const cuda::GemmDims& d) {
  char s[200];
  std::snprintf(s, sizeof s, "batch %td, %tdx%tdx%td (MxNxK)%s%s, ld %td/%td/%td, strides %td/%td/%td", d.batch, d.m,
                d.n, d.k, d.trans_a ? ", A^T" : "", d.trans_b ? ", B^T" : "", d.lda, d.ldb, d.ldc, d.stride_a,
                d.stride_b, d.stride_c);
  return s;
}

/// Elements a strided batch of rows x cols matrices (rows ld apart) spans.
std::size_t span(index_t batch, index_t stride, index_t rows, index_t cols, index_t ld) {
  return static_cast<std::size_t>(kernels::cpu::detail::span(batch, stride, rows, cols, ld));
}

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = gpu_test::as_double(v[i]);
  return out;
}

/// One gemm problem on the GPU against the CPU matmul kernel in double on the same
/// (T-rounded) inputs. With sample_rows > 0 (batch 1 only), the reference is computed for
/// that many rows of C spread over M (first and last included): BERT-sized products stay
/// fast on the CPU.
template <class T, class TC>
void check_gemm(Report& report, const std::string& label, cuda::GemmDims dims, cuda::GemmOptions opt, double tol,
                unsigned seed, index_t sample_rows = 0) {
  const cuda::GemmDims d = cuda::blas_detail::packed(dims);
  const std::string what = std::string("gemm ") + type_name<T>() + (opt.tf32 ? " (tf32)" : "") + " -> " +
                           type_name<TC>() + " " + label + " [" + describe(d) + ", alpha " + std::to_string(opt.alpha) +
                           ", beta " + std::to_string(opt.beta) + "]";
  guarded(report, what, [&] {
    const auto a = random_values<T>(span(d.batch, d.stride_a, d.trans_a ? d.k : d.m, d.trans_a ? d.m : d.k, d.lda), seed);
    const auto b =
        random_values<T>(span(d.batch, d.stride_b, d.trans_b ? d.n : d.k, d.trans_b ? d.k : d.n, d.ldb), seed + 1);
    const std::size_t c_size = span(d.batch, d.stride_c, d.m, d.n, d.ldc);
    const auto c0 = opt.beta != 0.0f ? random_values<TC>(c_size, seed + 2) : std::vector<TC>{};
    Buffer<T> da(a), db(b);
    Buffer<TC> dc(c_size);
    if (opt.beta != 0.0f) dc.upload(c0);
    else dc.poison();  // beta = 0: C is not read, and every element must be written
    const bool padded = c_size != static_cast<std::size_t>(d.batch * d.m * d.n);
    const auto before = padded ? dc.download() : std::vector<TC>{};
    cuda::gemm<T, TC>(da.data(), db.data(), dc.data(), dims, opt);
    const auto got = dc.download();

    // The reference: P = op(A) op(B) in double (rows `rows` of each batch), then
    // alpha P + beta C0.
    std::vector<index_t> rows;
    if (sample_rows > 0 && d.batch == 1 && sample_rows < d.m) {
      for (index_t s = 0; s < sample_rows; ++s) rows.push_back(s * (d.m - 1) / (sample_rows - 1));
    } else {
      for (index_t i = 0; i < d.m; ++i) rows.push_back(i);
    }
    const auto ad = to_double(a), bd = to_double(b);
    std::vector<double> want, have;
    for (index_t batch = 0; batch < d.batch; ++batch) {
      // op(A)'s chosen rows, packed (R x K); B as stored.
      const index_t r_count = static_cast<index_t>(rows.size());
      std::vector<double> a_rows(static_cast<std::size_t>(r_count * d.k));
      for (index_t r = 0; r < r_count; ++r)
        for (index_t kk = 0; kk < d.k; ++kk) {
          const index_t at = batch * d.stride_a + (d.trans_a ? kk * d.lda + rows[r] : rows[r] * d.lda + kk);
          a_rows[static_cast<std::size_t>(r * d.k + kk)] = ad[static_cast<std::size_t>(at)];
        }
      std::vector<double> p(static_cast<std::size_t>(r_count * d.n), 0.0);
      kernels::cpu::matmul(a_rows.data(), bd.data() + batch * d.stride_b, p.data(),
                           {1, r_count, d.n, d.k, false, d.trans_b, -1, -1, -1, -1, d.ldb, -1}, 0.0f);
      for (index_t r = 0; r < r_count; ++r)
        for (index_t j = 0; j < d.n; ++j) {
          const std::size_t at = static_cast<std::size_t>(batch * d.stride_c + rows[r] * d.ldc + j);
          const double c_old = opt.beta != 0.0f ? gpu_test::as_double(c0[at]) : 0.0;
          want.push_back(static_cast<double>(opt.alpha) * p[static_cast<std::size_t>(r * d.n + j)] +
                         static_cast<double>(opt.beta) * c_old);
          have.push_back(gpu_test::as_double(got[at]));
        }
    }
    report.close(what, have, want, tol);
    // Elements of C's buffer outside the M x N matrices (padding between rows) are left alone.
    if (!padded) return;
    std::vector<char> inside(c_size, 0);
    for (index_t batch = 0; batch < d.batch; ++batch)
      for (index_t i = 0; i < d.m; ++i)
        for (index_t j = 0; j < d.n; ++j) inside[static_cast<std::size_t>(batch * d.stride_c + i * d.ldc + j)] = 1;
    std::size_t touched = 0;
    for (std::size_t i = 0; i < c_size; ++i)
      if (!inside[i] && std::memcmp(&got[i], &before[i], sizeof(TC)) != 0) ++touched;
    if (touched) report.expect(what + " leaves C's padding alone", false, std::to_string(touched) + " elements written");
  });
}

/// The transposes, strides and batch cases of one type pair at small odd sizes.
template <class T, class TC>
void check_gemm_layouts(Report& report, double tol, bool tf32 = false) {
  const cuda::GemmOptions plain{.tf32 = tf32};
  unsigned seed = 100;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_gemm<T, TC>(report, "3x37x5 odd", {1, 3, 37, 5, ta, tb}, plain, tol, seed += 3);
      check_gemm<T, TC>(report, "37x3x129", {1, 37, 3, 129, ta, tb}, plain, tol, seed += 3);
      check_gemm<T, TC>(report, "batched 7", {7, 19, 23, 11, ta, tb}, plain, tol, seed += 3);
    }
  check_gemm<T, TC>(report, "1x1x1", {1, 1, 1, 1}, plain, tol, seed += 3);
  // Leading dimensions wider than the matrices (a view's columns), C's padding untouched.
  check_gemm<T, TC>(report, "padded rows", {1, 9, 13, 6, false, true, -1, -1, -1, 10, 8, 17}, plain, tol, seed += 3);
  check_gemm<T, TC>(report, "padded rows, A^T", {1, 9, 13, 6, true, false, -1, -1, -1, 11, 15, 14}, plain, tol,
                    seed += 3);
  // Batched with strides of head views and a broadcast (stride 0) B: shared weights.
  check_gemm<T, TC>(report, "batched head views", {4, 16, 16, 8, false, true, 16 * 32, 16 * 32, 16 * 16, 32, 32, 16},
                    plain, tol, seed += 3);
  check_gemm<T, TC>(report, "batched, B broadcast", {5, 12, 10, 7, false, false, -1, 0, -1}, plain, tol, seed += 3);
  // alpha and beta: accumulation into C, as gradients are.
  check_gemm<T, TC>(report, "accumulate", {1, 33, 65, 17, true, false}, {.alpha = 1.0f, .beta = 1.0f, .tf32 = tf32},
                    tol, seed += 3);
  check_gemm<T, TC>(report, "alpha, beta", {3, 20, 9, 31, false, true}, {.alpha = 0.5f, .beta = -2.0f, .tf32 = tf32},
                    tol, seed += 3);
  check_gemm<T, TC>(report, "K = 0 (C = beta C)", {2, 5, 6, 0}, {.beta = 0.5f, .tf32 = tf32}, tol, seed += 3);
}

/// BERT-base products at batch 64 x 128 (8192 tokens), rows of C sampled for the reference.
template <class T, class TC>
void check_gemm_bert(Report& report, double tol, bool tf32 = false) {
  const cuda::GemmOptions plain{.tf32 = tf32};
  const index_t tokens = 8192, hidden = 768, inter = 3072;
  // FFN in: y = x W^T (x 8192 x 768, W 3072 x 768)
  check_gemm<T, TC>(report, "BERT FFN in, x W^T", {1, tokens, inter, hidden, false, true}, plain, tol, 7, 48);
  // FFN out's dx = dy W (dy 8192 x 768, W 768 x 3072)
  check_gemm<T, TC>(report, "BERT FFN out dx, dy W", {1, tokens, inter, hidden, false, false}, plain, tol, 8, 48);
  // FFN in's dW = dy^T x (dy 8192 x 3072, x 8192 x 768), accumulated
  check_gemm<T, TC>(report, "BERT FFN in dW, dy^T x", {1, inter, hidden, tokens, true, false},
                    {.beta = 1.0f, .tf32 = tf32}, tol, 9, 48);
}

/// y = x W^T + b (then gelu_tanh) and its backward against ops::linear<G> with T = float.
template <class G>
void check_linear(Report& report, index_t rows, index_t in, index_t out, bool gelu, double tol) {
  using S = Shape<dyn, dyn>;
  const std::string what = std::string("linear<") + type_name<G>() + "> " + std::to_string(rows) + " x " +
                           std::to_string(in) + " -> " + std::to_string(out) + (gelu ? " + gelu_tanh epilogue" : " + bias epilogue");
  guarded(report, what, [&] {
    const unsigned seed = static_cast<unsigned>(rows * 7 + in * 3 + out) + (gelu ? 1000u : 0u);
    const auto x = random_values(static_cast<std::size_t>(rows * in), seed);
    const auto w = random_values(static_cast<std::size_t>(out * in), seed + 1);
    const auto b = random_values(static_cast<std::size_t>(out), seed + 2);
    const auto dy = random_values(static_cast<std::size_t>(rows * out), seed + 3);
    // Gradients already holding something: both paths must add to it.
    const auto dx0 = random_values(x.size(), seed + 4), dw0 = random_values(w.size(), seed + 5),
               db0 = random_values(b.size(), seed + 6);

    // CPU: ops::linear<G> (and gelu_tanh), backward from dy.
    auto tensor = [](const std::vector<float>& v, index_t r, index_t c) {
      Tensor<float, S> t({r, c});
      std::copy(v.begin(), v.end(), t.data());
      return t;
    };
    Tensor<float, Shape<dyn>> bt({out});
    std::copy(b.begin(), b.end(), bt.data());
    Var<float, S> xv(tensor(x, rows, in)), wv(tensor(w, out, in));
    Var<float, Shape<dyn>> bv(bt);
    Tape tape;
    auto y = ops::linear<G>(tape, xv, wv, bv);
    std::vector<float> y_cpu(y.value().data(), y.value().data() + y.value().size());
    if (gelu) std::transform(y_cpu.begin(), y_cpu.end(), y_cpu.begin(), [](float v) { return expr::GeluTanh{}(v); });
    tape.backward(y, tensor(dy, rows, out));
    auto plus = [](const std::vector<float>& base, const auto& grad) {
      std::vector<float> r(base);
      for (std::size_t i = 0; i < r.size(); ++i) r[i] += grad.data()[i];
      return r;
    };
    const auto dx_cpu = plus(dx0, xv.grad()), dw_cpu = plus(dw0, wv.grad()), db_cpu = plus(db0, bv.grad());

    // GPU: the operands rounded to G on the device, as the op would.
    Buffer<float> dx_f(x), dw_f(w), dbias(b), ddy(dy), dgx(dx0), dgw(dw0), dgb(db0);
    Buffer<G> xg(x.size()), wg(w.size()), dyg(dy.size());
    cuda::copy_converted(dx_f.data(), xg.data(), static_cast<std::int64_t>(x.size()));
    cuda::copy_converted(dw_f.data(), wg.data(), static_cast<std::int64_t>(w.size()));
    cuda::copy_converted(ddy.data(), dyg.data(), static_cast<std::int64_t>(dy.size()));
    Buffer<float> dyo(static_cast<std::size_t>(rows * out));
    dyo.poison();
    cuda::linear_forward<G, float>(xg.data(), wg.data(), dbias.data(), dyo.data(), rows, in, out, gelu);
    report.close(what + ": y", dyo.download(), y_cpu, tol);
    if (gelu) return;  // the GELU epilogue is forward only (no AUX output kept for backward)
    Buffer<float> bias_workspace(static_cast<std::size_t>(cuda::linear_bias_workspace(rows, out)));
    bias_workspace.poison();  // nothing may read the workspace before writing it
    cuda::linear_backward<G, float>(dyg.data(), ddy.data(), xg.data(), wg.data(), dgx.data(), dgw.data(), dgb.data(),
                                    rows, in, out, bias_workspace.data());
    report.close(what + ": dx (accumulated)", dgx.download(), dx_cpu, tol);
    report.close(what + ": dW (accumulated)", dgw.download(), dw_cpu, tol);
    // The bias gradient is a float column sum in both paths, of the same unrounded dy.
    report.close(what + ": db (accumulated)", dgb.download(), db_cpu, 1e-5);
  });
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/blas");
  Report report("gpu/blas");

  check_gemm_layouts<float, float>(report, 1e-5);
  check_gemm_layouts<float, float>(report, 5e-3, /*tf32=*/true);
  check_gemm_layouts<bf16, float>(report, 2e-4);
  check_gemm_layouts<bf16, bf16>(report, 8e-3);
  check_gemm_layouts<fp16, float>(report, 2e-4);
  check_gemm_layouts<fp16, fp16>(report, 2e-3);

  check_gemm_bert<float, float>(report, 1e-5);
  check_gemm_bert<float, float>(report, 5e-3, /*tf32=*/true);
  check_gemm_bert<bf16, float>(report, 2e-4);
  check_gemm_bert<bf16, bf16>(report, 8e-3);
  check_gemm_bert<fp16, fp16>(report, 2e-3);

  // Linear: fp32 within 1e-5, the GELU epilogue included (see the top); Bf16Mixed within
  // 1e-4 (the same bf16 operands on both devices, fp32 accumulation on both, K <= 768).
  for (bool gelu : {false, true}) {
    check_linear<float>(report, 256, 768, 768, gelu, 1e-5);
    check_linear<float>(report, 256, 768, 3072, gelu, 1e-5);
    check_linear<float>(report, 3, 37, 5, gelu, 1e-5);
    check_linear<float>(report, 2053, 64, 768, gelu, 1e-5);  // the bias sum over 65 blocks of rows, the last short
    check_linear<float>(report, 1, 1, 1, gelu, 1e-5);
    check_linear<float>(report, 4, 0, 6, gelu, 1e-5);  // no inputs: y is the bias on every row (cuBLASLt has no K = 0)
    check_linear<bf16>(report, 256, 768, 768, gelu, 1e-4);
    check_linear<bf16>(report, 3, 37, 5, gelu, 1e-4);
  }

  // Errors name the op and the problem.
  guarded(report, "gemm: a too-small leading dimension is an error", [&] {
    Buffer<float> a(64), b(64), c(64);
    try {
      cuda::gemm<float, float>(a.data(), b.data(), c.data(), {1, 4, 4, 4, false, false, -1, -1, -1, 2});
      report.expect("gemm: a too-small leading dimension is an error", false, "no exception");
    } catch (const Error& e) {
      report.expect("gemm: a too-small leading dimension is an error",
                    std::string(e.what()).find("cuda::gemm") != std::string::npos, e.what());
    }
  });
  return report.finish();
}

// The CPU matmul kernel on strided views (per-head slices): only C's own elements are
// written, nothing past the last row's last element is read or written, for every
// input type (fp16 and, without oneDNN, bf16 go through float).
#include <catch2/catch.hpp>

#include <ctdl/kernels/cpu/matmul.hpp>

#include <cstdlib>
#include <string>
#include <vector>

using namespace ctdl;

TEMPLATE_TEST_CASE("strided matmul touches only its own elements", "", float, bf16, fp16) {
  using TA = TestType;
  // A: 3 x 4 inside rows of 10; B: 4 x 2 inside rows of 6; C: 3 x 2 inside rows of 5.
  const index_t m = 3, k = 4, n = 2, lda = 10, ldb = 6, ldc = 5;
  const float sentinel = -777.f;
  std::vector<TA> a((m - 1) * lda + k), b((k - 1) * ldb + n);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = convert<TA>(static_cast<float>(i % 7) - 3.f);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = convert<TA>(static_cast<float>(i % 5) - 2.f);
  const std::size_t c_end = (m - 1) * ldc + n;
  std::vector<float> c(c_end + 8, sentinel);  // guard elements after the last one
  kernels::cpu::matmul(a.data(), b.data(), c.data(),
                       {.m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc}, 0.f);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * ldc + j);
      if (at >= c.size()) continue;
      if (j < n) {
        double want = 0;
        for (index_t p = 0; p < k; ++p) want += convert<double>(a[i * lda + p]) * convert<double>(b[p * ldb + j]);
        CHECK(c[at] == Approx(want));
      } else {
        CHECK(c[at] == sentinel);  // between rows and after the end: untouched
      }
    }
  for (std::size_t i = c_end; i < c.size(); ++i) CHECK(c[i] == sentinel);
}

TEMPLATE_TEST_CASE("matmuls into neighbouring columns of one C, on two threads, do not disturb each other", "",
                   float, bf16, fp16) {
  using TA = TestType;
  // Two "heads": each writes its own n columns of C (ldc = 2n), as attention does.
  const index_t m = 64, k = 16, n = 8, ldc = 2 * n;
  std::vector<TA> a(static_cast<std::size_t>(m * k));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = convert<TA>(static_cast<float>(i % 3) - 1.f);
  int wrong = 0;
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<float> c(static_cast<std::size_t>(m * ldc), 0.f);
    std::vector<std::vector<TA>> b(2, std::vector<TA>(static_cast<std::size_t>(k * n)));
    for (int h = 0; h < 2; ++h)
      for (std::size_t i = 0; i < b[h].size(); ++i) b[h][i] = convert<TA>(static_cast<float>((i + h + rep) % 4));
#pragma omp parallel for num_threads(2)
    for (int h = 0; h < 2; ++h)
      for (int again = 0; again < 20; ++again)
        kernels::cpu::matmul(a.data(), b[h].data(), c.data() + h * n, {.m = m, .n = n, .k = k, .ldc = ldc}, 0.f);
    for (index_t i = 0; i < m; ++i)
      for (int h = 0; h < 2; ++h)
        for (index_t j = 0; j < n; ++j) {
          double want = 0;
          for (index_t p = 0; p < k; ++p)
            want += convert<double>(a[static_cast<std::size_t>(i * k + p)]) * convert<double>(b[h][static_cast<std::size_t>(p * n + j)]);
          wrong += c[static_cast<std::size_t>(i * ldc + h * n + j)] != static_cast<float>(want);
        }
  }
  CHECK(wrong == 0);
}

// Attention runs each head's two products (scores = Q K^T, context = P V) from inside an
// OpenMP region: the same cached primitives execute on several threads at once, created
// on whichever thread met their shape first while others were already computing.
// oneDNN's library-managed scratchpad is shared and tied to the creating thread, so this
// once returned wrong values now and then (about 3 runs in 100 of the attention test at
// 4 threads). Every sequence length here is a new shape, so its primitives are created
// inside the parallel region; each call must give the serial result bit for bit.
TEMPLATE_TEST_CASE("primitives created and run on many threads at once give the serial result", "", float, bf16) {
  using TA = TestType;
  const index_t heads = 16, d = 4, h = heads * d;  // per-head column views into rows of h
  int wrong = 0;
  for (index_t s = 2; s <= 40; ++s) {
    std::vector<TA> q(static_cast<std::size_t>(s * h)), k(q.size()), v(q.size());
    for (std::size_t i = 0; i < q.size(); ++i) {
      q[i] = convert<TA>(static_cast<float>((i * 7) % 13) / 8.f - 0.75f);
      k[i] = convert<TA>(static_cast<float>((i * 5) % 11) / 8.f - 0.6f);
      v[i] = convert<TA>(static_cast<float>((i * 3) % 17) / 8.f - 1.f);
    }
    // One head: float scores (s x s) from its Q and K columns, then P V into its columns.
    auto head = [&](index_t a, std::vector<TA>& out) {
      std::vector<float> scores(static_cast<std::size_t>(s * s));
      std::vector<TA> p(scores.size());
      kernels::cpu::matmul(q.data() + a * d, k.data() + a * d, scores.data(),
                           {.m = s, .n = s, .k = d, .trans_b = true, .lda = h, .ldb = h, .ldc = s}, 0.f);
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = convert<TA>(scores[i] / 4.f);
      kernels::cpu::matmul(p.data(), v.data() + a * d, out.data() + a * d,
                           {.m = s, .n = d, .k = s, .ldb = h, .ldc = h}, 0.f);
    };
    std::vector<TA> parallel(static_cast<std::size_t>(s * h)), serial(parallel.size());
#pragma omp parallel for num_threads(4) schedule(dynamic)
    for (index_t a = 0; a < heads; ++a) head(a, parallel);
    for (index_t a = 0; a < heads; ++a) head(a, serial);
    for (std::size_t i = 0; i < serial.size(); ++i) wrong += convert<float>(parallel[i]) != convert<float>(serial[i]);
  }
  INFO(kernels::cpu::matmul_implementation(std::is_same_v<TA, bf16>));
  CHECK(wrong == 0);
}

// On a CPU without AVX512-BF16 or AMX, oneDNN has no bf16 matmul; ctdl then computes
// bf16 products through float (CTest runs this file once more with oneDNN held to AVX2:
// kernels/matmul_without_bf16_isa). Either way the values are the exact products here.
TEST_CASE("bf16 matmul with and without oneDNN's bf16 kernels", "") {
  const index_t m = 7, n = 5, k = 9;
  std::vector<bf16> a(static_cast<std::size_t>(m * k)), b(static_cast<std::size_t>(k * n));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = convert<bf16>(static_cast<float>(i % 5) - 2.f);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = convert<bf16>(static_cast<float>(i % 3) - 1.f);
  std::vector<float> c(static_cast<std::size_t>(m * n));
  std::vector<bf16> cb(c.size());
  kernels::cpu::matmul(a.data(), b.data(), c.data(), {.m = m, .n = n, .k = k}, 0.f);
  kernels::cpu::matmul(a.data(), b.data(), cb.data(), {.m = m, .n = n, .k = k}, 0.f);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      float want = 0;
      for (index_t p = 0; p < k; ++p) want += convert<float>(a[i * k + p]) * convert<float>(b[p * n + j]);
      CHECK(c[i * n + j] == want);
      CHECK(convert<float>(cb[i * n + j]) == want);  // small integers: exact in bf16
    }
  const std::string impl = kernels::cpu::matmul_implementation(true);
  INFO("bf16 implementation: " << impl);
#if defined(CTDL_WITH_ONEDNN)
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (isa && std::string(isa) == "AVX2") CHECK(impl.find("through float") != std::string::npos);
#endif
}

#if defined(CTDL_WITH_ONEDNN)
// ctdl compiles against oneDNN 2.x or 3.x (dnnl_compat.hpp); the library found at run time
// (RUNPATH, LD_LIBRARY_PATH) must be the generation the headers describe and no older
// than them, or primitives may use ABI the library does not have.
TEST_CASE("oneDNN: the library loaded is the version the headers were compiled against", "") {
  const dnnl_version_t* v = dnnl::version();
  INFO("headers " << kernels::cpu::dnnl_compat::header_major << "." << kernels::cpu::dnnl_compat::header_minor
                  << ", library " << v->major << "." << v->minor << "." << v->patch);
  CHECK(v->major == kernels::cpu::dnnl_compat::header_major);
  CHECK(v->minor >= kernels::cpu::dnnl_compat::header_minor);
}
#endif

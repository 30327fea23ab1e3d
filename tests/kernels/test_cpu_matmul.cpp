// The CPU matmul kernel on strided views (per-head slices): only C's own elements are
// written, nothing past the last row's last element is read or written, for every
// input type (fp16 and, without oneDNN, bf16 go through float).
#include <catch2/catch.hpp>

#include <ctdl/kernels/cpu/matmul.hpp>

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

// What reordering a linear layer's weights into oneDNN's preferred layout once would
// save: y = x W^T (W stored [N, K] as in checkpoints) timed with W as stored (the
// primitive packs the blocks it needs on every call) and with W reordered once into
// the layout the primitive asks for (format_tag::any), for BERT-base's three weight
// shapes and several row counts M (128 = one sequence of 128 tokens; 1024 = batch 8;
// 8192 = batch 32 x 256). fp32, and bf16 inputs with fp32 output as under Bf16Mixed.
// Median of --reps runs after a warm-up, all threads.
//
//   build/bin/bench_weight_layout [--reps=20]

#include <ctdl/ctdl.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(CTDL_WITH_ONEDNN)
#include <ctdl/kernels/cpu/dnnl_compat.hpp>

namespace {

using Clock = std::chrono::steady_clock;
using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;
using ctdl::kernels::cpu::dnnl_compat::matmul_pd;

template <class F>
double median_ms(int reps, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Result {
  double plain_ms, packed_ms;
  std::string plain_impl, packed_impl;
};

Result run(dnnl::engine& eng, dnnl::stream& s, dnnl::memory::dim m, dnnl::memory::dim n, dnnl::memory::dim k, dt in,
           int reps) {
  const dnnl::memory::desc a_md(dims{m, k}, in, dims{k, 1});
  const dnnl::memory::desc w_plain(dims{k, n}, in, dims{1, k});  // W^T of a row-major [n, k] W
  const dnnl::memory::desc c_md(dims{m, n}, dt::f32, dims{n, 1});
  const std::size_t esize = in == dt::f32 ? 4 : 2;
  std::vector<char> a(m * k * esize), w(n * k * esize), c(m * n * 4);
  // 1.0 in fp32 and bf16 alike fills both with finite values.
  for (std::size_t i = 0; i < a.size() / esize; ++i) {
    if (esize == 4) reinterpret_cast<float*>(a.data())[i] = 0.5f;
    else reinterpret_cast<std::uint16_t*>(a.data())[i] = 0x3f00;
  }
  for (std::size_t i = 0; i < w.size() / esize; ++i) {
    if (esize == 4) reinterpret_cast<float*>(w.data())[i] = 0.25f;
    else reinterpret_cast<std::uint16_t*>(w.data())[i] = 0x3e80;
  }
  dnnl::memory am(a_md, eng, a.data()), wm(w_plain, eng, w.data()), cm(c_md, eng, c.data());

  const dnnl::matmul::primitive_desc plain_pd = matmul_pd(eng, a_md, w_plain, c_md);
  const dnnl::matmul plain(plain_pd);
  const double plain_ms = median_ms(reps, [&] {
    plain.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}});
    s.wait();
  });

  const dnnl::memory::desc w_any(dims{k, n}, in, dnnl::memory::format_tag::any);
  const dnnl::matmul::primitive_desc packed_pd = matmul_pd(eng, a_md, w_any, c_md);
  dnnl::memory packed_w(packed_pd.weights_desc(), eng);
  dnnl::reorder(wm, packed_w).execute(s, wm, packed_w);
  s.wait();
  const dnnl::matmul packed(packed_pd);
  const double packed_ms = median_ms(reps, [&] {
    packed.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, packed_w}, {DNNL_ARG_DST, cm}});
    s.wait();
  });
  return {plain_ms, packed_ms, plain_pd.impl_info_str(), packed_pd.impl_info_str()};
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--reps=", 7) == 0) reps = std::atoi(argv[i] + 7);
    else {
      std::fprintf(stderr, "bench_weight_layout: unknown argument '%s' (takes --reps=N)\n", argv[i]);
      return 2;
    }
  }
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dnnl_version_t* v = dnnl::version();
  std::printf("y = x W^T, W [N, K] as stored vs reordered once into oneDNN's layout; median of %d, %d threads, "
              "oneDNN %d.%d.%d\n",
              reps, omp_get_max_threads(), v->major, v->minor, v->patch);
  std::printf("%-5s %6s %6s %6s %12s %12s %8s  %s\n", "type", "M", "N", "K", "as stored ms", "reordered ms", "saving",
              "implementation (as stored / reordered)");
  const dnnl::memory::dim shapes[3][2] = {{768, 768}, {3072, 768}, {768, 3072}};
  for (dt in : {dt::f32, dt::bf16}) {
    for (dnnl::memory::dim m : {128, 1024, 8192}) {
      for (const auto& nk : shapes) {
        const auto r = run(eng, s, m, nk[0], nk[1], in, reps);
        std::printf("%-5s %6ld %6ld %6ld %12.3f %12.3f %7.1f%%  %s / %s\n", in == dt::f32 ? "fp32" : "bf16",
                    static_cast<long>(m), static_cast<long>(nk[0]), static_cast<long>(nk[1]), r.plain_ms, r.packed_ms,
                    100.0 * (r.plain_ms - r.packed_ms) / r.plain_ms, r.plain_impl.c_str(), r.packed_impl.c_str());
      }
    }
  }
  return 0;
}
#else
int main() {
  std::printf("bench_weight_layout: built without oneDNN (CTDL_WITH_ONEDNN=OFF); nothing to measure\n");
  return 0;
}
#endif

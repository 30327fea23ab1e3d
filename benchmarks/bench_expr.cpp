// Fused elementwise evaluation against memory bandwidth.
//
// out = a * b + c over N floats reads 3N and writes N floats: 16 bytes per element.
// memcpy of 2N floats moves the same number of bytes (reads 2N, writes 2N), so when the
// fused loop runs at memory bandwidth the two take about the same time. Both are timed
// on one thread and on all threads (memcpy split into one block per thread), best of
// --reps runs after a warm-up, on buffers already faulted in.
//
//   build/bin/bench_expr [--n=16777216] [--reps=20]

#include <ctdl/ctdl.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double best_seconds(int reps, F&& f) {
  f();  // warm-up
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

long arg(int argc, char** argv, const char* name, long def) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return std::atol(argv[i] + prefix.size());
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ctdl;
  const index_t n = arg(argc, argv, "n", 16l << 20);
  const int reps = static_cast<int>(arg(argc, argv, "reps", 20));
  using V = Tensor<float, Shape<dyn>>;
  V a = V::full({n}, 1.5f), b = V::full({n}, 2.0f), c = V::full({n}, 0.25f), out({n});
  V src = V::full({2 * n}, 1.0f), dst({2 * n});
  const double bytes = 16.0 * static_cast<double>(n);
  const int max_threads = omp_get_max_threads();

  std::printf("fused a * b + c over %td floats (%.0f MiB moved) vs memcpy of %td floats (same bytes)\n", n,
              bytes / (1 << 20), 2 * n);
  std::printf("%-8s %14s %14s %14s %14s %10s\n", "threads", "fused ms", "fused GB/s", "memcpy ms", "memcpy GB/s",
              "ratio");
  for (int threads : {1, max_threads}) {
    omp_set_num_threads(threads);
    const double fused = best_seconds(reps, [&] { out = a * b + c; });
    const double copy = best_seconds(reps, [&] {
#pragma omp parallel num_threads(threads)
      {
        const auto [begin, end] = expr::block_range(2 * n, omp_get_num_threads(), omp_get_thread_num());
        std::memcpy(dst.data() + begin, src.data() + begin, sizeof(float) * static_cast<std::size_t>(end - begin));
      }
    });
    if (out(n - 1) != 3.25f || dst(2 * n - 1) != 1.0f) {
      std::fprintf(stderr, "wrong result\n");
      return 1;
    }
    std::printf("%-8d %14.2f %14.1f %14.2f %14.1f %10.2f\n", threads, fused * 1e3, bytes / fused / 1e9, copy * 1e3,
                bytes / copy / 1e9, fused / copy);
    std::printf("{\"bench\":\"fused_axpb\",\"n\":%td,\"threads\":%d,\"fused_ms\":%.3f,\"memcpy_ms\":%.3f,\"ratio\":%.3f}\n",
                n, threads, fused * 1e3, copy * 1e3, fused / copy);
  }
  std::printf("ratio = fused time / memcpy time for the same bytes; the target is <= 1.3\n");
  return 0;
}

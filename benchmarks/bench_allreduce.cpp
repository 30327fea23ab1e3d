// bench_allreduce: MpiComm::all_reduce bandwidth over the ranks mpirun starts, for float
// buffers of 1 MiB to 256 MiB (what GradientAverager's buckets move: 25 MiB by default).
//
//   mpirun -np 2 build/bin/bench_allreduce [--min_mb=1] [--max_mb=256] [--reps=10]
//
// Per size: warm-up, then `reps` timed all-reduces (sum, in place) between barriers; the
// time is the slowest rank's mean. Printed as nccl-tests print them:
//   algbw = bytes / time,   busbw = algbw x 2 (N - 1) / N
// busbw is what each rank's link carries in a ring all-reduce, comparable across rank
// counts and with the hardware's bandwidth. Rank 0 prints the table.
#include <ctdl/dist/mpi.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  ctdl::dist::MpiEnvironment mpi(argc, argv);
  ctdl::dist::MpiComm comm(mpi);
  return ctdl::dist::run_or_abort(comm, [&] {
    CLI::App app("MpiComm::all_reduce bandwidth, 1 MiB to 256 MiB float buffers");
    std::int64_t min_mb = 1, max_mb = 256;
    int reps = 10;
    app.add_option("--min_mb", min_mb, "smallest buffer (MiB)");
    app.add_option("--max_mb", max_mb, "largest buffer (MiB; sizes go up by 4x)");
    app.add_option("--reps", reps, "timed all-reduces per size");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    const int n = comm.size();
    if (comm.rank() == 0) {
      std::printf("MpiComm::all_reduce (sum, float, in place), %d ranks, %d reps per size (the slowest rank's mean)\n", n, reps);
      std::printf("%10s %12s %14s %14s\n", "size", "time (ms)", "algbw (GB/s)", "busbw (GB/s)");
    }
    for (std::int64_t mb = min_mb; mb <= max_mb; mb *= 4) {
      const std::int64_t count = mb * (std::int64_t{1} << 20) / static_cast<std::int64_t>(sizeof(float));
      std::vector<float> buffer(static_cast<std::size_t>(count), 1.f);
      comm.all_reduce(buffer.data(), count);  // warm-up (and first touch)
      comm.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) comm.all_reduce(buffer.data(), count);
      float seconds = std::chrono::duration<float>(std::chrono::steady_clock::now() - t0).count() / static_cast<float>(reps);
      std::vector<float> all(static_cast<std::size_t>(n));
      comm.all_gather(&seconds, all.data(), 1);
      seconds = *std::max_element(all.begin(), all.end());
      const double bytes = static_cast<double>(count) * sizeof(float);
      const double algbw = bytes / seconds / 1e9;
      if (comm.rank() == 0)
        std::printf("%7lld MiB %12.2f %14.2f %14.2f\n", static_cast<long long>(mb), seconds * 1e3, algbw,
                    algbw * 2.0 * (n - 1) / n);
    }
    return 0;
  });
}

// Every collective of MpiComm, for float, bf16 and fp16, on the ranks mpiexec starts
// (2 and 3 under CTest), against values each rank computes on its own:
//   - exact data: rank r's element i is exact_value(r, i), a multiple of 1/4 small enough
//     that every partial sum over up to 8 ranks is exact even in bf16, so sums, averages
//     (sum / N rounded once, as MpiComm does), shards, gathers and broadcasts must match
//     the closed form bit for bit whatever order MPI adds in;
//   - random data (each rank's from its own seed, so any rank can regenerate any other's):
//     sums within a tolerance from the rounding (see random_tolerance), and every rank
//     holding the same bits;
//   - odd sizes (1, 37, 4099 elements), zero counts, in-place forms, every root;
//   - misuse: each error names the collective, the rank and the problem, and the
//     communicator still works afterwards; a second MpiEnvironment is refused.
// Rank 0 prints one line per check; a failure prints on the rank that saw it. Exit 0
// when no rank failed (every rank returns the same status); 77 (Skipped) with --skip.
#include <ctdl/dist/mpi.hpp>
#if defined(CTDL_WITH_NCCL)
#include <ctdl/dist/nccl.hpp>  // compiled, not run: NcclComm's MPI bootstrap needs a GPU per rank
#endif

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace ctdl;
using namespace ctdl::dist;

/// Element i of rank r's buffer in the exact checks (|value| <= 1.5 + r / 4).
float exact_value(int rank, std::int64_t i) {
  return static_cast<float>(i % 7 - 3) * 0.5f + static_cast<float>(rank) * 0.25f;
}

template <class T>
std::vector<T> exact_values(int rank, std::int64_t count, std::int64_t first = 0) {
  std::vector<T> v(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = convert<T>(exact_value(rank, first + i));
  return v;
}

/// sum_k exact_value(k, first + i) over the size ranks (avg: / size, rounded once to T).
template <class T>
std::vector<T> exact_reduction(int size, std::int64_t count, ReduceOp op, std::int64_t first = 0) {
  std::vector<T> v(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    float sum = 0;
    for (int k = 0; k < size; ++k) sum += exact_value(k, first + i);  // exact: see exact_value
    v[static_cast<std::size_t>(i)] = convert<T>(op == ReduceOp::avg ? sum / static_cast<float>(size) : sum);
  }
  return v;
}

/// Rank r's random buffer, uniform in [-1, 1) rounded to T (seeded by the rank and count).
template <class T>
std::vector<T> random_values(int rank, std::int64_t count) {
  std::mt19937 gen(static_cast<unsigned>(1000 + 97 * rank + count));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<T> v(static_cast<std::size_t>(count));
  for (auto& x : v) x = convert<T>(dist(gen));
  return v;
}

/// Tolerance of a random sum over N <= 3 ranks, relative to max(|want_i|, rms(want)) with
/// rms ~ 1: MpiComm rounds each of the N-1 pairwise sums (partial sums up to N = 3 in
/// magnitude) to T: bf16 2 * 3 * 2^-9 = 1.2e-2, fp16 2 * 3 * 2^-12 = 1.5e-3; float sums
/// round at 2^-24.
template <class T>
double random_tolerance() {
  if constexpr (std::is_same_v<T, bf16>) return 2e-2;
  else if constexpr (std::is_same_v<T, fp16>) return 2e-3;
  else return 1e-5;
}

template <class T>
std::vector<T> poisoned(std::int64_t count) {
  return std::vector<T>(static_cast<std::size_t>(count), convert<T>(std::numeric_limits<float>::quiet_NaN()));
}

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, bf16>) return "bf16";
  else return "fp16";
}

class Checks {
 public:
  Checks(int rank, int size) : rank_(rank), size_(size) {}

  void expect(const std::string& what, bool ok, const std::string& detail = "") {
    ++checks_;
    if (!ok) {
      ++failures_;
      std::printf("  FAIL  [rank %d of %d] %s: %s\n", rank_, size_, what.c_str(), detail.c_str());
    } else if (rank_ == 0) {
      std::printf("  ok    %s%s%s\n", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
    }
    std::fflush(stdout);
  }

  template <class T>
  void equal(const std::string& what, const std::vector<T>& got, const std::vector<T>& want) {
    for (std::size_t i = 0; i < want.size(); ++i) {
      const float g = convert<float>(got[i]), w = convert<float>(want[i]);
      if (!(g == w)) {
        return expect(what, false,
                      "element " + std::to_string(i) + " is " + std::to_string(g) + ", expected " + std::to_string(w));
      }
    }
    expect(what, got.size() == want.size(), std::to_string(want.size()) + " elements identical");
  }

  /// |got_i - want_i| <= tol * max(|want_i|, rms(want)) for every i (want in double).
  template <class T>
  void close(const std::string& what, const std::vector<T>& got, const std::vector<double>& want, double tol) {
    double ref2 = 0;
    for (double w : want) ref2 += w * w;
    const double rms = want.empty() ? 0 : std::sqrt(ref2 / static_cast<double>(want.size()));
    double worst = 0;
    std::size_t worst_i = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double g = convert<float>(got[i]);
      const double ratio = std::isfinite(g) ? std::abs(g - want[i]) / std::max(std::abs(want[i]), rms) : INFINITY;
      if (!(ratio <= worst)) worst = ratio, worst_i = i;
    }
    char detail[200];
    std::snprintf(detail, sizeof detail, "worst element %zu: %.6g vs %.6g (%.1e of max(|want|, rms), tol %.0e)",
                  worst_i, want.empty() ? 0.0 : static_cast<double>(convert<float>(got[worst_i])),
                  want.empty() ? 0.0 : want[worst_i], worst, tol);
    expect(what, worst <= tol, detail);
  }

  /// Runs f, which must throw ctdl::Error whose message contains every piece.
  template <class F>
  void throws(const std::string& what, F&& f, const std::vector<std::string>& pieces) {
    try {
      f();
    } catch (const Error& e) {
      const std::string message = e.what();
      for (const auto& piece : pieces) {
        if (message.find(piece) == std::string::npos) {
          return expect(what, false, "the message \"" + message + "\" lacks \"" + piece + "\"");
        }
      }
      return expect(what, true, message);
    }
    expect(what, false, "no ctdl::Error was thrown");
  }

  int failures() const { return failures_; }
  int checks() const { return checks_; }

 private:
  int rank_, size_, checks_ = 0, failures_ = 0;
};

template <class T>
void check_all_reduce(MpiComm& comm, Checks& checks) {
  const int r = comm.rank(), n = comm.size();
  for (const std::int64_t count : {1, 37, 1000, 4099}) {
    const std::string at = "all_reduce " + type_name<T>() + " count " + std::to_string(count);
    for (const ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      auto data = exact_values<T>(r, count);
      comm.all_reduce(data.data(), count, op);
      checks.equal(at + (op == ReduceOp::sum ? " sum" : " avg") + ", exact data", data,
                   exact_reduction<T>(n, count, op));
    }
    auto data = random_values<T>(r, count);
    comm.all_reduce(data.data(), count, ReduceOp::sum);
    std::vector<double> want(static_cast<std::size_t>(count), 0.0);
    for (int k = 0; k < n; ++k) {
      const auto other = random_values<T>(k, count);
      for (std::size_t i = 0; i < want.size(); ++i) want[i] += convert<float>(other[i]);
    }
    checks.close(at + " sum, random data", data, want, random_tolerance<T>());
    // Every rank must hold the same bits, or parameters updated from them drift apart.
    auto rank0 = data;
    comm.broadcast(rank0.data(), count, 0);
    checks.expect(at + " sum, random data: the same bits on every rank",
                  std::memcmp(rank0.data(), data.data(), data.size() * sizeof(T)) == 0);
  }
}

template <class T>
void check_reduce_scatter(MpiComm& comm, Checks& checks) {
  const int r = comm.rank(), n = comm.size();
  for (const std::int64_t shard : {1, 37, 1000}) {
    const std::int64_t count = shard * n;
    const std::string at = "reduce_scatter " + type_name<T>() + " count " + std::to_string(count) + " (shard " +
                           std::to_string(shard) + ")";
    for (const ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      const std::string how = op == ReduceOp::sum ? " sum" : " avg";
      const auto send = exact_values<T>(r, count);
      auto recv = poisoned<T>(shard);
      comm.reduce_scatter(send.data(), recv.data(), count, op);
      checks.equal(at + how + ", rank's shard", recv, exact_reduction<T>(n, shard, op, r * shard));

      auto buffer = exact_values<T>(r, count);
      comm.reduce_scatter(buffer.data(), buffer.data() + r * shard, count, op);
      const std::vector<T> own(buffer.begin() + r * shard, buffer.begin() + (r + 1) * shard);
      checks.equal(at + how + ", in place", own, exact_reduction<T>(n, shard, op, r * shard));
    }
    const auto send = random_values<T>(r, count);
    auto recv = poisoned<T>(shard);
    comm.reduce_scatter(send.data(), recv.data(), count, ReduceOp::sum);
    std::vector<double> want(static_cast<std::size_t>(shard), 0.0);
    for (int k = 0; k < n; ++k) {
      const auto other = random_values<T>(k, count);
      for (std::int64_t i = 0; i < shard; ++i) want[static_cast<std::size_t>(i)] += convert<float>(other[r * shard + i]);
    }
    checks.close(at + " sum, random data", recv, want, random_tolerance<T>());
  }
}

template <class T>
void check_all_gather(MpiComm& comm, Checks& checks) {
  const int r = comm.rank(), n = comm.size();
  for (const std::int64_t count : {1, 37, 1000}) {
    const std::string at = "all_gather " + type_name<T>() + " count " + std::to_string(count);
    std::vector<T> want;
    for (int k = 0; k < n; ++k) {
      const auto part = exact_values<T>(k, count);
      want.insert(want.end(), part.begin(), part.end());
    }
    const auto send = exact_values<T>(r, count);
    auto recv = poisoned<T>(count * n);
    comm.all_gather(send.data(), recv.data(), count);
    checks.equal(at, recv, want);

    auto buffer = poisoned<T>(count * n);
    std::copy(send.begin(), send.end(), buffer.begin() + r * count);
    comm.all_gather(buffer.data() + r * count, buffer.data(), count);
    checks.equal(at + ", in place", buffer, want);
  }
}

template <class T>
void check_broadcast(MpiComm& comm, Checks& checks) {
  for (int root = 0; root < comm.size(); ++root) {
    for (const std::int64_t count : {1, 37, 1000}) {
      auto data = exact_values<T>(comm.rank(), count);
      comm.broadcast(data.data(), count, root);
      checks.equal("broadcast " + type_name<T>() + " count " + std::to_string(count) + " from root " +
                       std::to_string(root),
                   data, exact_values<T>(root, count));
    }
  }
}

template <class T>
void check_type(MpiComm& comm, Checks& checks) {
  check_all_reduce<T>(comm, checks);
  check_reduce_scatter<T>(comm, checks);
  check_all_gather<T>(comm, checks);
  check_broadcast<T>(comm, checks);
  // Zero counts: nothing moves, nothing is checked against the (null) buffers.
  T* none = nullptr;
  comm.all_reduce(none, 0);
  comm.reduce_scatter(none, none, 0);
  comm.all_gather(none, none, 0);
  comm.broadcast(none, 0);
  checks.expect("zero counts " + type_name<T>() + " (null buffers allowed)", true);
}

void check_misuse(const MpiEnvironment&, MpiComm& comm, Checks& checks) {
  const int r = comm.rank(), n = comm.size();
  const std::string rank = "(rank " + std::to_string(r) + " of " + std::to_string(n) + ")";
  std::vector<float> buffer(64, 1.0f);
  checks.throws("all_reduce with a negative count", [&] { comm.all_reduce(buffer.data(), -3); },
                {"MpiComm::all_reduce " + rank, "count -3 is negative"});
  checks.throws("all_reduce on a null buffer", [&] { comm.all_reduce(static_cast<float*>(nullptr), 5); },
                {"MpiComm::all_reduce " + rank, "data is null"});
  checks.throws("reduce_scatter with a count not divisible by the ranks",
                [&] { comm.reduce_scatter(buffer.data(), buffer.data() + 32, 2 * n + 1); },
                {"MpiComm::reduce_scatter " + rank, "not divisible by the " + std::to_string(n) + " ranks"});
  checks.throws("reduce_scatter with overlapping buffers (not in place)",
                [&] { comm.reduce_scatter(buffer.data(), buffer.data() + 1 + r * 2, 2 * n); },
                {"MpiComm::reduce_scatter " + rank, "overlap"});
  checks.throws("all_gather with overlapping buffers (not in place)",
                [&] { comm.all_gather(buffer.data() + 1, buffer.data(), 2); },
                {"MpiComm::all_gather " + rank, "overlap"});
  checks.throws("broadcast from a root that is not a rank", [&] { comm.broadcast(buffer.data(), 4, n); },
                {"MpiComm::broadcast " + rank, "root " + std::to_string(n) + " is not a rank"});
  checks.throws("a second MpiEnvironment", [] { MpiEnvironment again; }, {"MpiEnvironment", "already initialised"});
  // Every rank threw before communicating: the communicator is still in step.
  comm.barrier();
  std::vector<float> one{static_cast<float>(r)};
  comm.all_reduce(one.data(), 1);
  checks.expect("collectives still work after the errors", one[0] == static_cast<float>(n * (n - 1) / 2));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "--skip") {
    std::printf("dist/mpi_collectives: skipped: %s\n", argv[2]);
    return 77;
  }
  MpiEnvironment mpi(argc, argv);
  MpiComm comm(mpi);
  // A rank that throws unexpectedly ends the job instead of leaving the others waiting.
  return run_or_abort(comm, [&] {
    if (comm.rank() == 0) {
      std::printf("dist/mpi_collectives: %d ranks, MPI thread level %d\n", comm.size(),
                  static_cast<int>(mpi.threading()));
    }
    Checks checks(comm.rank(), comm.size());
    check_type<float>(comm, checks);
    check_type<bf16>(comm, checks);
    check_type<fp16>(comm, checks);
    comm.barrier();
    checks.expect("barrier", true);
    check_misuse(mpi, comm, checks);
    float failures = static_cast<float>(checks.failures());
    comm.all_reduce(&failures, 1);
    if (comm.rank() == 0) {
      std::printf("dist/mpi_collectives: %d checks on each of %d ranks, %d failed in all\n", checks.checks(),
                  comm.size(), static_cast<int>(failures));
    }
    return failures == 0 ? 0 : 1;
  });
}

#include <catch2/catch.hpp>

#include <ctdl/dist/any_comm.hpp>
#include <ctdl/dist/communicator.hpp>
#include <ctdl/dist/data_parallel.hpp>
#include <ctdl/nn/layers.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

using namespace ctdl;
// Names, not `using namespace ctdl::dist`: test_unit_all compiles this file in one unit
// with others, where a second `detail` namespace in scope would make theirs ambiguous.
using ctdl::dist::Communicator;
using ctdl::dist::LocalComm;
using ctdl::dist::ReduceOp;
using ctdl::dist::run_or_abort;

namespace {

template <class T>
std::vector<T> local_comm_values(std::size_t n) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = convert<T>(static_cast<float>(i % 11) * 0.25f - 1.0f);
  return v;
}

template <class T>
std::vector<T> local_comm_nans(std::size_t n) {
  return std::vector<T>(n, convert<T>(std::numeric_limits<float>::quiet_NaN()));
}

template <class T>
bool same_comm_values(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!(convert<float>(a[i]) == convert<float>(b[i]))) return false;
  }
  return true;
}

/// Runs f, which must throw ctdl::Error with exactly this message.
template <class F>
void require_comm_error(F&& f, const std::string& message) {
  try {
    f();
  } catch (const Error& e) {
    REQUIRE(std::string(e.what()) == message);
    return;
  }
  FAIL("no ctdl::Error, expected: " << message);
}

}  // namespace

TEMPLATE_TEST_CASE("LocalComm: rank 0 of 1, every collective the identity on its data", "[dist]", float, bf16, fp16) {
  LocalComm comm;
  STATIC_REQUIRE(Communicator<LocalComm>);
  REQUIRE(comm.rank() == 0);
  REQUIRE(comm.size() == 1);
  for (const std::size_t n : {std::size_t{1}, std::size_t{37}, std::size_t{1000}}) {
    const auto x = local_comm_values<TestType>(n);
    const auto count = static_cast<std::int64_t>(n);

    auto data = x;
    comm.all_reduce(data.data(), count, ReduceOp::sum);
    REQUIRE(same_comm_values(data, x));
    comm.all_reduce(data.data(), count, ReduceOp::avg);
    REQUIRE(same_comm_values(data, x));

    auto recv = local_comm_nans<TestType>(n);
    comm.reduce_scatter(x.data(), recv.data(), count, ReduceOp::avg);
    REQUIRE(same_comm_values(recv, x));
    data = x;
    comm.reduce_scatter(data.data(), data.data(), count);  // in place: recv = send + 0 * count
    REQUIRE(same_comm_values(data, x));

    recv = local_comm_nans<TestType>(n);
    comm.all_gather(x.data(), recv.data(), count);
    REQUIRE(same_comm_values(recv, x));
    data = x;
    comm.all_gather(data.data(), data.data(), count);  // in place: send = recv + 0 * count
    REQUIRE(same_comm_values(data, x));

    data = x;
    comm.broadcast(data.data(), count, 0);
    REQUIRE(same_comm_values(data, x));
  }
  comm.barrier();
  // Zero counts take null buffers.
  TestType* none = nullptr;
  comm.all_reduce(none, 0);
  comm.reduce_scatter(none, none, 0);
  comm.all_gather(none, none, 0);
  comm.broadcast(none, 0);
}

TEST_CASE("LocalComm: misuse is an Error naming the collective, the rank and the problem", "[dist]") {
  LocalComm comm;
  std::vector<float> buffer(16, 1.0f);
  require_comm_error([&] { comm.all_reduce(buffer.data(), -1); },
                "LocalComm::all_reduce (rank 0 of 1): count -1 is negative");
  require_comm_error([&] { comm.all_reduce(static_cast<float*>(nullptr), 4); },
                "LocalComm::all_reduce (rank 0 of 1): data is null (count 4)");
  require_comm_error([&] { comm.reduce_scatter(buffer.data(), static_cast<float*>(nullptr), 4); },
                "LocalComm::reduce_scatter (rank 0 of 1): receive buffer is null (count 4)");
  require_comm_error([&] { comm.reduce_scatter(buffer.data(), buffer.data() + 2, 4); },
                "LocalComm::reduce_scatter (rank 0 of 1): send and receive buffers overlap (in place means "
                "recv = send + rank * count / size)");
  require_comm_error([&] { comm.all_gather(static_cast<const float*>(nullptr), buffer.data(), 3); },
                "LocalComm::all_gather (rank 0 of 1): send buffer is null (count 3)");
  require_comm_error([&] { comm.all_gather(buffer.data() + 1, buffer.data(), 4); },
                "LocalComm::all_gather (rank 0 of 1): send and receive buffers overlap (in place means "
                "send = recv + rank * count)");
  require_comm_error([&] { comm.broadcast(buffer.data(), 4, 1); },
                "LocalComm::broadcast (rank 0 of 1): root 1 is not a rank (ranks 0..0)");
  require_comm_error([&] { comm.broadcast(buffer.data(), 4, -1); },
                "LocalComm::broadcast (rank 0 of 1): root -1 is not a rank (ranks 0..0)");
  // Buffers side by side are not an overlap.
  comm.reduce_scatter(buffer.data(), buffer.data() + 4, 4);
  comm.all_gather(buffer.data() + 8, buffer.data() + 4, 4);
}

TEST_CASE("LocalComm: run_or_abort returns the body's value, abort_job ends the process with status 1", "[dist]") {
  LocalComm comm;
  REQUIRE(run_or_abort(comm, [] { return 42; }) == 42);
  std::fflush(nullptr);  // the child must not write the parent's buffered output again
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    run_or_abort(comm, []() -> int { throw Error("failing on purpose"); });
    _exit(0);  // not reached: abort_job exits with status 1
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 1);
}

namespace {
/// Says its collectives take device memory, as NcclComm does (no collective is called).
struct DeviceMemoryComm {
  static constexpr bool device_buffers() { return true; }
};
}  // namespace

TEST_CASE("Communicators say which memory they take, and a model's must match it", "[dist]") {
  LocalComm local;
  ctdl::dist::AnyComm any(local);
  REQUIRE_FALSE(ctdl::dist::takes_device_buffers(local));
  REQUIRE_FALSE(ctdl::dist::takes_device_buffers(any));
  REQUIRE(ctdl::dist::takes_device_buffers(DeviceMemoryComm{}));
  using CpuLayer = nn::Linear<float, 4, 3>;
  REQUIRE_NOTHROW(ctdl::dist::require_model_memory<CpuLayer>(local, "test"));
  REQUIRE_THROWS_WITH(ctdl::dist::require_model_memory<CpuLayer>(DeviceMemoryComm{}, "GradientAverager"),
                      "GradientAverager: the model is on the CPU and the communicator takes device memory: use a "
                      "host communicator (MpiComm) for a CPU model");
}

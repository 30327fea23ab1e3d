// NcclComm with one rank on device 0, made without MPI (one GPU: NCCL allows one rank
// per GPU, so one rank is all a single-GPU machine can run). Every collective on device
// buffers, for float, bf16 and fp16, odd and BERT-sized counts, against what it must give
// on one rank: all_reduce (sum and avg; all_reduce_async too, on NCCL's own stream)
// leaves the data as it was, reduce_scatter and all_gather copy send to recv (outputs
// poisoned with NaN first, so an unwritten element fails), in place too, broadcast from root 0 leaves the data; on the default stream and
// on a stream of its own; zero counts; barrier; and the misuse errors (host memory, a
// bad root, a negative count, overlapping buffers). Exact comparisons: one rank's sum and
// average (x * 1) are the data, bit for bit. Exits 77 without a device or without NCCL.
#include "gpu/gpu_test.hpp"

#if defined(CTDL_WITH_NCCL)
#include <ctdl/dist/nccl.hpp>
#endif

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#if defined(CTDL_WITH_NCCL)

namespace {

using namespace ctdl;
using namespace ctdl::dist;
using gpu_test::Buffer;
using gpu_test::expect_error;
using gpu_test::guarded;
using gpu_test::Report;

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, bf16>) return "bf16";
  else return "fp16";
}

/// Uploads and poison run on the legacy default stream; a non-blocking stream does not
/// wait for them, so the host waits before each collective.
void inputs_ready() { cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (inputs ready)"); }

template <class T>
void check_collectives(NcclComm& comm, Report& report, std::int64_t count, cudaStream_t stream,
                       const std::string& stream_name) {
  const auto n = static_cast<std::size_t>(count);
  const std::string at = type_name<T>() + " count " + std::to_string(count) + " on " + stream_name;
  const auto x = gpu_test::random_values<T>(n, static_cast<unsigned>(17 + count));

  for (const ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
    const std::string name = std::string("all_reduce ") + (op == ReduceOp::sum ? "sum " : "avg ") + at;
    guarded(report, name, [&] {
      Buffer<T> data(x);
      inputs_ready();
      comm.all_reduce(data.data(), count, op, stream);
      report.equal(name, data.download(), x);
    });
  }
  guarded(report, "all_reduce_async avg " + at, [&] {
    Buffer<T> data(x);
    inputs_ready();
    auto pending = comm.all_reduce_async(data.data(), count, ReduceOp::avg, stream);
    pending.wait();  // `stream` waits for NCCL's stream
    cuda::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    report.expect("all_reduce_async test() once the starting stream is done " + at, pending.test());
    report.equal("all_reduce_async avg " + at, data.download(), x);
  });
  guarded(report, "reduce_scatter sum " + at, [&] {
    Buffer<T> send(x), recv(n);
    recv.poison();
    inputs_ready();
    comm.reduce_scatter(send.data(), recv.data(), count, ReduceOp::sum, stream);
    report.equal("reduce_scatter sum " + at, recv.download(), x);
  });
  guarded(report, "reduce_scatter avg in place " + at, [&] {
    Buffer<T> data(x);
    inputs_ready();
    comm.reduce_scatter(data.data(), data.data(), count, ReduceOp::avg, stream);  // recv = send + 0 * count
    report.equal("reduce_scatter avg in place " + at, data.download(), x);
  });
  guarded(report, "all_gather " + at, [&] {
    Buffer<T> send(x), recv(n);
    recv.poison();
    inputs_ready();
    comm.all_gather(send.data(), recv.data(), count, stream);
    report.equal("all_gather " + at, recv.download(), x);
  });
  guarded(report, "all_gather in place " + at, [&] {
    Buffer<T> data(x);
    inputs_ready();
    comm.all_gather(data.data(), data.data(), count, stream);  // send = recv + 0 * count
    report.equal("all_gather in place " + at, data.download(), x);
  });
  guarded(report, "broadcast from root 0 " + at, [&] {
    Buffer<T> data(x);
    inputs_ready();
    comm.broadcast(data.data(), count, 0, stream);
    report.equal("broadcast from root 0 " + at, data.download(), x);
  });
}

template <class T>
void check_type(NcclComm& comm, Report& report, cudaStream_t own_stream) {
  // 1 and 37: odd sizes; 4099: more than one NCCL chunk's worth of odd; 256 x 768 x 3: a
  // BERT-base-like gradient slab (2.4 MB in float).
  for (const std::int64_t count : {std::int64_t{1}, std::int64_t{37}, std::int64_t{4099}, std::int64_t{256} * 768 * 3}) {
    check_collectives<T>(comm, report, count, nullptr, "the default stream");
  }
  check_collectives<T>(comm, report, 4099, own_stream, "a stream of its own");
  guarded(report, "zero counts " + type_name<T>(), [&] {
    T* none = nullptr;
    comm.all_reduce(none, 0);
    comm.reduce_scatter(none, none, 0);
    comm.all_gather(none, none, 0);
    comm.broadcast(none, 0);
    cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize after zero-count collectives");
    report.expect("zero counts " + type_name<T>() + " (null buffers allowed, nothing launched)", true);
  });
}

void check_misuse(NcclComm& comm, Report& report) {
  Buffer<float> device(64);
  std::vector<float> host(64, 1.0f);
  expect_error(report, "all_reduce on host memory is an Error", "NcclComm::all_reduce (rank 0 of 1): data is host memory",
               [&] { comm.all_reduce(host.data(), 64); });
  expect_error(report, "all_gather into host memory is an Error", "receive buffer is host memory",
               [&] { comm.all_gather(device.data(), host.data(), 64); });
  expect_error(report, "a negative count is an Error", "NcclComm::broadcast (rank 0 of 1): count -2 is negative",
               [&] { comm.broadcast(device.data(), -2); });
  expect_error(report, "a root that is not a rank is an Error",
               "NcclComm::broadcast (rank 0 of 1): root 1 is not a rank", [&] { comm.broadcast(device.data(), 4, 1); });
  expect_error(report, "overlapping reduce_scatter buffers are an Error", "NcclComm::reduce_scatter (rank 0 of 1): send "
               "and receive buffers overlap", [&] { comm.reduce_scatter(device.data(), device.data() + 1, 8); });
  expect_error(report, "a null buffer is an Error", "NcclComm::all_reduce (rank 0 of 1): data is null",
               [&] { comm.all_reduce(static_cast<float*>(nullptr), 3); });
  guarded(report, "collectives still work after the errors", [&] {
    const auto x = gpu_test::random_values<float>(64, 5);
    device.upload(x);
    comm.all_reduce(device.data(), 64);
    report.equal("collectives still work after the errors", device.download(), x);
  });
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/nccl");
  // NCCL says why when it fails (network, shared memory, a missing library), in the log.
  setenv("NCCL_DEBUG", "WARN", 0);
  Report report("gpu/nccl");
  int version = 0;
  ncclGetVersion(&version);
  std::printf("gpu/nccl: NCCL %d (built against %d)\n", version, NCCL_VERSION_CODE);

  std::unique_ptr<NcclComm> comm;
  try {
    comm = std::make_unique<NcclComm>(0);
  } catch (const std::exception& e) {
    report.expect("NcclComm(0): one rank without MPI", false, e.what());
    return report.finish();
  }
  report.expect("NcclComm(0): one rank without MPI", comm->rank() == 0 && comm->size() == 1 && comm->device() == 0,
                "rank " + std::to_string(comm->rank()) + " of " + std::to_string(comm->size()) + " on device " +
                    std::to_string(comm->device()));

  cudaStream_t own_stream = nullptr;
  cuda::check(cudaStreamCreateWithFlags(&own_stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check_type<float>(*comm, report, own_stream);
  check_type<bf16>(*comm, report, own_stream);
  check_type<fp16>(*comm, report, own_stream);
  guarded(report, "barrier", [&] {
    comm->barrier();
    comm->barrier(own_stream);
    report.expect("barrier (default stream and a stream of its own)", true);
  });
  check_misuse(*comm, report);
  cuda::check(cudaStreamDestroy(own_stream), "cudaStreamDestroy");
  comm.reset();
  return report.finish();
}

#else

int main() {
  std::printf("gpu/nccl: skipped: built without NCCL (CTDL_WITH_NCCL is off: nccl.h or libnccl not found)\n");
  return 77;
}

#endif

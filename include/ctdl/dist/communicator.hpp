#pragma once
// The contract every communicator of ctdl follows (LocalComm here, MpiComm in
// dist/mpi.hpp, NcclComm in dist/nccl.hpp), and LocalComm, the communicator of one
// process.
//
// A communicator joins `size()` ranks numbered 0 .. size()-1; every rank calls the same
// collectives in the same order with the same counts (a collective is a meeting: a rank
// that skips one leaves the others waiting, which is why a failing rank must call
// abort_job, or run its work through run_or_abort).
//
// Buffers are raw pointers with element counts (std::int64_t): host memory for LocalComm
// and MpiComm, device memory for NcclComm, whose collectives take one more, trailing
// argument, the CUDA stream they are ordered on. Element types: float, bf16, fp16.
//
// The collectives, for ranks r = 0 .. N-1 (N = size()) and x_r the buffer of rank r:
//
//   all_reduce(data, count, op)           in place, on every rank:
//       sum: data = x_0 + x_1 + ... + x_{N-1}            (count elements)
//       avg: data = (x_0 + ... + x_{N-1}) / N
//   reduce_scatter(send, recv, count, op) count = the whole buffer, divisible by N;
//       s = count / N; rank r receives shard r of the reduction:
//       recv[i] = sum_k send_k[r*s + i]  (or / N for avg),  i < s.
//       In place when recv == send + r*s (the other shards' values in the buffer are then
//       left unspecified); any other overlap of send and recv is an error.
//   all_gather(send, recv, count)         count = elements each rank sends;
//       recv (count*N elements) = send_0 | send_1 | ... | send_{N-1}, on every rank.
//       In place when send == recv + r*count; any other overlap is an error.
//   broadcast(data, count, root)          in place: every rank's data = root's data.
//   barrier()                             returns on a rank once every rank has entered it.
//   all_reduce_async(data, count, op)     all_reduce, started: returns a PendingReduce
//                                         whose wait() finishes it (test() says whether
//                                         it is done, and moves it along); until then the
//                                         buffer belongs to the communicator. Every rank
//                                         starts the same reductions in the same order.
//   abort_job(message)                    prints the message naming this rank and ends
//                                         every rank of the job with a non-zero status.
//
// Half-precision sums round to the element type: MpiComm rounds after each pairwise
// combine (N-1 roundings), NCCL as it sees fit; float sums may also differ in the last
// bits between communicators (the order of additions is the library's). avg is the sum
// divided by N (NcclComm: ncclAvg, which may scale before summing).
//
// Misuse (a negative count, a null buffer with a non-zero count, a count not divisible
// by N, a root out of range, overlapping buffers) throws ctdl::Error naming the
// communicator, the collective, the rank and the problem, before any rank communicates.
// The count, divisibility and root checks depend only on arguments every rank passes
// alike, so every rank throws. The buffer checks (null, overlap; NcclComm's device
// memory) see this rank's pointers: a rank that fails them alone leaves the others in
// the collective, and must end the job (abort_job, run_or_abort).

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"

namespace ctdl::dist {

/// The reduction of all_reduce and reduce_scatter.
enum class ReduceOp { sum, avg };

/// The element types collectives move: float, bf16 and fp16.
template <class T>
concept CommElement = std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, fp16>;

/// Requires: rank() in [0, size()), size() >= 1, fixed for the communicator's life; the
/// collectives and their semantics as in this header's comment, for float, bf16 and fp16;
/// abort_job never returns.
template <class C>
concept Communicator = requires(C& comm, const C& ccomm, float* f, const float* cf, bf16* b, const bf16* cb,
                                fp16* h, const fp16* ch, std::int64_t count, int root, const std::string& message) {
  { ccomm.rank() } -> std::same_as<int>;
  { ccomm.size() } -> std::same_as<int>;
  comm.all_reduce(f, count, ReduceOp::sum);
  comm.all_reduce(b, count, ReduceOp::avg);
  comm.all_reduce(h, count, ReduceOp::sum);
  comm.reduce_scatter(cf, f, count, ReduceOp::sum);
  comm.reduce_scatter(cb, b, count, ReduceOp::avg);
  comm.reduce_scatter(ch, h, count, ReduceOp::sum);
  comm.all_gather(cf, f, count);
  comm.all_gather(cb, b, count);
  comm.all_gather(ch, h, count);
  comm.broadcast(f, count, root);
  comm.broadcast(b, count, root);
  comm.broadcast(h, count, root);
  comm.barrier();
  comm.abort_job(message);
};

/// A communicator that can start an all_reduce and finish it later (LocalComm, MpiComm,
/// NcclComm, AnyComm):
/// what overlaps gradient communication with backward (dist/data_parallel.hpp).
template <class C>
concept AsyncCommunicator = Communicator<C> && requires(C& comm, float* f, std::int64_t count) {
  { comm.all_reduce_async(f, count, ReduceOp::avg).test() } -> std::same_as<bool>;
  comm.all_reduce_async(f, count, ReduceOp::avg).wait();
};

/// Whether `comm`'s collectives take device memory: a communicator that does says so with
/// a device_buffers() member (NcclComm; AnyComm forwards it); the others take host memory.
template <class C>
bool takes_device_buffers(const C& comm) {
  if constexpr (requires { comm.device_buffers(); }) return comm.device_buffers();
  else return false;
}

/// Runs body(); if it throws, aborts the whole job with the exception's message (a rank
/// that stopped alone would leave the others waiting in their next collective).
template <Communicator C, class F>
decltype(auto) run_or_abort(C& comm, F&& body);

/// The communicator of a single process: rank 0 of 1. Every collective is the identity
/// on its data (out-of-place ones copy send to recv), with the same argument checks as
/// the multi-rank communicators, so code written for N ranks runs and fails alike on one.
class LocalComm {
 public:
  int rank() const noexcept { return 0; }
  int size() const noexcept { return 1; }

  template <CommElement T>
  void all_reduce(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum);
  template <CommElement T>
  void reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp op = ReduceOp::sum);
  template <CommElement T>
  void all_gather(const T* send, T* recv, std::int64_t count);
  template <CommElement T>
  void broadcast(T* data, std::int64_t count, int root = 0);
  void barrier() {}
  /// A reduction already finished (one rank: the buffer is the result).
  struct PendingReduce {
    bool test() { return true; }
    void wait() {}
  };
  template <CommElement T>
  PendingReduce all_reduce_async(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum) {
    all_reduce(data, count, op);
    return {};
  }
  /// Raw bytes from root (checked; one rank: nothing moves).
  void broadcast_bytes(void* data, std::int64_t bytes, int root = 0);
  /// Prints the message and exits the process with status 1.
  [[noreturn]] void abort_job(const std::string& message);
};

// ---------------------------------------------------------------------------------------

namespace detail {

/// Where a collective was called, for its error messages:
/// "MpiComm::reduce_scatter (rank 1 of 2): count 7 is not divisible by the 2 ranks".
struct CallSite {
  const char* comm;
  const char* collective;
  int rank;
  int size;

  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(std::string(comm) + "::" + collective + " (rank " + std::to_string(rank) + " of " +
                std::to_string(size) + "): " + problem);
  }

  void check_count(std::int64_t count) const {
    if (count < 0) fail("count " + std::to_string(count) + " is negative");
  }
  void check_buffer(const void* p, std::int64_t count, const char* which) const {
    if (p == nullptr && count > 0) fail(std::string(which) + " is null (count " + std::to_string(count) + ")");
  }
  void check_root(int root) const {
    if (root < 0 || root >= size)
      fail("root " + std::to_string(root) + " is not a rank (ranks 0.." + std::to_string(size - 1) + ")");
  }
};

/// Whether [a, a + a_bytes) and [b, b + b_bytes) share a byte (compared as addresses, so
/// it works for device pointers too).
inline bool overlaps(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) {
  const auto pa = reinterpret_cast<std::uintptr_t>(a), pb = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && pa < pb + static_cast<std::uintptr_t>(b_bytes) &&
         pb < pa + static_cast<std::uintptr_t>(a_bytes);
}

/// The checks of all_reduce and broadcast (one buffer, in place).
template <class T>
void check_in_place(const CallSite& site, const T* data, std::int64_t count) {
  site.check_count(count);
  site.check_buffer(data, count, "data");
}

/// The checks of reduce_scatter; returns whether it runs in place (recv == send + rank*shard).
template <class T>
bool check_reduce_scatter(const CallSite& site, const T* send, const T* recv, std::int64_t count) {
  site.check_count(count);
  if (count % site.size != 0) {
    site.fail("count " + std::to_string(count) + " is not divisible by the " + std::to_string(site.size) +
              " ranks (each rank receives count / size elements)");
  }
  const std::int64_t shard = count / site.size;
  site.check_buffer(send, count, "send buffer");
  site.check_buffer(recv, shard, "receive buffer");
  const bool in_place = shard > 0 && recv == send + site.rank * shard;
  if (!in_place && overlaps(send, count * std::int64_t{sizeof(T)}, recv, shard * std::int64_t{sizeof(T)})) {
    site.fail("send and receive buffers overlap (in place means recv = send + rank * count / size)");
  }
  return in_place;
}

/// The checks of all_gather; returns whether it runs in place (send == recv + rank*count).
template <class T>
bool check_all_gather(const CallSite& site, const T* send, const T* recv, std::int64_t count) {
  site.check_count(count);
  if (count > std::numeric_limits<std::int64_t>::max() / site.size / std::int64_t{sizeof(T)}) {
    site.fail("count " + std::to_string(count) + " times " + std::to_string(site.size) + " ranks overflows");
  }
  const std::int64_t total = count * site.size;
  site.check_buffer(send, count, "send buffer");
  site.check_buffer(recv, total, "receive buffer");
  const bool in_place = count > 0 && send == recv + site.rank * count;
  if (!in_place && overlaps(send, count * std::int64_t{sizeof(T)}, recv, total * std::int64_t{sizeof(T)})) {
    site.fail("send and receive buffers overlap (in place means send = recv + rank * count)");
  }
  return in_place;
}

/// Prints "ctdl: rank r of n: aborting the job: message" on stderr, at once.
inline void print_abort(int rank, int size, const std::string& message) {
  std::fprintf(stderr, "ctdl: rank %d of %d: aborting the job: %s\n", rank, size, message.c_str());
  std::fflush(stderr);
}

}  // namespace detail

template <Communicator C, class F>
decltype(auto) run_or_abort(C& comm, F&& body) {
  try {
    return std::forward<F>(body)();
  } catch (const std::exception& e) {
    comm.abort_job(e.what());
  } catch (...) {
    comm.abort_job("an exception that is not a std::exception");
  }
}

template <CommElement T>
void LocalComm::all_reduce(T* data, std::int64_t count, ReduceOp) {
  detail::check_in_place(detail::CallSite{"LocalComm", "all_reduce", 0, 1}, data, count);
  // One rank: the sum and the average of one buffer are the buffer.
}

template <CommElement T>
void LocalComm::reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp) {
  const bool in_place = detail::check_reduce_scatter(detail::CallSite{"LocalComm", "reduce_scatter", 0, 1}, send,
                                                     recv, count);
  // memmove, not memcpy: the check above rules out overlap, but GCC cannot see that.
  if (!in_place && count > 0) std::memmove(recv, send, static_cast<std::size_t>(count) * sizeof(T));
}

template <CommElement T>
void LocalComm::all_gather(const T* send, T* recv, std::int64_t count) {
  const bool in_place =
      detail::check_all_gather(detail::CallSite{"LocalComm", "all_gather", 0, 1}, send, recv, count);
  if (!in_place && count > 0) std::memmove(recv, send, static_cast<std::size_t>(count) * sizeof(T));
}

template <CommElement T>
void LocalComm::broadcast(T* data, std::int64_t count, int root) {
  const detail::CallSite site{"LocalComm", "broadcast", 0, 1};
  detail::check_in_place(site, data, count);
  site.check_root(root);
}

inline void LocalComm::broadcast_bytes(void* data, std::int64_t bytes, int root) {
  const detail::CallSite site{"LocalComm", "broadcast_bytes", 0, 1};
  site.check_count(bytes);
  site.check_buffer(data, bytes, "data");
  site.check_root(root);
}

inline void LocalComm::abort_job(const std::string& message) {
  detail::print_abort(0, 1, message);
  std::exit(1);
}

static_assert(AsyncCommunicator<LocalComm>);

}  // namespace ctdl::dist

#pragma once
// ThreadComm: a Communicator (dist/communicator.hpp) whose N ranks are N threads of one
// process, for tests. It lets several ranks of the data-parallel code run where MPI is not
// launched, and, with D = Cuda, on ONE GPU: NCCL allows one rank per GPU, so without it a
// single-GPU machine could never run ZeRO-1's or the averager's multi-rank layout (the
// slices, their offsets, the padding, the per-rank sums) on the device.
//
//   test::ThreadGroup group(3);
//   group.run<Cpu>([&](test::ThreadComm<Cpu>& comm) { ... comm.rank() ... });  // 3 threads
//
// Every collective is a meeting of the group's threads (std::barrier): each rank puts its
// contribution in its slot, all meet, each reads the slots into its own result, all meet
// again (so no slot is overwritten while another rank still reads it). D = Cpu takes host
// buffers; D = Cuda device buffers (device_buffers() is true), copied to and from the
// host with DeviceAllocator<Cuda>'s synchronous copies, which wait for the work queued
// before them on the legacy default stream that ctdl's kernels use.
// Reductions add in float, in rank order, then round to T (avg: that sum / N).
// all_gather and broadcast move bits unchanged. The argument checks are the shared ones
// (dist::detail), so misuse throws on every rank before any meeting.
// A rank whose body throws leaves the group (arrive_and_drop), so the others run on
// instead of waiting for it; run() rethrows the first exception after joining them all.
// Not a library communicator: its speed is whatever host copies give.

#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "ctdl/core/device.hpp"
#include "ctdl/core/dtype.hpp"
#include "ctdl/dist/communicator.hpp"

namespace ctdl::test {

template <class D>
class ThreadComm;

/// The meeting place of N rank threads.
class ThreadGroup {
 public:
  explicit ThreadGroup(int ranks) : ranks_(ranks), meet_(ranks), slots_(static_cast<std::size_t>(ranks)) {}
  int size() const { return ranks_; }

  /// Runs body(comm) on `size()` threads, rank r's with the ThreadComm of rank r; returns
  /// when every thread has ended; rethrows the first exception a rank threw.
  template <class D, class F>
  void run(F&& body);

 private:
  template <class D>
  friend class ThreadComm;
  int ranks_;
  std::barrier<> meet_;
  std::vector<std::vector<unsigned char>> slots_;  // each rank's contribution, as bytes
};

template <class D>
class ThreadComm {
 public:
  ThreadComm(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return group_.size(); }
  /// Device memory where D is a GPU (train::fit and the averager ask).
  static constexpr bool device_buffers() noexcept { return !std::is_same_v<D, Cpu>; }

  template <dist::CommElement T>
  void all_reduce(T* data, std::int64_t count, dist::ReduceOp op = dist::ReduceOp::sum) {
    dist::detail::check_in_place(site("all_reduce"), data, count);
    meet(data, count, [&](std::vector<T>& out) { reduce(out, 0, count, op); }, data, count);
  }
  template <dist::CommElement T>
  void reduce_scatter(const T* send, T* recv, std::int64_t count, dist::ReduceOp op = dist::ReduceOp::sum) {
    (void)dist::detail::check_reduce_scatter(site("reduce_scatter"), send, recv, count);
    const std::int64_t shard = count / size();
    meet(send, count, [&](std::vector<T>& out) { reduce(out, rank_ * shard, shard, op); }, recv, shard);
  }
  template <dist::CommElement T>
  void all_gather(const T* send, T* recv, std::int64_t count) {
    (void)dist::detail::check_all_gather(site("all_gather"), send, recv, count);
    meet(send, count, [&](std::vector<T>& out) {
      out.resize(static_cast<std::size_t>(count * size()));
      for (int k = 0; k < size(); ++k)
        std::memcpy(out.data() + k * count, group_.slots_[static_cast<std::size_t>(k)].data(),
                    static_cast<std::size_t>(count) * sizeof(T));
    }, recv, count * size());
  }
  template <dist::CommElement T>
  void broadcast(T* data, std::int64_t count, int root = 0) {
    const auto where = site("broadcast");
    dist::detail::check_in_place(where, data, count);
    where.check_root(root);
    meet(data, count, [&](std::vector<T>& out) {
      out.resize(static_cast<std::size_t>(count));
      std::memcpy(out.data(), group_.slots_[static_cast<std::size_t>(root)].data(), static_cast<std::size_t>(count) * sizeof(T));
    }, data, count);
  }
  void barrier() {
    group_.meet_.arrive_and_wait();
  }
  /// A reduction done at once (as LocalComm's): for the averager's overlap, which starts
  /// buckets during backward; every rank starts the same ones in the same order.
  struct PendingReduce {
    bool test() { return true; }
    void wait() {}
  };
  template <dist::CommElement T>
  PendingReduce all_reduce_async(T* data, std::int64_t count, dist::ReduceOp op = dist::ReduceOp::sum) {
    all_reduce(data, count, op);
    return {};
  }
  [[noreturn]] void abort_job(const std::string& message) {
    dist::detail::print_abort(rank_, size(), message);
    std::_Exit(1);
  }

 private:
  dist::detail::CallSite site(const char* collective) const { return {"ThreadComm", collective, rank_, size()}; }

  /// Rank k's element i of the current meeting's slots, as float.
  template <class T>
  float slot(int k, std::int64_t i) const {
    return static_cast<float>(reinterpret_cast<const T*>(group_.slots_[static_cast<std::size_t>(k)].data())[i]);
  }
  /// out = the reduction over the ranks of elements [begin, begin + n) of the slots.
  template <class T>
  void reduce(std::vector<T>& out, std::int64_t begin, std::int64_t n, dist::ReduceOp op) const {
    out.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      float s = 0.f;
      for (int k = 0; k < size(); ++k) s += slot<T>(k, begin + i);
      if (op == dist::ReduceOp::avg) s /= static_cast<float>(size());
      out[static_cast<std::size_t>(i)] = T(s);
    }
  }

  /// One collective: `mine` (count elements) into this rank's slot; meet; `result` fills
  /// a host vector from the slots; it goes to `dst` (dst_count elements); meet again.
  template <class T, class F>
  void meet(const T* mine, std::int64_t count, F&& result, T* dst, std::int64_t dst_count) {
    auto& my_slot = group_.slots_[static_cast<std::size_t>(rank_)];
    const auto bytes = static_cast<std::size_t>(count) * sizeof(T);
    my_slot.resize(bytes);
    if (bytes) {
      if constexpr (std::is_same_v<D, Cpu>) std::memcpy(my_slot.data(), mine, bytes);
      else DeviceAllocator<D>::copy_to_host(my_slot.data(), mine, bytes);
    }
    group_.meet_.arrive_and_wait();
    std::vector<T> out;
    result(out);
    group_.meet_.arrive_and_wait();  // every rank has read the slots
    const auto out_bytes = static_cast<std::size_t>(dst_count) * sizeof(T);
    if (out_bytes) {
      if constexpr (std::is_same_v<D, Cpu>) std::memcpy(dst, out.data(), out_bytes);
      else DeviceAllocator<D>::copy_from_host(dst, out.data(), out_bytes);
    }
  }

  ThreadGroup& group_;
  int rank_;
};

template <class D, class F>
void ThreadGroup::run(F&& body) {
  std::vector<std::thread> threads;
  std::exception_ptr first;
  std::mutex m;
  for (int r = 0; r < ranks_; ++r) {
    threads.emplace_back([&, r] {
      ThreadComm<D> comm(*this, r);
      try {
        body(comm);
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(m);
          if (!first) first = std::current_exception();
        }
        meet_.arrive_and_drop();  // the others go on without this rank
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

static_assert(dist::AsyncCommunicator<ThreadComm<Cpu>>);

}  // namespace ctdl::test

#pragma once
// AnyComm: any Communicator behind one type, chosen at run time. A program that runs on
// one process or on MPI ranks as a flag says (ner_span_classifier --distributed) compiles
// its training loop once, for AnyComm, instead of once per communicator; and only the
// translation unit that constructs an AnyComm from an MpiComm needs <mpi.h>.
//
//   dist::LocalComm local;
//   dist::AnyComm comm(local);           // or AnyComm(mpi_comm): a reference, not a copy
//   train::fit<P>(model, cache, options, hooks, comm);
//
// Each collective costs one virtual call more than the communicator's own; the data
// moves as the wrapped communicator moves it, with its checks and its errors.

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/dist/communicator.hpp"

namespace ctdl::dist {

namespace detail {

enum class CommType { f32, bf16, fp16 };

template <class T>
constexpr CommType comm_type() {
  if constexpr (std::is_same_v<T, float>) return CommType::f32;
  else if constexpr (std::is_same_v<T, bf16>) return CommType::bf16;
  else return CommType::fp16;
}

/// Calls fn(static_cast<T*>(p)) for the element type `t` names.
template <class Fn>
decltype(auto) with_type(CommType t, void* p, Fn&& fn) {
  switch (t) {
    case CommType::bf16: return fn(static_cast<bf16*>(p));
    case CommType::fp16: return fn(static_cast<fp16*>(p));
    default: return fn(static_cast<float*>(p));
  }
}

struct AnyPending {
  virtual ~AnyPending() = default;
  virtual bool test() = 0;
  virtual void wait() = 0;
};

struct AnyCommBase {
  virtual ~AnyCommBase() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual bool device_buffers() const = 0;
  virtual void all_reduce(CommType t, void* data, std::int64_t count, ReduceOp op) = 0;
  virtual void reduce_scatter(CommType t, const void* send, void* recv, std::int64_t count, ReduceOp op) = 0;
  virtual void all_gather(CommType t, const void* send, void* recv, std::int64_t count) = 0;
  virtual void broadcast(CommType t, void* data, std::int64_t count, int root) = 0;
  virtual void barrier() = 0;
  virtual std::unique_ptr<AnyPending> all_reduce_async(CommType t, void* data, std::int64_t count, ReduceOp op) = 0;
  [[noreturn]] virtual void abort_job(const std::string& message) = 0;
};

template <AsyncCommunicator C>
struct AnyCommOf final : AnyCommBase {
  explicit AnyCommOf(C& c) : comm(c) {}
  C& comm;

  template <class P>
  struct Pending final : AnyPending {
    explicit Pending(P p) : pending(std::move(p)) {}
    P pending;
    bool test() override { return pending.test(); }
    void wait() override { pending.wait(); }
  };

  int rank() const override { return comm.rank(); }
  int size() const override { return comm.size(); }
  bool device_buffers() const override { return takes_device_buffers(comm); }
  void all_reduce(CommType t, void* data, std::int64_t count, ReduceOp op) override {
    with_type(t, data, [&](auto* d) { comm.all_reduce(d, count, op); });
  }
  void reduce_scatter(CommType t, const void* send, void* recv, std::int64_t count, ReduceOp op) override {
    with_type(t, recv, [&](auto* r) {
      using T = std::remove_pointer_t<decltype(r)>;
      comm.reduce_scatter(static_cast<const T*>(send), r, count, op);
    });
  }
  void all_gather(CommType t, const void* send, void* recv, std::int64_t count) override {
    with_type(t, recv, [&](auto* r) {
      using T = std::remove_pointer_t<decltype(r)>;
      comm.all_gather(static_cast<const T*>(send), r, count);
    });
  }
  void broadcast(CommType t, void* data, std::int64_t count, int root) override {
    with_type(t, data, [&](auto* d) { comm.broadcast(d, count, root); });
  }
  void barrier() override { comm.barrier(); }
  std::unique_ptr<AnyPending> all_reduce_async(CommType t, void* data, std::int64_t count, ReduceOp op) override {
    return with_type(t, data, [&](auto* d) -> std::unique_ptr<AnyPending> {
      using P = decltype(comm.all_reduce_async(d, count, op));
      return std::make_unique<Pending<P>>(comm.all_reduce_async(d, count, op));
    });
  }
  [[noreturn]] void abort_job(const std::string& message) override { comm.abort_job(message); }
};

}  // namespace detail

/// A reference to an AsyncCommunicator of any type (which must outlive it).
class AnyComm {
 public:
  template <AsyncCommunicator C>
    requires(!std::is_same_v<C, AnyComm>)
  explicit AnyComm(C& comm) : impl_(std::make_unique<detail::AnyCommOf<C>>(comm)) {}

  int rank() const { return impl_->rank(); }
  int size() const { return impl_->size(); }
  /// Whether the wrapped communicator's collectives take device memory (NcclComm).
  bool device_buffers() const { return impl_->device_buffers(); }

  template <CommElement T>
  void all_reduce(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum) {
    impl_->all_reduce(detail::comm_type<T>(), data, count, op);
  }
  template <CommElement T>
  void reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp op = ReduceOp::sum) {
    impl_->reduce_scatter(detail::comm_type<T>(), send, recv, count, op);
  }
  template <CommElement T>
  void all_gather(const T* send, T* recv, std::int64_t count) {
    impl_->all_gather(detail::comm_type<T>(), send, recv, count);
  }
  template <CommElement T>
  void broadcast(T* data, std::int64_t count, int root = 0) {
    impl_->broadcast(detail::comm_type<T>(), data, count, root);
  }
  void barrier() { impl_->barrier(); }

  /// The wrapped communicator's reduction in flight.
  class PendingReduce {
   public:
    PendingReduce() = default;
    explicit PendingReduce(std::unique_ptr<detail::AnyPending> p) : p_(std::move(p)) {}
    bool test() { return !p_ || p_->test(); }
    void wait() {
      if (p_) p_->wait();
    }

   private:
    std::unique_ptr<detail::AnyPending> p_;
  };
  template <CommElement T>
  PendingReduce all_reduce_async(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum) {
    return PendingReduce(impl_->all_reduce_async(detail::comm_type<T>(), data, count, op));
  }
  [[noreturn]] void abort_job(const std::string& message) { impl_->abort_job(message); }

 private:
  std::unique_ptr<detail::AnyCommBase> impl_;
};

static_assert(AsyncCommunicator<AnyComm>);

}  // namespace ctdl::dist

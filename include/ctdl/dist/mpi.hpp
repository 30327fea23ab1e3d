#pragma once
// MPI for ctdl: MpiEnvironment, the process's one MPI_Init_thread / MPI_Finalize, and
// MpiComm, the Communicator (dist/communicator.hpp) over an MPI communicator, on host
// buffers. Link ctdl::mpi (CMake) to use it: MPI is linked only where MPI code is.
//
//   int main(int argc, char** argv) {
//     ctdl::dist::MpiEnvironment mpi(argc, argv);
//     ctdl::dist::MpiComm comm(mpi);          // a duplicate of MPI_COMM_WORLD
//     return ctdl::dist::run_or_abort(comm, [&] { ...; return 0; });
//   }
//
// Element types: float is MPI_FLOAT. MPI has no bf16 or fp16, so those travel as 16-bit
// words (MPI_UINT16_T) and are summed by user-defined MPI_Ops that add each pair in
// float and round the sum back to the element type (to nearest even) — no converted
// copy of the buffer, at the price of one rounding per combine (N-1 in all). avg divides
// the sum by N on each rank afterwards (in float, rounded once more for bf16/fp16).
//
// Errors: MPI calls return their error codes (MPI_ERRORS_RETURN on ctdl's communicator)
// and a failure throws ctdl::Error naming the collective, the rank and the MPI call with
// MPI's own message. MPI counts are ints: a call moves at most 2^31 - 1 elements per rank.
//
// A rank that fails must end the job: abort_job calls MPI_Abort, which ends every rank
// (mpirun and srun both pass it on) with a non-zero status. run_or_abort does that for a
// body that throws, and MpiEnvironment's destructor does it when it runs during stack
// unwinding (an exception leaving the scope of MPI) on one of several ranks, rather than
// calling MPI_Finalize, which would wait for ranks that are waiting for this one; so does
// MpiComm's. A job of one rank finalises as usual and lets the exception speak.

#include <mpi.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/dist/communicator.hpp"

namespace ctdl::dist {

/// The thread support asked of MPI (MPI_THREAD_*): funneled = only the thread that
/// initialised MPI calls it, which is how ctdl's trainers use it.
enum class MpiThreading { single, funneled, serialized, multiple };

/// What MpiEnvironment asks of MPI.
struct MpiEnvironmentOptions {
  MpiThreading threading = MpiThreading::funneled;
};

/// Initialises MPI on construction and finalises it on destruction. One per process, for
/// the process's life: MPI cannot be initialised twice, so a second MpiEnvironment (or
/// one after MPI was initialised elsewhere, or finalised) is an Error. Destroy every
/// MpiComm before it.
class MpiEnvironment {
 public:
  using Options = MpiEnvironmentOptions;
  /// MPI_Init_thread(&argc, &argv, ...): MPI may take its own arguments out of argv.
  MpiEnvironment(int& argc, char**& argv, Options options = {});
  explicit MpiEnvironment(Options options = {});
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;
  /// MPI_Finalize; MPI_Abort instead when an exception is unwinding the stack of one of
  /// several ranks.
  ~MpiEnvironment();

  /// The thread support MPI granted (at least the one asked for).
  MpiThreading threading() const noexcept { return granted_; }

 private:
  void init(int* argc, char*** argv, Options options);
  MpiThreading granted_ = MpiThreading::single;
  int uncaught_at_start_ = 0;
};

/// The Communicator over an MPI communicator (by default a duplicate of MPI_COMM_WORLD,
/// so ctdl's messages never mix with the program's own), on host buffers.
class MpiComm {
 public:
  explicit MpiComm(const MpiEnvironment& environment, MPI_Comm base = MPI_COMM_WORLD);
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  /// Frees the communicator; calls abort_job instead when an exception is unwinding the
  /// stack and other ranks would wait for this one.
  ~MpiComm();

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  MPI_Comm handle() const noexcept { return comm_; }

  template <CommElement T>
  void all_reduce(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum);
  template <CommElement T>
  void reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp op = ReduceOp::sum);
  template <CommElement T>
  void all_gather(const T* send, T* recv, std::int64_t count);
  template <CommElement T>
  void broadcast(T* data, std::int64_t count, int root = 0);
  void barrier();

  /// An all_reduce in flight (MPI_Iallreduce): wait() finishes it (and divides for avg),
  /// test() asks MPI whether it is done, which also moves it along (MPI progresses
  /// non-blocking collectives inside its calls). Waits in its destructor if still pending:
  /// the buffer must not be freed under MPI. Move-only.
  class PendingReduce {
   public:
    PendingReduce() = default;
    PendingReduce(PendingReduce&& other) noexcept { *this = std::move(other); }
    PendingReduce& operator=(PendingReduce&& other) noexcept;
    ~PendingReduce();
    bool test();
    void wait();

   private:
    friend class MpiComm;
    const MpiComm* comm_ = nullptr;
    MPI_Request request_ = MPI_REQUEST_NULL;
    void (*finish_)(const MpiComm&, void*, std::int64_t) = nullptr;  // avg: divide by N
    void* data_ = nullptr;
    std::int64_t count_ = 0;
    void complete();
  };
  template <CommElement T>
  PendingReduce all_reduce_async(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum);

  /// Broadcasts raw bytes from root (NCCL's unique id, hashes of configurations).
  void broadcast_bytes(void* data, std::int64_t bytes, int root = 0);
  /// This rank's number among the ranks on its own machine (those that share memory:
  /// MPI_Comm_split_type) and how many they are: rank r of a node takes GPU r. Collective.
  struct NodePlace {
    int rank = 0, size = 1;
  };
  NodePlace node_place() const;
  /// Prints the message naming this rank and calls MPI_Abort on MPI_COMM_WORLD.
  [[noreturn]] void abort_job(const std::string& message);

 private:
  detail::CallSite site(const char* collective) const { return {"MpiComm", collective, rank_, size_}; }
  void check_mpi(int status, const detail::CallSite& site, const char* call) const;
  template <class T>
  MPI_Datatype datatype() const;
  template <class T>
  MPI_Op sum_op() const;
  int mpi_count(const detail::CallSite& site, std::int64_t count) const;
  template <class T>
  void divide(T* data, std::int64_t count) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int uncaught_at_start_ = std::uncaught_exceptions();
  MPI_Op bf16_sum_ = MPI_OP_NULL, fp16_sum_ = MPI_OP_NULL;
  int rank_ = 0, size_ = 1;
};

static_assert(AsyncCommunicator<MpiComm>);

// ---------------------------------------------------------------------------------------

namespace detail {

inline int mpi_thread_level(MpiThreading t) {
  switch (t) {
    case MpiThreading::single: return MPI_THREAD_SINGLE;
    case MpiThreading::funneled: return MPI_THREAD_FUNNELED;
    case MpiThreading::serialized: return MPI_THREAD_SERIALIZED;
    case MpiThreading::multiple: return MPI_THREAD_MULTIPLE;
  }
  return MPI_THREAD_SINGLE;
}

inline MpiThreading mpi_threading(int level) {
  if (level >= MPI_THREAD_MULTIPLE) return MpiThreading::multiple;
  if (level >= MPI_THREAD_SERIALIZED) return MpiThreading::serialized;
  if (level >= MPI_THREAD_FUNNELED) return MpiThreading::funneled;
  return MpiThreading::single;
}

inline std::string mpi_error_string(int status) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(status);
  return std::string(text, static_cast<std::size_t>(length));
}

/// inout[i] = in[i] + inout[i] for 16-bit floats T, added in float, rounded to T.
template <class T>
void mpi_half_sum(void* in, void* inout, int* length, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *length; ++i) b[i] = convert<T>(convert<float>(a[i]) + convert<float>(b[i]));
}

}  // namespace detail

inline MpiEnvironment::MpiEnvironment(int& argc, char**& argv, Options options) { init(&argc, &argv, options); }

inline MpiEnvironment::MpiEnvironment(Options options) { init(nullptr, nullptr, options); }

inline void MpiEnvironment::init(int* argc, char*** argv, Options options) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) throw Error("MpiEnvironment: MPI was finalised already in this process; it cannot start again");
  if (initialized) {
    throw Error("MpiEnvironment: MPI is already initialised in this process (make one MpiEnvironment, "
                "for the whole program)");
  }
  int granted = MPI_THREAD_SINGLE;
  const int status = MPI_Init_thread(argc, argv, detail::mpi_thread_level(options.threading), &granted);
  if (status != MPI_SUCCESS) throw Error("MpiEnvironment: MPI_Init_thread failed: " + detail::mpi_error_string(status));
  granted_ = detail::mpi_threading(granted);
  if (granted < detail::mpi_thread_level(options.threading)) {
    MPI_Finalize();
    throw Error("MpiEnvironment: MPI grants thread level " + std::to_string(granted) + ", less than the " +
                std::to_string(detail::mpi_thread_level(options.threading)) + " asked for");
  }
  uncaught_at_start_ = std::uncaught_exceptions();
}

inline MpiEnvironment::~MpiEnvironment() {
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) {  // alone, nobody waits: finalise and let the exception say what failed
      detail::print_abort(rank, size, "an exception left the scope of MpiEnvironment");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  MPI_Finalize();
}

inline MpiComm::MpiComm(const MpiEnvironment&, MPI_Comm base) {
  const detail::CallSite setup{"MpiComm", "MpiComm", 0, 1};
  check_mpi(MPI_Comm_dup(base, &comm_), setup, "MPI_Comm_dup");
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), setup, "MPI_Comm_set_errhandler");
  check_mpi(MPI_Comm_rank(comm_, &rank_), setup, "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm_, &size_), setup, "MPI_Comm_size");
  check_mpi(MPI_Op_create(&detail::mpi_half_sum<bf16>, 1, &bf16_sum_), site("MpiComm"), "MPI_Op_create (bf16 sum)");
  check_mpi(MPI_Op_create(&detail::mpi_half_sum<fp16>, 1, &fp16_sum_), site("MpiComm"), "MPI_Op_create (fp16 sum)");
}

inline MpiComm::~MpiComm() {
  // Unwinding: this rank stops communicating, and the other ranks would wait for it in
  // their next collective (MPI_Comm_free included): end the job instead.
  if (std::uncaught_exceptions() > uncaught_at_start_ && size_ > 1) {
    abort_job("an exception left the scope of MpiComm");
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // MPI freed everything already
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  if (fp16_sum_ != MPI_OP_NULL) MPI_Op_free(&fp16_sum_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

inline void MpiComm::check_mpi(int status, const detail::CallSite& site, const char* call) const {
  if (status != MPI_SUCCESS) site.fail(std::string(call) + " failed: " + detail::mpi_error_string(status));
}

template <class T>
MPI_Datatype MpiComm::datatype() const {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else return MPI_UINT16_T;  // bf16, fp16: 16-bit words, summed by the user ops
}

template <class T>
MPI_Op MpiComm::sum_op() const {
  if constexpr (std::is_same_v<T, float>) return MPI_SUM;
  else if constexpr (std::is_same_v<T, bf16>) return bf16_sum_;
  else return fp16_sum_;
}

inline int MpiComm::mpi_count(const detail::CallSite& site, std::int64_t count) const {
  if (count > INT_MAX) {
    site.fail("count " + std::to_string(count) + " exceeds MPI's per-call limit of " + std::to_string(INT_MAX) +
              " elements");
  }
  return static_cast<int>(count);
}

template <class T>
void MpiComm::divide(T* data, std::int64_t count) const {
  const float n = static_cast<float>(size_);
  for (std::int64_t i = 0; i < count; ++i) data[i] = convert<T>(convert<float>(data[i]) / n);
}

template <CommElement T>
void MpiComm::all_reduce(T* data, std::int64_t count, ReduceOp op) {
  const auto where = site("all_reduce");
  detail::check_in_place(where, data, count);
  const int n = mpi_count(where, count);
  if (n == 0) return;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, n, datatype<T>(), sum_op<T>(), comm_), where, "MPI_Allreduce");
  if (op == ReduceOp::avg) divide(data, count);
}

template <CommElement T>
void MpiComm::reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp op) {
  const auto where = site("reduce_scatter");
  const bool in_place = detail::check_reduce_scatter(where, send, recv, count);
  const std::int64_t shard = count / size_;
  const int n = mpi_count(where, shard);
  if (n == 0) return;
  if (in_place) {
    // MPI's in-place form leaves the shard at the start of the buffer; ctdl's (NCCL's)
    // keeps it at the rank's own offset: move it there.
    T* buffer = const_cast<T*>(send);  // in place: the send buffer is the caller's writable recv buffer
    check_mpi(MPI_Reduce_scatter_block(MPI_IN_PLACE, buffer, n, datatype<T>(), sum_op<T>(), comm_), where,
              "MPI_Reduce_scatter_block");
    if (recv != buffer) std::memmove(recv, buffer, static_cast<std::size_t>(shard) * sizeof(T));
  } else {
    check_mpi(MPI_Reduce_scatter_block(send, recv, n, datatype<T>(), sum_op<T>(), comm_), where,
              "MPI_Reduce_scatter_block");
  }
  if (op == ReduceOp::avg) divide(recv, shard);
}

template <CommElement T>
void MpiComm::all_gather(const T* send, T* recv, std::int64_t count) {
  const auto where = site("all_gather");
  const bool in_place = detail::check_all_gather(where, send, recv, count);
  const int n = mpi_count(where, count);
  if (n == 0) return;
  check_mpi(MPI_Allgather(in_place ? MPI_IN_PLACE : send, n, datatype<T>(), recv, n, datatype<T>(), comm_), where,
            "MPI_Allgather");
}

template <CommElement T>
void MpiComm::broadcast(T* data, std::int64_t count, int root) {
  const auto where = site("broadcast");
  detail::check_in_place(where, data, count);
  where.check_root(root);
  const int n = mpi_count(where, count);
  if (n == 0) return;
  check_mpi(MPI_Bcast(data, n, datatype<T>(), root, comm_), where, "MPI_Bcast");
}

template <CommElement T>
MpiComm::PendingReduce MpiComm::all_reduce_async(T* data, std::int64_t count, ReduceOp op) {
  const auto where = site("all_reduce_async");
  detail::check_in_place(where, data, count);
  const int n = mpi_count(where, count);
  PendingReduce pending;
  if (n == 0) return pending;
  pending.comm_ = this;
  pending.data_ = data;
  pending.count_ = count;
  if (op == ReduceOp::avg) {
    pending.finish_ = [](const MpiComm& comm, void* d, std::int64_t c) { comm.divide(static_cast<T*>(d), c); };
  }
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data, n, datatype<T>(), sum_op<T>(), comm_, &pending.request_), where,
            "MPI_Iallreduce");
  return pending;
}

inline MpiComm::PendingReduce& MpiComm::PendingReduce::operator=(PendingReduce&& other) noexcept {
  if (this != &other) {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
    comm_ = std::exchange(other.comm_, nullptr);
    request_ = std::exchange(other.request_, MPI_REQUEST_NULL);
    finish_ = std::exchange(other.finish_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

inline MpiComm::PendingReduce::~PendingReduce() {
  if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
}

inline void MpiComm::PendingReduce::complete() {
  if (finish_) finish_(*comm_, data_, count_);
  finish_ = nullptr;
}

inline bool MpiComm::PendingReduce::test() {
  if (request_ == MPI_REQUEST_NULL) return true;
  int done = 0;
  comm_->check_mpi(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), comm_->site("all_reduce_async"), "MPI_Test");
  if (done) complete();
  return done != 0;
}

inline void MpiComm::PendingReduce::wait() {
  if (request_ != MPI_REQUEST_NULL) {
    comm_->check_mpi(MPI_Wait(&request_, MPI_STATUS_IGNORE), comm_->site("all_reduce_async"), "MPI_Wait");
    complete();
  }
}

inline void MpiComm::barrier() { check_mpi(MPI_Barrier(comm_), site("barrier"), "MPI_Barrier"); }

inline void MpiComm::broadcast_bytes(void* data, std::int64_t bytes, int root) {
  const auto where = site("broadcast_bytes");
  where.check_count(bytes);
  where.check_buffer(data, bytes, "data");
  where.check_root(root);
  const int n = mpi_count(where, bytes);
  if (n == 0) return;
  check_mpi(MPI_Bcast(data, n, MPI_BYTE, root, comm_), where, "MPI_Bcast");
}

inline MpiComm::NodePlace MpiComm::node_place() const {
  const auto where = site("node_place");
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), where,
            "MPI_Comm_split_type");
  NodePlace place;
  const int rank_status = MPI_Comm_rank(node, &place.rank);
  const int size_status = MPI_Comm_size(node, &place.size);
  MPI_Comm_free(&node);
  check_mpi(rank_status, where, "MPI_Comm_rank");
  check_mpi(size_status, where, "MPI_Comm_size");
  return place;
}

inline void MpiComm::abort_job(const std::string& message) {
  detail::print_abort(rank_, size_, message);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] true if it did
}

}  // namespace ctdl::dist

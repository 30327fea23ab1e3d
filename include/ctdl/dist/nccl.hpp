#pragma once
// NcclComm: the Communicator (dist/communicator.hpp) over NCCL, one rank per GPU, on
// device buffers. Link ctdl::nccl (CMake; it exists when CUDA is on and defines
// CTDL_WITH_NCCL=1 where NCCL was found). Host code: g++ compiles it as well as nvcc.
//
//   NcclComm comm(0);                 // one rank on device 0, no MPI (size 1)
//   NcclComm comm(mpi_comm, device);  // rank and size of an MpiComm, one GPU each: rank 0
//                                     // makes the ncclUniqueId, MPI broadcasts it
//
// Every collective takes a trailing cudaStream_t (default nullptr, the legacy default
// stream = cuda::current_stream() of kernels/cuda/common.cuh, which device memory and
// ctdl's kernels use) and is asynchronous on it, as NCCL's are: the result is there for
// work queued later on that stream. barrier() alone waits: it synchronises the host with
// the stream after an all-reduce of one value.
//
// all_reduce_async runs the reduction on a stream of the communicator's own (NCCL's
// stream, non-blocking), after the work queued so far on `stream`: kernels queued later on
// `stream` run beside it. That is how gradient buckets reduce while backward goes on
// (dist/data_parallel.hpp). Its PendingReduce's wait() makes `stream` wait for the
// reduction (work queued later there sees the result; the host does not wait); test()
// says whether the reduction has finished.
//
// Types: float = ncclFloat, bf16 = ncclBfloat16, fp16 = ncclFloat16; sum = ncclSum,
// avg = ncclAvg (NCCL >= 2.10). Buffers must be device (or managed) memory of the
// communicator's GPU: a host pointer is an Error naming the collective, not a crash
// inside NCCL. NCCL failures throw ctdl::Error naming the call and ncclGetErrorString's
// text.
//
// One rank per GPU is NCCL's rule (two ranks of one communicator on one GPU is an error),
// so a single-GPU machine can run NcclComm with one rank only.

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/dist/communicator.hpp"
#if defined(CTDL_WITH_MPI)
#include "ctdl/dist/mpi.hpp"
#endif

static_assert(NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0), "ctdl's NcclComm needs NCCL 2.10 or newer (ncclAvg, ncclBfloat16)");

namespace ctdl::dist {

class NcclComm {
 public:
  /// A communicator of one rank on `device`, made without MPI.
  explicit NcclComm(int device = 0);
#if defined(CTDL_WITH_MPI)
  /// Rank mpi.rank() of mpi.size() on `device` (this rank's GPU; one per rank). Collective
  /// over mpi: every rank constructs it together. `mpi` must outlive this communicator if
  /// abort_job is to end the other ranks through MPI_Abort.
  NcclComm(MpiComm& mpi, int device);
#endif
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;
  /// Frees the communicator; calls abort_job instead when an exception is unwinding the
  /// stack and other ranks would wait for this one.
  ~NcclComm();

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  int device() const noexcept { return device_; }
  ncclComm_t handle() const noexcept { return comm_; }

  template <CommElement T>
  void all_reduce(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum, cudaStream_t stream = nullptr);
  template <CommElement T>
  void reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp op = ReduceOp::sum,
                      cudaStream_t stream = nullptr);
  template <CommElement T>
  void all_gather(const T* send, T* recv, std::int64_t count, cudaStream_t stream = nullptr);
  template <CommElement T>
  void broadcast(T* data, std::int64_t count, int root = 0, cudaStream_t stream = nullptr);
  /// Returns once every rank has reached it and this rank's work on `stream` is done.
  void barrier(cudaStream_t stream = nullptr);

  /// An all_reduce started on the communicator's stream (see the header's comment).
  class PendingReduce {
   public:
    PendingReduce(PendingReduce&& other) noexcept
        : done_(std::exchange(other.done_, nullptr)), stream_(other.stream_), comm_(other.comm_) {}
    PendingReduce& operator=(PendingReduce&& other) noexcept {
      std::swap(done_, other.done_);
      stream_ = other.stream_;
      comm_ = other.comm_;
      return *this;
    }
    ~PendingReduce() {
      if (done_) cudaEventDestroy(done_);  // released by the runtime once the reduction is done
    }
    /// Whether the reduction has finished.
    bool test();
    /// Work queued on the starting stream from now on runs after the reduction.
    void wait();

   private:
    friend class NcclComm;
    PendingReduce(cudaEvent_t done, cudaStream_t stream, const NcclComm& comm)
        : done_(done), stream_(stream), comm_(&comm) {}
    cudaEvent_t done_ = nullptr;
    cudaStream_t stream_ = nullptr;
    const NcclComm* comm_ = nullptr;
  };
  template <CommElement T>
  PendingReduce all_reduce_async(T* data, std::int64_t count, ReduceOp op = ReduceOp::sum,
                                 cudaStream_t stream = nullptr);
  /// The stream all_reduce_async reduces on.
  cudaStream_t reduce_stream() const noexcept { return reduce_stream_; }

  /// Collectives take device memory (train::fit asks, to refuse host-only communicators
  /// for a model on a GPU).
  static constexpr bool device_buffers() noexcept { return true; }
  /// Prints the message naming this rank, aborts the NCCL communicator (so no kernel waits
  /// for a dead peer) and ends the job: MPI_Abort where bootstrapped over MPI, else exit(1).
  [[noreturn]] void abort_job(const std::string& message);

 private:
  detail::CallSite site(const char* collective) const { return {"NcclComm", collective, rank_, size_}; }
  void check_nccl(ncclResult_t status, const detail::CallSite& where, const char* call) const;
  void check_cuda(cudaError_t status, const detail::CallSite& where, const char* call) const;
  void check_device_memory(const detail::CallSite& where, const void* p, std::int64_t count,
                           const char* which) const;
  void init(const ncclUniqueId& id);
  template <class T>
  static ncclDataType_t datatype();
  static ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::avg ? ncclAvg : ncclSum; }

  ncclComm_t comm_ = nullptr;
  float* barrier_value_ = nullptr;  // one float on the device for barrier()'s all-reduce
  cudaStream_t reduce_stream_ = nullptr;  // all_reduce_async's (non-blocking)
  cudaEvent_t queued_ = nullptr;          // marks the starting stream's work before a reduction
  int rank_ = 0, size_ = 1, device_ = 0;
  int uncaught_at_start_ = std::uncaught_exceptions();
#if defined(CTDL_WITH_MPI)
  MpiComm* mpi_ = nullptr;
#endif
};

static_assert(AsyncCommunicator<NcclComm>);

// ---------------------------------------------------------------------------------------

inline void NcclComm::check_nccl(ncclResult_t status, const detail::CallSite& where, const char* call) const {
  if (status != ncclSuccess) where.fail(std::string(call) + " failed: " + ncclGetErrorString(status));
}

inline void NcclComm::check_cuda(cudaError_t status, const detail::CallSite& where, const char* call) const {
  if (status != cudaSuccess) where.fail(std::string(call) + " failed: " + cudaGetErrorString(status));
}

inline NcclComm::NcclComm(int device) : device_(device) {
  const auto where = site("NcclComm");
  check_cuda(cudaSetDevice(device), where, ("cudaSetDevice(" + std::to_string(device) + ")").c_str());
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), where, "ncclGetUniqueId");
  init(id);
}

#if defined(CTDL_WITH_MPI)
inline NcclComm::NcclComm(MpiComm& mpi, int device) : rank_(mpi.rank()), size_(mpi.size()), device_(device), mpi_(&mpi) {
  const auto where = site("NcclComm");
  check_cuda(cudaSetDevice(device), where, ("cudaSetDevice(" + std::to_string(device) + ")").c_str());
  ncclUniqueId id{};
  if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), where, "ncclGetUniqueId");
  mpi.broadcast_bytes(&id, sizeof id, 0);
  init(id);
}
#endif

inline void NcclComm::init(const ncclUniqueId& id) {
  const auto where = site("NcclComm");
  check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), where, "ncclCommInitRank");
  cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&barrier_value_), sizeof(float));
  const char* call = "cudaMalloc (barrier value)";
  if (status == cudaSuccess) {
    status = cudaStreamCreateWithFlags(&reduce_stream_, cudaStreamNonBlocking);
    call = "cudaStreamCreateWithFlags (reduction stream)";
  }
  if (status == cudaSuccess) {
    status = cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming);
    call = "cudaEventCreateWithFlags";
  }
  if (status != cudaSuccess) {
    if (reduce_stream_) cudaStreamDestroy(reduce_stream_);
    if (barrier_value_) cudaFree(barrier_value_);
    ncclCommDestroy(comm_);
    check_cuda(status, where, call);
  }
}

inline NcclComm::~NcclComm() {
  // Unwinding on one of several ranks: the peers would wait for this one (and
  // ncclCommDestroy may wait for them): end the job instead.
  if (std::uncaught_exceptions() > uncaught_at_start_ && size_ > 1) {
    abort_job("an exception left the scope of NcclComm");
  }
  if (comm_) ncclCommDestroy(comm_);
  if (queued_) cudaEventDestroy(queued_);
  if (reduce_stream_) cudaStreamDestroy(reduce_stream_);
  if (barrier_value_) cudaFree(barrier_value_);
}

inline void NcclComm::check_device_memory(const detail::CallSite& where, const void* p, std::int64_t count,
                                          const char* which) const {
  where.check_buffer(p, count, which);
  if (count == 0) return;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();  // the failed query left its error as the last error: clear it
    where.fail(std::string(which) + " is not memory CUDA knows");
  }
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    where.fail(std::string(which) + " is host memory; NcclComm needs device memory");
  }
  if (attributes.device != device_) {
    where.fail(std::string(which) + " is on device " + std::to_string(attributes.device) +
               ", the communicator's is device " + std::to_string(device_));
  }
}

template <class T>
ncclDataType_t NcclComm::datatype() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat;
  else if constexpr (std::is_same_v<T, bf16>) return ncclBfloat16;
  else return ncclFloat16;
}

template <CommElement T>
void NcclComm::all_reduce(T* data, std::int64_t count, ReduceOp op, cudaStream_t stream) {
  const auto where = site("all_reduce");
  detail::check_in_place(where, data, count);
  check_device_memory(where, data, count, "data");
  if (count == 0) return;
  check_nccl(ncclAllReduce(data, data, static_cast<std::size_t>(count), datatype<T>(), nccl_op(op), comm_, stream),
             where, "ncclAllReduce");
}

template <CommElement T>
void NcclComm::reduce_scatter(const T* send, T* recv, std::int64_t count, ReduceOp op, cudaStream_t stream) {
  const auto where = site("reduce_scatter");
  detail::check_reduce_scatter(where, send, recv, count);  // NCCL's in-place form is ctdl's
  const std::int64_t shard = count / size_;
  check_device_memory(where, send, count, "send buffer");
  check_device_memory(where, recv, shard, "receive buffer");
  if (shard == 0) return;
  check_nccl(ncclReduceScatter(send, recv, static_cast<std::size_t>(shard), datatype<T>(), nccl_op(op), comm_, stream),
             where, "ncclReduceScatter");
}

template <CommElement T>
void NcclComm::all_gather(const T* send, T* recv, std::int64_t count, cudaStream_t stream) {
  const auto where = site("all_gather");
  detail::check_all_gather(where, send, recv, count);  // NCCL's in-place form is ctdl's
  check_device_memory(where, send, count, "send buffer");
  check_device_memory(where, recv, count * size_, "receive buffer");
  if (count == 0) return;
  check_nccl(ncclAllGather(send, recv, static_cast<std::size_t>(count), datatype<T>(), comm_, stream), where,
             "ncclAllGather");
}

template <CommElement T>
void NcclComm::broadcast(T* data, std::int64_t count, int root, cudaStream_t stream) {
  const auto where = site("broadcast");
  detail::check_in_place(where, data, count);
  where.check_root(root);
  check_device_memory(where, data, count, "data");
  if (count == 0) return;
  check_nccl(ncclBroadcast(data, data, static_cast<std::size_t>(count), datatype<T>(), root, comm_, stream), where,
             "ncclBroadcast");
}

template <CommElement T>
auto NcclComm::all_reduce_async(T* data, std::int64_t count, ReduceOp op, cudaStream_t stream) -> PendingReduce {
  const auto where = site("all_reduce_async");
  detail::check_in_place(where, data, count);
  check_device_memory(where, data, count, "data");
  cudaEvent_t done = nullptr;
  check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), where, "cudaEventCreateWithFlags");
  PendingReduce pending(done, stream, *this);  // owns the event from here
  // The reduction stream waits for what `stream` has queued (the gradients copied in).
  check_cuda(cudaEventRecord(queued_, stream), where, "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(reduce_stream_, queued_, 0), where, "cudaStreamWaitEvent");
  if (count > 0) {
    check_nccl(ncclAllReduce(data, data, static_cast<std::size_t>(count), datatype<T>(), nccl_op(op), comm_,
                             reduce_stream_),
               where, "ncclAllReduce");
  }
  check_cuda(cudaEventRecord(done, reduce_stream_), where, "cudaEventRecord");
  return pending;
}

inline bool NcclComm::PendingReduce::test() {
  const cudaError_t status = cudaEventQuery(done_);
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: clear it
    return false;
  }
  comm_->check_cuda(status, comm_->site("all_reduce_async"), "cudaEventQuery");
  return true;
}

inline void NcclComm::PendingReduce::wait() {
  comm_->check_cuda(cudaStreamWaitEvent(stream_, done_, 0), comm_->site("all_reduce_async"), "cudaStreamWaitEvent");
}

inline void NcclComm::barrier(cudaStream_t stream) {
  const auto where = site("barrier");
  check_nccl(ncclAllReduce(barrier_value_, barrier_value_, 1, ncclFloat, ncclSum, comm_, stream), where,
             "ncclAllReduce");
  check_cuda(cudaStreamSynchronize(stream), where, "cudaStreamSynchronize");
}

inline void NcclComm::abort_job(const std::string& message) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
#if defined(CTDL_WITH_MPI)
  if (mpi_) mpi_->abort_job(message);  // prints the message and ends every rank
#endif
  detail::print_abort(rank_, size_, message);
  std::exit(1);
}

}  // namespace ctdl::dist

#pragma once
// Data-parallel training: every rank holds the whole model, runs forward and backward on
// its slice of each global batch (data::Batcher's rank / world_size), and the ranks
// average their gradients before anyone updates. With N ranks at b rows each of span
// features, the averaged gradient is the gradient of the mean loss over the N*b rows: the
// step one process takes at batch N*b (up to the order of float additions). For token
// features whose loss is the mean over each micro-batch's scored words (first-piece
// labels), it is the mean of the ranks' means: one process's step only up to the
// micro-batches' word counts.
//
//   GradientAverager  the averaging, in fused buckets. Parameters are grouped, in reverse
//                     order (backward reaches the last layers first), into buckets of
//                     about bucket_bytes; each bucket is one all-reduce. With overlap, a
//                     bucket's all-reduce starts during backward as soon as no tape entry
//                     left can add to its parameters' gradients (Tape::after_each_entry:
//                     an entry that used a parameter holds a reference to it, a Var or a
//                     GradRef, until it is destroyed), so communication runs under the
//                     rest of backward;
//                     finish() waits for them all and writes the averages back. Buckets
//                     start in bucket order on every rank, as collectives must.
//                     A parameter that got no gradient on any rank keeps none; one that
//                     got a gradient on some rank gets the average (zeros elsewhere).
//   broadcast_parameters   rank 0's values to every rank (before the first step).
//   require_same_on_all_ranks  (dist/agreement.hpp) each rank's settings against rank 0's.
//
// A model on a CUDA device (D = Cuda) is averaged the same way, by the same code, over a
// communicator that takes device buffers (NcclComm): the buckets are device memory, the
// gradients are copied in on the device and each bucket's all-reduce (ncclAvg) runs on
// the communicator's stream while backward goes on; finish() makes the compute stream
// wait for it and copies the averages back. The host waits for the device only where
// this rank had no gradient for a parameter (to read whether any rank had one).
//
// The trainer (train/classifier.hpp) sees a GradientSync: begin(tape) before the forward
// of the micro-batch that completes a step's gradients (accumulated micro-batches before
// it stay local), finish() before its gradients are checked, clipped and applied. So
// clipping and the loss scaler's overflow test see the averaged gradients: every rank
// takes the same decision.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/core/device.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/dist/agreement.hpp"
#include "ctdl/dist/communicator.hpp"
#include "ctdl/nn/module.hpp"

namespace ctdl::dist {

/// What a trainer calls around the backward that completes a step's gradients.
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  /// Before the forward whose backward completes the step (no entry on `tape` yet).
  virtual void begin(Tape& tape) = 0;
  /// After that backward: the gradients are the average over the ranks when it returns.
  virtual void finish() = 0;
};

struct DataParallelOptions {
  /// Gradients fused per all-reduce: PyTorch DDP's 25 MiB (Horovod, which the original
  /// pipeline used, fuses what is ready into a buffer of 64 MB by default).
  std::int64_t bucket_bytes = std::int64_t{25} << 20;
  bool overlap = true;  ///< start each bucket's all-reduce during backward, as soon as it is complete
  /// ZeRO stage 1 (dist/sharded_optimizer.hpp): the optimizer state split across the
  /// ranks, gradients reduce-scattered, weights all-gathered (train::fit; the buckets and
  /// overlap above are then unused).
  bool shard_optimizer = false;
};

/// Throws unless `comm` takes the memory the model's parameters live in: device buffers
/// (NcclComm) for a model on a CUDA device, host memory for one on the CPU. `who` names
/// the caller in the message.
template <nn::Module M, class C>
void require_model_memory(const C& comm, const char* who) {
  constexpr bool on_gpu = std::is_same_v<nn::device_of_t<M>, Cuda>;
  if (on_gpu == takes_device_buffers(comm)) return;
  throw Error(std::string(who) +
              (on_gpu ? ": the model is on a CUDA device and the communicator takes host memory: average a GPU "
                        "model's gradients over dist::NcclComm (one GPU per rank)"
                      : ": the model is on the CPU and the communicator takes device memory: use a host "
                        "communicator (MpiComm) for a CPU model"));
}

/// Averages a model's float gradients over the ranks of `comm`, in buckets. Holds
/// references to the model's parameters: the model must outlive it and stay in place.
/// D: the model's device; on Cuda, `comm` must take device buffers.
template <AsyncCommunicator C, Device D = Cpu>
class GradientAverager final : public GradientSync {
  static constexpr bool on_device = std::is_same_v<D, Cuda>;

 public:
  using Options = DataParallelOptions;

  template <nn::Module M>
  GradientAverager(C& comm, M& model, Options options = {});
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;
  /// A backward stopped by an error can leave reductions in flight. On the device the
  /// buffers go back to the pool on the compute stream, which first waits for them (the
  /// host does not). Host buffers are not waited for: with a peer gone that wait would
  /// never end, and the job is being aborted anyway.
  ~GradientAverager() override {
    if constexpr (on_device) {
      for (auto& b : buckets_)
        if (b.pending) {
          try {
            b.pending->wait();
          } catch (...) {  // a failed reduction: already on its way out
          }
        }
    }
  }

  void begin(Tape& tape) override;
  void finish() override;

  /// The buckets, as parameter counts and float elements (for logs and tests).
  struct BucketInfo {
    std::size_t parameters;
    std::int64_t elements;
  };
  std::vector<BucketInfo> buckets() const;
  /// Buckets whose all-reduce started during the last backward (before finish()).
  std::size_t started_during_backward() const { return started_in_backward_; }

 private:
  struct Param {
    std::function<long()> use_count;       // references to the parameter (value and node)
    std::function<bool()> has_grad;
    std::function<float*()> grad_data;      // allocates a zero gradient when there is none
    std::int64_t size = 0;
    std::int64_t offset = 0;  // in its bucket's buffer
    long at_rest = 0;         // use_count with no tape entry holding it
  };
  // The buffer's storage: host memory, or device memory on D = Cuda.
  using Storage = std::conditional_t<on_device, Tensor<float, Shape<dyn>, D>, std::vector<float>>;
  struct Bucket {
    std::vector<std::size_t> params;  // indices into params_
    Storage buffer;                   // gradients, then one has-gradient flag per parameter
    // On the device: this rank's flags, uploaded when they change (copied into the
    // buffer's tail on the device before each all-reduce, which overwrites that tail).
    std::vector<float> flags, uploaded;  // this step's; those device_flags holds
    std::optional<Storage> device_flags;
    std::optional<decltype(std::declval<C&>().all_reduce_async(std::declval<float*>(), std::int64_t{},
                                                               ReduceOp::sum))>
        pending;
    float* data() { return buffer.data(); }
    std::int64_t size() const { return static_cast<std::int64_t>(buffer.size()); }
  };

  bool complete(const Param& p) const { return p.use_count() <= p.at_rest; }
  void start(Bucket& b);
  void start_ready();

  C& comm_;
  Options options_;
  std::vector<Param> params_;
  std::vector<Bucket> buckets_;
  std::size_t next_ = 0;  // the next bucket to start
  bool armed_ = false;
  std::size_t started_in_backward_ = 0;
};

template <AsyncCommunicator C, nn::Module M>
GradientAverager(C&, M&, DataParallelOptions = {}) -> GradientAverager<C, nn::device_of_t<M>>;

/// Rank `root`'s parameter values to every rank (on a device: `comm` takes device buffers).
template <Communicator C, nn::Module M>
void broadcast_parameters(C& comm, M& model, int root = 0);

// ============================================================================

template <AsyncCommunicator C, Device D>
template <nn::Module M>
GradientAverager<C, D>::GradientAverager(C& comm, M& model, Options options) : comm_(comm), options_(options) {
  static_assert(std::is_same_v<nn::device_of_t<M>, D>, "GradientAverager<C, D>: D must be the model's device");
  if (options_.bucket_bytes < 1) throw Error("GradientAverager: bucket_bytes must be positive");
  require_model_memory<M>(comm, "GradientAverager");
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    using V = std::remove_cvref_t<decltype(p)>;
    static_assert(std::is_same_v<typename V::value_type, float>,
                  "GradientAverager: parameters are float (the master weights of every precision policy)");
    if (!p.requires_grad()) return;
    // Entries hold a parameter either as a Var (its value and node: value_use_count) or
    // as a GradRef (the node alone: node_ptr().use_count()); the sum counts both.
    V* var = &p;
    params_.push_back({[var] { return var->value_use_count() + var->node_ptr().use_count(); },
                       [var] { return var->has_grad(); },
                       [var] { return var->node_ptr()->grad_data(); }, p.value().size()});
  });
  // Reverse order: the last parameters' gradients are complete first.
  const std::int64_t per_bucket = std::max<std::int64_t>(1, options_.bucket_bytes / std::int64_t{sizeof(float)});
  Bucket current;
  std::int64_t filled = 0;
  for (std::size_t i = params_.size(); i-- > 0;) {
    if (!current.params.empty() && filled + params_[i].size > per_bucket) {
      buckets_.push_back(std::move(current));
      current = Bucket{};
      filled = 0;
    }
    params_[i].offset = filled;
    filled += params_[i].size;
    current.params.push_back(i);
  }
  if (!current.params.empty()) buckets_.push_back(std::move(current));
  for (auto& b : buckets_) {
    std::int64_t elements = 0;
    for (const auto i : b.params) elements += params_[i].size;
    const auto length = static_cast<index_t>(elements + static_cast<std::int64_t>(b.params.size()));
    if constexpr (on_device) b.buffer = Storage({length});
    else b.buffer.assign(static_cast<std::size_t>(length), 0.f);
  }
}

template <AsyncCommunicator C, Device D>
void GradientAverager<C, D>::begin(Tape& tape) {
  if (tape.size() != 0) throw Error("GradientAverager::begin: call it before the forward (the tape has entries)");
  for (auto& p : params_) p.at_rest = p.use_count();
  next_ = 0;
  started_in_backward_ = 0;
  armed_ = options_.overlap;  // one rank too: it then runs as N ranks would (the tests use that)
  if (armed_) {
    tape.after_each_entry([this] {
      if (!armed_) return;
      start_ready();
      for (std::size_t i = 0; i < next_; ++i) (void)buckets_[i].pending->test();  // MPI moves collectives along inside its calls
    });
  }
}

template <AsyncCommunicator C, Device D>
void GradientAverager<C, D>::start(Bucket& b) {
  const auto count = static_cast<std::int64_t>(b.params.size());
  float* buffer = b.data();
  float* flag = buffer + (b.size() - count);
  b.flags.resize(b.params.size());
  for (std::size_t k = 0; k < b.params.size(); ++k) {
    const Param& p = params_[b.params[k]];
    const auto bytes = static_cast<std::size_t>(p.size) * sizeof(float);
    b.flags[k] = p.has_grad() ? 1.f : 0.f;
    if constexpr (on_device) {  // queued on the compute stream, after the backward that made them
      if (b.flags[k] != 0.f) DeviceAllocator<D>::copy(buffer + p.offset, p.grad_data(), bytes);
      else DeviceAllocator<D>::fill(buffer + p.offset, static_cast<std::size_t>(p.size), 0.f);
    } else {
      if (b.flags[k] != 0.f) std::memcpy(buffer + p.offset, p.grad_data(), bytes);
      else std::fill(buffer + p.offset, buffer + p.offset + p.size, 0.f);
    }
  }
  if constexpr (on_device) {
    // A host-to-device copy waits for the compute stream: only when the flags change
    // (the first step; a parameter that got a gradient in one step and none in another).
    if (!b.device_flags || b.uploaded != b.flags) {
      b.device_flags.emplace(Storage({static_cast<index_t>(count)}));
      DeviceAllocator<D>::copy_from_host(b.device_flags->data(), b.flags.data(), b.flags.size() * sizeof(float));
      b.uploaded = b.flags;
    }
    DeviceAllocator<D>::copy(flag, b.device_flags->data(), b.flags.size() * sizeof(float));
    // The average directly (ncclAvg): a flag is then the share of ranks that had a gradient.
    b.pending.emplace(comm_.all_reduce_async(buffer, b.size(), ReduceOp::avg));
  } else {
    std::copy(b.flags.begin(), b.flags.end(), flag);
    b.pending.emplace(comm_.all_reduce_async(buffer, b.size(), ReduceOp::sum));
  }
}

template <AsyncCommunicator C, Device D>
void GradientAverager<C, D>::start_ready() {
  while (next_ < buckets_.size()) {
    Bucket& b = buckets_[next_];
    if (!std::all_of(b.params.begin(), b.params.end(), [&](std::size_t i) { return complete(params_[i]); })) return;
    start(b);
    ++next_;
    ++started_in_backward_;
  }
}

template <AsyncCommunicator C, Device D>
void GradientAverager<C, D>::finish() {
  armed_ = false;
  while (next_ < buckets_.size()) start(buckets_[next_++]);
  next_ = 0;
  const float ranks = static_cast<float>(comm_.size());
  for (auto& b : buckets_) {
    b.pending->wait();
    b.pending.reset();
    const float* buffer = b.data();
    const auto count = static_cast<std::int64_t>(b.params.size());
    if constexpr (on_device) {
      // Where this rank had a gradient, the averaged flag is at least 1/N: copy back
      // without looking. Elsewhere read the flags (the host waits for the reduction).
      std::vector<float> any = b.flags;
      if (std::find(b.flags.begin(), b.flags.end(), 0.f) != b.flags.end())
        DeviceAllocator<D>::copy_to_host(any.data(), buffer + (b.size() - count), any.size() * sizeof(float));
      for (std::size_t k = 0; k < b.params.size(); ++k) {
        if (any[k] == 0.f) continue;  // no rank has a gradient: none is made
        const Param& p = params_[b.params[k]];
        DeviceAllocator<D>::copy(p.grad_data(), buffer + p.offset, static_cast<std::size_t>(p.size) * sizeof(float));
      }
    } else {
      const float* flag = buffer + (b.size() - count);
      for (std::size_t k = 0; k < b.params.size(); ++k) {
        if (flag[k] == 0.f) continue;  // no rank has a gradient: none is made
        const Param& p = params_[b.params[k]];
        float* g = p.grad_data();
        for (std::int64_t i = 0; i < p.size; ++i) g[i] = buffer[p.offset + i] / ranks;
      }
    }
  }
}

template <AsyncCommunicator C, Device D>
auto GradientAverager<C, D>::buckets() const -> std::vector<BucketInfo> {
  std::vector<BucketInfo> out;
  for (const auto& b : buckets_) {
    std::int64_t elements = 0;
    for (const auto i : b.params) elements += params_[i].size;
    out.push_back({b.params.size(), elements});
  }
  return out;
}

template <Communicator C, nn::Module M>
void broadcast_parameters(C& comm, M& model, int root) {
  require_model_memory<M>(comm, "broadcast_parameters");
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    auto& v = p.value();  // non-const: marks the value changed (weights kept reordered are remade)
    comm.broadcast(v.data(), v.size(), root);
  });
}

}  // namespace ctdl::dist

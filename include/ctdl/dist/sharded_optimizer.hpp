#pragma once
// ZeRO stage 1 (Rajbhandari et al. 2020): data parallel with the optimizer's state split
// across the ranks. Every rank still holds all the weights and computes all gradients;
// what it no longer holds is the optimizer's moments of the weights other ranks update.
//
// The parameters, in visiting order, are laid end to end in one flat vector of P floats,
// padded to a multiple of the N ranks; rank r owns the slice [r s, (r+1) s), s = P / N.
// A step:
//   finish()   the gradients, laid out alike, are reduce-scattered (averaged): rank r
//              receives the average of its slice only;
//   grads_finite(), grad_norm()   the loss scaler's test and the clip norm, computed on
//              the slices and combined over the ranks (every rank gets the same answer);
//   step()     the wrapped optimizer updates this rank's slice, as pieces (the part of
//              each parameter that falls in the slice, one Var each); the slices of the
//              new weights are all-gathered, and every rank copies them into its model.
// The arithmetic per element is the wrapped optimizer's, on the same averaged gradient,
// so ZeRO-1 takes the steps plain data parallel takes (tests/dist/mpi_data_parallel.cpp
// checks it), while each rank's optimizer state is 1/N of the whole (state_bytes()).
//
// Only optimizers whose update of an element reads that element alone (Opt::elementwise:
// AdamW, Sgd) can be sliced across tensors. LAMB's trust ratio needs each tensor's whole
// norm, which slices split; it is refused at compile time.
//
// Checkpoints hold the whole state: gather_state() (collective) assembles it in an
// optimizer of the wrapped type, scatter_state() takes this rank's slice back from one.
// Both need the moments as m() and v() (AdamW; not Sgd, whose sharded state cannot be
// checkpointed).
// A checkpoint written by N ranks resumes on any number of ranks, or on one process.
//
// A model on a CUDA device (D = Cuda; the communicator takes device buffers: NcclComm)
// is sharded the same way with the flat vectors in device memory, and its step is the
// fused one of optim::DeviceStep (kernels/cuda/optim.cuh) on this rank's slice:
//   finish()   as above, on the device (the reduce-scatter is ncclAvg);
//   apply()    the slice's sum of squared gradients, gathered from every rank (each
//              rank's double, moved bit for bit) and added in one fixed order on the
//              device; the step's decision (finiteness, loss scaling, clipping) from that
//              total; the fused AdamW or SGD update of the slice; the all-gather of the
//              weights into the model. One host wait per step (the outcome, for the log),
//              as DeviceStep; plus one to read which parameters have a gradient on some
//              rank where this rank lacks one.
// With one rank it takes DeviceStep's steps bit for bit (the slice is every parameter);
// tests/gpu/test_nccl_data_parallel.cu checks that. The moments live on the device, a
// slice of them per rank (state_bytes()); the wrapped optimizer gives the options and
// the step count.

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/core/device.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/dist/communicator.hpp"
#include "ctdl/dist/data_parallel.hpp"
#include "ctdl/nn/module.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/optim/device_step.hpp"
#include "ctdl/optim/optimizer.hpp"
#include "ctdl/optim/sgd.hpp"
#include "ctdl/precision/loss_scaler.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/optim.cuh"
#endif

namespace ctdl::dist {

/// What the trainer asks of an optimizer that holds only a slice of the gradients
/// (train/classifier.hpp uses these instead of reading the model's own gradients).
template <class O>
concept ShardedUpdate = requires(O& o, float scale) {
  { o.grads_finite() } -> std::same_as<bool>;
  { o.grad_norm(scale) } -> std::same_as<double>;
};

/// The same for a model on a CUDA device: the optimizer takes the whole step (the
/// decisions on the device, as optim::DeviceStep).
template <class O>
concept DeviceShardedUpdate =
    requires(O& o, float lr, precision::LossScaler& scaler, const optim::DeviceStepOptions& options) {
      { o.apply(lr, scaler, options) } -> std::same_as<optim::DeviceStepOutcome>;
    };

namespace detail {
/// One part of a parameter that falls in this rank's slice, as a Var the wrapped optimizer updates.
struct ShardPiece {
  Var<float, Shape<dyn>> weight;
  static constexpr std::array names{"weight"};
};
/// The pieces of this rank's slice, as a module the wrapped optimizer steps.
struct ShardPieces {
  std::vector<ShardPiece> piece;
  static constexpr std::array names{"piece"};
};
}  // namespace detail

/// D: the model's device; on Cuda, `comm` must take device buffers (NcclComm).
template <class Opt, Communicator C, Device D = Cpu>
class ShardedOptimizer final : public GradientSync {
  static_assert(Opt::elementwise,
                "ShardedOptimizer: the wrapped optimizer must update each element from that element alone (AdamW, "
                "Sgd); LAMB's trust ratio needs whole-tensor norms, which the slices split");
  static constexpr bool on_device = ops::on_cuda<D>;

 public:
  /// Holds references to the model's parameters: the model must outlive it and stay in place.
  template <nn::Module M>
  ShardedOptimizer(C& comm, M& model, Opt optimizer = {});

  // GradientSync: nothing to do before the forward; finish() reduce-scatters.
  void begin(Tape&) override {}
  void finish() override;

  // (The constrained members forward to private ones: clang 14 cannot match an
  // out-of-line definition whose requires-clause names a class member.)

  /// Whether every rank's slice of the averaged gradient is finite (collective).
  bool grads_finite()
    requires(!on_device)
  {
    return grads_finite_on_host();
  }
  /// The global L2 norm of the averaged gradients times grad_scale (collective; the
  /// same bits on every rank: the ranks' partial sums are added in rank order).
  double grad_norm(float grad_scale = 1.f)
    requires(!on_device)
  {
    return grad_norm_on_host(grad_scale);
  }
  /// Updates this rank's slice with the wrapped optimizer, then all-gathers the weights
  /// into `model` (collective). The model must be the one given to the constructor.
  template <nn::Module M>
  void step(M& model, float lr, float grad_scale = 1.f)
    requires(!on_device)
  {
    (void)model;  // its parameters are reached through params_ (the constructor's model)
    step_on_host(lr, grad_scale);
  }

  /// (On a CUDA device) the whole step, as optim::DeviceStep::apply, on this rank's slice
  /// (collective): decides it from every rank's gradients, updates the slice, all-gathers
  /// the weights into the model; updates `scaler` and the step count alike on every rank.
  optim::DeviceStepOutcome apply(float lr, precision::LossScaler& scaler, const optim::DeviceStepOptions& options)
    requires on_device
  {
    return apply_on_device(lr, scaler, options);
  }

  std::int64_t steps() const { return inner_.steps(); }
  /// The wrapped optimizer, holding the state of this rank's slice only.
  const Opt& shard_optimizer() const { return inner_; }
  /// This rank's slice: [begin, end) of the flat parameter vector.
  std::int64_t slice_begin() const { return slice_ * comm_.rank(); }
  std::int64_t slice_end() const { return slice_ * (comm_.rank() + 1); }
  /// The bytes of optimizer state this rank holds (the wrapped optimizer's slots).
  std::int64_t state_bytes() const;

  /// The whole optimizer state assembled on every rank into `whole` (collective; for
  /// checkpoints). Opt must expose its per-parameter moments as m() and v().
  void gather_state(Opt& whole)
    requires requires(Opt& o) { o.m(); o.v(); o.set_steps(std::int64_t{}); };
  /// This rank's slice of a whole state (a resumed checkpoint's); no communication.
  void scatter_state(Opt& whole)
    requires requires(Opt& o) { o.m(); o.v(); o.set_steps(std::int64_t{}); };

 private:
  struct Param {
    std::function<bool()> has_grad;
    std::function<const float*()> grad;      // the model's gradient (has_grad() true)
    std::function<const float*()> value;
    std::function<float*()> value_for_writing;  // marks the value changed
    std::int64_t size = 0;
    std::int64_t offset = 0;  // in the flat vector
    bool weight_decay = true;  // the parameter's own metadata (set by the layer that owns it), given to its pieces
  };
  struct Piece {
    std::size_t param;   // index into params_
    std::int64_t begin;  // first element of the parameter in this rank's slice
    std::int64_t size;
  };
  using DeviceFlat = Tensor<float, Shape<dyn>, Cuda>;
  float* own_slice() { return flat_.data() + slice_begin(); }
  /// The moments' slots per slice element: AdamW's m and v, SGD's buffer.
  static constexpr int kMoments = std::is_same_v<Opt, optim::Sgd> ? 1 : 2;
  void finish_on_host();
  void finish_on_device();
  bool grads_finite_on_host();
  double grad_norm_on_host(float grad_scale);
  void step_on_host(float lr, float grad_scale);
  optim::DeviceStepOutcome apply_on_device(float lr, precision::LossScaler& scaler,
                                           const optim::DeviceStepOptions& options);
  void gather_state_on_host(Opt& whole);
  void gather_state_on_device(Opt& whole);
  void scatter_state_on_host(Opt& whole);
  void scatter_state_on_device(Opt& whole);

  C& comm_;
  Opt inner_;
  std::vector<Param> params_;
  std::vector<Piece> pieces_;
  detail::ShardPieces shard_;    // on the host: the pieces the wrapped optimizer steps
  // On the host: gradients for the reduce-scatter, then weights for the all-gather. On
  // the device: the weights (and scratch for gather_state); gradients in dev_.grads.
  std::conditional_t<on_device, DeviceFlat, std::vector<float>> flat_;
  std::vector<float> has_grad_;  // per parameter: ranks that have a gradient for it
  std::int64_t slice_ = 0;
  // On the device alone.
  struct DeviceParts {
    DeviceFlat grads;              // the flat gradients; this rank's slice averaged by finish()
    DeviceFlat moments;            // kMoments x slice_: this rank's optimizer state, m then v
    DeviceFlat flags;              // this rank's has-gradient flags, uploaded when they change
    DeviceFlat flag_sums;          // their sum over the ranks
    std::vector<float> uploaded;   // the flags `flags` holds
    Tensor<unsigned char, Shape<dyn>, Cuda> sums;   // one double per rank: the slices' sums of squares
    Tensor<unsigned char, Shape<dyn>, Cuda> state;  // one cuda::StepState
    std::shared_ptr<void> list;    // the last step's cuda::ParamList<float> (nvcc's type alone), rebound
  };
  struct NoDeviceParts {};
  [[no_unique_address]] std::conditional_t<on_device, DeviceParts, NoDeviceParts> dev_;
};

template <class Opt, Communicator C, nn::Module M>
ShardedOptimizer(C&, M&, Opt) -> ShardedOptimizer<Opt, C, nn::device_of_t<M>>;

// ============================================================================

template <class Opt, Communicator C, Device D>
template <nn::Module M>
ShardedOptimizer<Opt, C, D>::ShardedOptimizer(C& comm, M& model, Opt optimizer) : comm_(comm), inner_(std::move(optimizer)) {
  static_assert(std::is_same_v<nn::device_of_t<M>, D>, "ShardedOptimizer<Opt, C, D>: D must be the model's device");
  require_model_memory<M>(comm, "ShardedOptimizer");
  std::int64_t total = 0;
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    using V = std::remove_cvref_t<decltype(p)>;
    static_assert(std::is_same_v<typename V::value_type, float>,
                  "ShardedOptimizer: parameters are float (the master weights of every precision policy)");
    V* var = &p;
    const std::int64_t n = std::as_const(p).value().size();
    params_.push_back({[var] { return var->has_grad(); }, [var] { return std::as_const(*var).grad().data(); },
                       [var] { return std::as_const(*var).value().data(); },
                       [var] { return var->value().data(); }, n, total, p.weight_decay()});
    total += n;
  });
  const std::int64_t ranks = comm_.size();
  slice_ = (total + ranks - 1) / ranks;
  const std::int64_t flat = slice_ * ranks;
  if constexpr (on_device) {
    // Zero-filled (Tensor's extents constructor): the padding past the last parameter
    // stays zero, and so do the moments before the first step (the host SlotSet's zeros).
    flat_ = DeviceFlat({static_cast<index_t>(flat)});
    dev_.grads = DeviceFlat({static_cast<index_t>(flat)});
    dev_.moments = DeviceFlat({static_cast<index_t>(kMoments * slice_)});
    dev_.flag_sums = DeviceFlat::uninitialized({static_cast<index_t>(std::max<std::size_t>(1, params_.size()))});
    dev_.sums = Tensor<unsigned char, Shape<dyn>, Cuda>({static_cast<index_t>(sizeof(double) * static_cast<std::size_t>(ranks))});
  } else {
    flat_.assign(static_cast<std::size_t>(flat), 0.f);
  }
  has_grad_.assign(params_.size(), 0.f);
  const std::int64_t lo = slice_begin(), hi = std::min(slice_end(), total);
  for (std::size_t k = 0; k < params_.size(); ++k) {
    const Param& p = params_[k];
    const std::int64_t b = std::max(lo, p.offset), e = std::min(hi, p.offset + p.size);
    if (b >= e) continue;
    pieces_.push_back({k, b - p.offset, e - b});
    if constexpr (!on_device) {
      Var<float, Shape<dyn>> w(Tensor<float, Shape<dyn>>({e - b}));
      w.set_weight_decay(p.weight_decay);
      shard_.piece.push_back({std::move(w)});
    }
  }
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::finish() {
  if constexpr (on_device) finish_on_device();
  else finish_on_host();
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::finish_on_host() {
  for (std::size_t k = 0; k < params_.size(); ++k) {
    const Param& p = params_[k];
    float* out = flat_.data() + p.offset;
    if (p.has_grad()) {
      std::memcpy(out, p.grad(), static_cast<std::size_t>(p.size) * sizeof(float));
      has_grad_[k] = 1.f;
    } else {
      std::fill(out, out + p.size, 0.f);
      has_grad_[k] = 0.f;
    }
  }
  std::fill(flat_.begin() + (params_.empty() ? 0 : params_.back().offset + params_.back().size), flat_.end(), 0.f);
  comm_.all_reduce(has_grad_.data(), static_cast<std::int64_t>(has_grad_.size()), ReduceOp::sum);
  comm_.reduce_scatter(flat_.data(), own_slice(), static_cast<std::int64_t>(flat_.size()), ReduceOp::avg);
  for (std::size_t j = 0; j < pieces_.size(); ++j) {
    const Piece& piece = pieces_[j];
    auto& w = shard_.piece[j].weight;
    w.zero_grad();
    if (has_grad_[piece.param] == 0.f) continue;  // no rank has a gradient: none is made
    const float* g = flat_.data() + params_[piece.param].offset + piece.begin;
    std::memcpy(w.node_ptr()->grad_data(), g, static_cast<std::size_t>(piece.size) * sizeof(float));
  }
}

template <class Opt, Communicator C, Device D>
bool ShardedOptimizer<Opt, C, D>::grads_finite_on_host() {
  float bad = optim::all_grads_finite(shard_) ? 0.f : 1.f;
  comm_.all_reduce(&bad, 1, ReduceOp::sum);
  return bad == 0.f;
}

template <class Opt, Communicator C, Device D>
double ShardedOptimizer<Opt, C, D>::grad_norm_on_host(float grad_scale) {
  const double mine = optim::grad_sum_of_squares(shard_);
  // The partial sums, moved bit for bit (a double as four 16-bit words), added in rank order.
  std::vector<double> all(static_cast<std::size_t>(comm_.size()));
  static_assert(sizeof(double) == 4 * sizeof(bf16));
  comm_.all_gather(reinterpret_cast<const bf16*>(&mine), reinterpret_cast<bf16*>(all.data()), 4);
  double sum = 0;
  for (const double s : all) sum += s;
  return std::sqrt(sum) * grad_scale;
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::step_on_host(float lr, float grad_scale) {
  // The pieces start from the model's current weights (a broadcast or a resumed
  // checkpoint may have changed them since the last step).
  for (std::size_t j = 0; j < pieces_.size(); ++j) {
    const Piece& piece = pieces_[j];
    std::memcpy(shard_.piece[j].weight.value().data(), params_[piece.param].value() + piece.begin,
                static_cast<std::size_t>(piece.size) * sizeof(float));
  }
  inner_.step(shard_, lr, grad_scale);
  for (std::size_t j = 0; j < pieces_.size(); ++j) {
    const Piece& piece = pieces_[j];
    std::memcpy(flat_.data() + params_[piece.param].offset + piece.begin,
                std::as_const(shard_.piece[j].weight).value().data(), static_cast<std::size_t>(piece.size) * sizeof(float));
    shard_.piece[j].weight.zero_grad();
  }
  comm_.all_gather(own_slice(), flat_.data(), slice_);
  for (const Param& p : params_)
    std::memcpy(p.value_for_writing(), flat_.data() + p.offset, static_cast<std::size_t>(p.size) * sizeof(float));
}

template <class Opt, Communicator C, Device D>
std::int64_t ShardedOptimizer<Opt, C, D>::state_bytes() const {
  std::int64_t bytes = 0;
  const auto add = [&](const optim::SlotSet& slots) {
    for (const auto& t : slots.all()) bytes += t.size() * std::int64_t{sizeof(float)};
  };
  if constexpr (on_device) {
    bytes = dev_.moments.size() * std::int64_t{sizeof(float)};  // the wrapped optimizer holds none
  } else if constexpr (requires { inner_.m(); inner_.v(); }) {
    add(inner_.m());
    add(inner_.v());
  } else {
    add(inner_.buffer());
  }
  return bytes;
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::gather_state(Opt& whole)
  requires requires(Opt& o) { o.m(); o.v(); o.set_steps(std::int64_t{}); }
{
  if constexpr (on_device) gather_state_on_device(whole);
  else gather_state_on_host(whole);
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::gather_state_on_host(Opt& whole) {
  for (auto [mine, theirs] : {std::pair{&inner_.m(), &whole.m()}, std::pair{&inner_.v(), &whole.v()}}) {
    std::fill(flat_.begin(), flat_.end(), 0.f);
    for (std::size_t j = 0; j < pieces_.size(); ++j) {
      const Piece& piece = pieces_[j];
      const auto& t = mine->at(j, piece.size);  // zeros before the first step
      std::memcpy(flat_.data() + params_[piece.param].offset + piece.begin, t.data(),
                  static_cast<std::size_t>(piece.size) * sizeof(float));
    }
    comm_.all_gather(own_slice(), flat_.data(), slice_);
    for (std::size_t k = 0; k < params_.size(); ++k) {
      auto& t = theirs->at(k, params_[k].size);
      std::memcpy(t.data(), flat_.data() + params_[k].offset, static_cast<std::size_t>(params_[k].size) * sizeof(float));
    }
  }
  whole.set_steps(inner_.steps());
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::scatter_state(Opt& whole)
  requires requires(Opt& o) { o.m(); o.v(); o.set_steps(std::int64_t{}); }
{
  if constexpr (on_device) scatter_state_on_device(whole);
  else scatter_state_on_host(whole);
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::scatter_state_on_host(Opt& whole) {
  for (auto [mine, theirs] : {std::pair{&inner_.m(), &whole.m()}, std::pair{&inner_.v(), &whole.v()}}) {
    for (std::size_t j = 0; j < pieces_.size(); ++j) {
      const Piece& piece = pieces_[j];
      const auto& t = theirs->at(piece.param, params_[piece.param].size);
      std::memcpy(mine->at(j, piece.size).data(), t.data() + piece.begin,
                  static_cast<std::size_t>(piece.size) * sizeof(float));
    }
  }
  inner_.set_steps(whole.steps());
}

// ---- a model on a CUDA device ----

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::finish_on_device() {
  // This rank's gradients laid end to end (zeros where it has none), queued on the
  // compute stream after the backward that made them.
  float* g = dev_.grads.data();
  for (std::size_t k = 0; k < params_.size(); ++k) {
    const Param& p = params_[k];
    has_grad_[k] = p.has_grad() ? 1.f : 0.f;
    if (has_grad_[k] != 0.f) DeviceAllocator<Cuda>::copy(g + p.offset, p.grad(), static_cast<std::size_t>(p.size) * sizeof(float));
    else DeviceAllocator<Cuda>::fill(g + p.offset, static_cast<std::size_t>(p.size), 0.f);
  }
  // Which parameters some rank has a gradient for: the flags summed over the ranks (a
  // host-to-device copy only when this rank's change; a read back only where this rank
  // lacks a gradient, since a flag of its own makes the sum at least 1).
  const std::vector<float> mine = has_grad_;
  if (!params_.empty()) {
    if (dev_.uploaded != mine) {
      dev_.flags = DeviceFlat::uninitialized({static_cast<index_t>(mine.size())});
      DeviceAllocator<Cuda>::copy_from_host(dev_.flags.data(), mine.data(), mine.size() * sizeof(float));
      dev_.uploaded = mine;
    }
    DeviceAllocator<Cuda>::copy(dev_.flag_sums.data(), dev_.flags.data(), mine.size() * sizeof(float));
    comm_.all_reduce(dev_.flag_sums.data(), static_cast<std::int64_t>(mine.size()), ReduceOp::sum);
  }
  comm_.reduce_scatter(g, g + slice_begin(), dev_.grads.size(), ReduceOp::avg);
  if (std::find(mine.begin(), mine.end(), 0.f) != mine.end())
    DeviceAllocator<Cuda>::copy_to_host(has_grad_.data(), dev_.flag_sums.data(), has_grad_.size() * sizeof(float));
}

template <class Opt, Communicator C, Device D>
optim::DeviceStepOutcome ShardedOptimizer<Opt, C, D>::apply_on_device(float lr, precision::LossScaler& scaler,
                                                                      const optim::DeviceStepOptions& options) {
  ops::require_kernels<D>();
#if CTDL_CUDA_OPS
  // The slice's pieces start from the model's current weights (a broadcast or a resumed
  // checkpoint may have changed them since the last step). A piece of a parameter no
  // rank has a gradient for is left alone, as the host optimizers leave the parameter.
  float* w = flat_.data();
  const float* g = dev_.grads.data();
  float* m = dev_.moments.data();
  float* v = kMoments == 2 ? m + slice_ : nullptr;
  std::vector<cuda::ParamSlot<float>> slots;
  for (const Piece& piece : pieces_) {
    const Param& p = params_[piece.param];
    const std::int64_t at = p.offset + piece.begin;  // in the flat vectors
    const std::int64_t in_slice = at - slice_begin();
    DeviceAllocator<Cuda>::copy(w + at, p.value() + piece.begin, static_cast<std::size_t>(piece.size) * sizeof(float));
    if (has_grad_[piece.param] == 0.f) continue;
    slots.push_back({.param = w + at,
                     .grad = g + at,
                     .m = m + in_slice,
                     .v = v ? v + in_slice : nullptr,
                     .size = piece.size,
                     .weight_decay = p.weight_decay});
  }
  namespace step = optim::device_step_detail;
  cuda::ParamList<float>& list = step::bind(dev_.list, std::move(slots));
  cuda::StepState* state = step::begin(dev_.state, scaler, inner_.steps());
  // Every rank's sum of squares (a double as four 16-bit words, moved bit for bit), then
  // the decision from their total: the same on every rank.
  auto* sums = reinterpret_cast<double*>(dev_.sums.data());
  static_assert(sizeof(double) == 4 * sizeof(bf16));
  cuda::grad_sum_squares(list, sums + comm_.rank());
  comm_.all_gather(reinterpret_cast<const bf16*>(sums + comm_.rank()), reinterpret_cast<bf16*>(sums), 4);
  cuda::decide_step(sums, comm_.size(), state, step::kernel_options(options, scaler));
  if constexpr (std::is_same_v<Opt, optim::AdamW>) cuda::adamw_step(list, state, inner_.options(), lr);
  else if constexpr (std::is_same_v<Opt, optim::Sgd>) cuda::sgd_step(list, state, inner_.options(), lr);
  else static_assert(std::is_same_v<Opt, optim::AdamW>, "ShardedOptimizer on a CUDA device: AdamW or Sgd");
  // The slices of the new weights (unchanged where the step was skipped) to every rank.
  comm_.all_gather(w + slice_begin(), w, slice_);
  for (const Param& p : params_)
    DeviceAllocator<Cuda>::copy(p.value_for_writing(), w + p.offset, static_cast<std::size_t>(p.size) * sizeof(float));
  return step::end(state, scaler, inner_);
#else
  (void)lr, (void)scaler, (void)options;
  return {};
#endif
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::gather_state_on_device(Opt& whole) {
  // Each moment's slices, all-gathered into flat_ (the weights' vector: scratch between
  // steps, since apply() refreshes it from the model), then copied down per parameter.
  std::vector<optim::SlotSet*> sets{&whole.m(), &whole.v()};
  for (std::size_t s = 0; s < sets.size(); ++s) {
    comm_.all_gather(dev_.moments.data() + static_cast<std::int64_t>(s) * slice_, flat_.data(), slice_);
    for (std::size_t k = 0; k < params_.size(); ++k) {
      auto& t = sets[s]->at(k, params_[k].size);
      DeviceAllocator<Cuda>::copy_to_host(t.data(), flat_.data() + params_[k].offset,
                                          static_cast<std::size_t>(params_[k].size) * sizeof(float));
    }
  }
  whole.set_steps(inner_.steps());
}

template <class Opt, Communicator C, Device D>
void ShardedOptimizer<Opt, C, D>::scatter_state_on_device(Opt& whole) {
  std::vector<optim::SlotSet*> sets{&whole.m(), &whole.v()};
  for (std::size_t s = 0; s < sets.size(); ++s) {
    float* mine = dev_.moments.data() + static_cast<std::int64_t>(s) * slice_;
    for (const Piece& piece : pieces_) {
      const Param& p = params_[piece.param];
      const auto& t = sets[s]->at(piece.param, p.size);  // zeros where the checkpoint has none
      DeviceAllocator<Cuda>::copy_from_host(mine + (p.offset + piece.begin - slice_begin()), t.data() + piece.begin,
                                            static_cast<std::size_t>(piece.size) * sizeof(float));
    }
  }
  inner_.set_steps(whole.steps());
}

}  // namespace ctdl::dist

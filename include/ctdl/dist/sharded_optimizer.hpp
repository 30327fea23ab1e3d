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
// A checkpoint written by N ranks resumes on any number of ranks, or on one process.

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/dist/communicator.hpp"
#include "ctdl/dist/data_parallel.hpp"
#include "ctdl/nn/module.hpp"
#include "ctdl/optim/optimizer.hpp"

namespace ctdl::dist {

/// What the trainer asks of an optimizer that holds only a slice of the gradients
/// (train/classifier.hpp uses these instead of reading the model's own gradients).
template <class O>
concept ShardedUpdate = requires(O& o, float scale) {
  { o.grads_finite() } -> std::same_as<bool>;
  { o.grad_norm(scale) } -> std::same_as<double>;
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

template <class Opt, Communicator C>
class ShardedOptimizer final : public GradientSync {
  static_assert(Opt::elementwise,
                "ShardedOptimizer: the wrapped optimizer must update each element from that element alone (AdamW, "
                "Sgd); LAMB's trust ratio needs whole-tensor norms, which the slices split");

 public:
  /// Holds references to the model's parameters: the model must outlive it and stay in place.
  template <nn::Module M>
  ShardedOptimizer(C& comm, M& model, Opt optimizer = {});

  // GradientSync: nothing to do before the forward; finish() reduce-scatters.
  void begin(Tape&) override {}
  void finish() override;

  /// Whether every rank's slice of the averaged gradient is finite (collective).
  bool grads_finite();
  /// The global L2 norm of the averaged gradients times grad_scale (collective; the
  /// same bits on every rank: the ranks' partial sums are added in rank order).
  double grad_norm(float grad_scale = 1.f);
  /// Updates this rank's slice with the wrapped optimizer, then all-gathers the weights
  /// into `model` (collective). The model must be the one given to the constructor.
  template <nn::Module M>
  void step(M& model, float lr, float grad_scale = 1.f);

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
  float* own_slice() { return flat_.data() + slice_begin(); }

  C& comm_;
  Opt inner_;
  std::vector<Param> params_;
  std::vector<Piece> pieces_;
  detail::ShardPieces shard_;
  std::vector<float> flat_;      // gradients for the reduce-scatter, then weights for the all-gather
  std::vector<float> has_grad_;  // per parameter: ranks that have a gradient for it
  std::int64_t slice_ = 0;
};

// ============================================================================

template <class Opt, Communicator C>
template <nn::Module M>
ShardedOptimizer<Opt, C>::ShardedOptimizer(C& comm, M& model, Opt optimizer) : comm_(comm), inner_(std::move(optimizer)) {
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
  flat_.assign(static_cast<std::size_t>(slice_ * ranks), 0.f);
  has_grad_.assign(params_.size(), 0.f);
  const std::int64_t lo = slice_begin(), hi = std::min(slice_end(), total);
  for (std::size_t k = 0; k < params_.size(); ++k) {
    const Param& p = params_[k];
    const std::int64_t b = std::max(lo, p.offset), e = std::min(hi, p.offset + p.size);
    if (b >= e) continue;
    pieces_.push_back({k, b - p.offset, e - b});
    Var<float, Shape<dyn>> w(Tensor<float, Shape<dyn>>({e - b}));
    w.set_weight_decay(p.weight_decay);
    shard_.piece.push_back({std::move(w)});
  }
}

template <class Opt, Communicator C>
void ShardedOptimizer<Opt, C>::finish() {
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

template <class Opt, Communicator C>
bool ShardedOptimizer<Opt, C>::grads_finite() {
  float bad = optim::all_grads_finite(shard_) ? 0.f : 1.f;
  comm_.all_reduce(&bad, 1, ReduceOp::sum);
  return bad == 0.f;
}

template <class Opt, Communicator C>
double ShardedOptimizer<Opt, C>::grad_norm(float grad_scale) {
  const double mine = optim::grad_sum_of_squares(shard_);
  // The partial sums, moved bit for bit (a double as four 16-bit words), added in rank order.
  std::vector<double> all(static_cast<std::size_t>(comm_.size()));
  static_assert(sizeof(double) == 4 * sizeof(bf16));
  comm_.all_gather(reinterpret_cast<const bf16*>(&mine), reinterpret_cast<bf16*>(all.data()), 4);
  double sum = 0;
  for (const double s : all) sum += s;
  return std::sqrt(sum) * grad_scale;
}

template <class Opt, Communicator C>
template <nn::Module M>
void ShardedOptimizer<Opt, C>::step(M& model, float lr, float grad_scale) {
  (void)model;  // its parameters are reached through params_ (the constructor's model)
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

template <class Opt, Communicator C>
std::int64_t ShardedOptimizer<Opt, C>::state_bytes() const {
  std::int64_t bytes = 0;
  const auto add = [&](const optim::SlotSet& slots) {
    for (const auto& t : slots.all()) bytes += t.size() * std::int64_t{sizeof(float)};
  };
  if constexpr (requires { inner_.m(); inner_.v(); }) {
    add(inner_.m());
    add(inner_.v());
  } else {
    add(inner_.buffer());
  }
  return bytes;
}

template <class Opt, Communicator C>
void ShardedOptimizer<Opt, C>::gather_state(Opt& whole)
  requires requires(Opt& o) { o.m(); o.v(); o.set_steps(std::int64_t{}); }
{
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

template <class Opt, Communicator C>
void ShardedOptimizer<Opt, C>::scatter_state(Opt& whole)
  requires requires(Opt& o) { o.m(); o.v(); o.set_steps(std::int64_t{}); }
{
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

}  // namespace ctdl::dist

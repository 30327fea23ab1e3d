#pragma once
// Training and inference steps of a sequence (span) classifier, shared by the programs.
// The trainer takes token classifiers too (bert::BertForTokenClassification over token
// features: classification_loss leaves out the positions labelled -1); their prediction
// and evaluation are train/tokens.hpp's.
//
//   ClassifierTrainer  backward(batch): forward with dropout, cross-entropy, backward
//                      (the loss multiplied by the loss scale under Fp16Mixed); gradients
//                      accumulate until apply(optimizer, lr), which checks them (a
//                      non-finite gradient skips the step under loss scaling and is an
//                      error otherwise), removes the loss scale, averages over the
//                      accumulated micro-batches, clips to the global norm and updates.
//                      A model on a CUDA device takes the same step on the device
//                      (optim::DeviceStep: the fused kernels, the CPU's formulas).
//   predict            forward without dropout over a feature cache, in batches of
//                      rows of similar length (PredictOptions), each row's outputs in
//                      its place: class probabilities, predictions, mean loss, time per batch,
//                      and the first row whose logits are not finite (the caller decides;
//                      the programs stop with an error naming it); on request
//                      (PredictOptions) the raw logits and the pooled vectors too.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/data/batcher.hpp"
#include "ctdl/dist/data_parallel.hpp"
#include "ctdl/dist/sharded_optimizer.hpp"
#include "ctdl/models/bert/model.hpp"
#include "ctdl/ops/cross_entropy.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/optim/device_step.hpp"
#include "ctdl/optim/optimizer.hpp"
#include "ctdl/precision/loss_scaler.hpp"
#include "ctdl/precision/policy.hpp"

namespace ctdl::train {

struct StepOutcome {
  bool applied = true;
  double grad_norm = 0;   // after unscaling and averaging, before clipping
  double loss_scale = 1;  // the scale this step's gradients carried
};

/// The mean cross-entropy of `logits` against `labels` over the rows that are scored:
/// every row of sequence (span) batches; the positions whose label is not -1 in token
/// batches (B x S labels; -1 marks a word's later pieces, [CLS], [SEP] and padding:
/// data/token_features.hpp), which ops::cross_entropy's mask leaves out. Any other label
/// outside [0, C) is an error of cross_entropy's.
template <class T, index_t C, class D>
Var<T, Shape<>, D> classification_loss(Tape& tape, const Var<T, Shape<dyn, C>, D>& logits,
                                       const Tensor<std::int32_t, Shape<dyn>>& labels) {
  const std::int32_t* y = labels.data();
  if (std::find(y, y + labels.size(), -1) == y + labels.size()) return ops::cross_entropy(tape, logits, labels);
  auto scored = Tensor<T, Shape<dyn>>::uninitialized({labels.size()});
  for (index_t i = 0; i < labels.size(); ++i) scored.data()[i] = T(y[i] != -1 ? 1.0f : 0.0f);
  return ops::cross_entropy(tape, logits, labels, scored);
}

template <class Model, class Policy>
class ClassifierTrainer {
  using Device = nn::device_of_t<Model>;
  struct NoDeviceStep {};

 public:
  struct Options {
    double max_grad_norm = 1.0;  ///< <= 0: no clipping
    std::uint64_t seed = 0;      ///< dropout stream
    std::uint32_t rank = 0;
  };

  ClassifierTrainer(Model& model, Options options) : model_(model), options_(options) {}

  precision::LossScaler& scaler() { return scaler_; }
  const Options& options() const { return options_; }
  /// Micro-batches run so far: with the seed, it keys the dropout masks of the next one.
  /// A resumed run restores it (with the loss scaler's state) to draw the same masks.
  std::uint64_t dropout_step() const { return dropout_step_; }
  void set_dropout_step(std::uint64_t step) { dropout_step_ = step; }
  double loss_scale() const { return Policy::loss_scaling ? scaler_.scale() : 1.0; }

  /// Data parallel: the averaging of gradients over ranks (dist/data_parallel.hpp), run
  /// around the backward that completes each step; nullptr (the default): one process.
  /// A dist::ShardedOptimizer (ZeRO-1) is both: set it here and pass it to apply().
  void set_gradient_sync(dist::GradientSync* sync) { sync_ = sync; }
  /// A model on a CUDA device: the optimizer state kept there (checkpoints copy it).
  auto& device_step()
    requires ops::on_cuda<Device>
  {
    return device_step_;
  }

  /// One micro-batch: forward with dropout, loss, backward. Returns the batch's mean loss.
  /// `completes_step`: the last micro-batch before apply() (data parallel: its backward
  /// runs the averaging; earlier ones accumulate locally).
  double backward(const data::Batch& batch, bool completes_step = true) {
    Tape tape;
    if (sync_ && completes_step) sync_->begin(tape);
    nn::Context ctx{tape, true, options_.seed, dropout_step_++, options_.rank};
    const auto logits = model_.forward(ctx, batch);
    auto loss = classification_loss(tape, logits, batch.labels);
    if constexpr (Policy::loss_scaling) {
      tape.backward(loss, Tensor<float, Shape<>, Device>::full({}, static_cast<float>(scaler_.scale())));
    } else {
      tape.backward(loss);
    }
    ++micro_batches_;
    // Read after backward is queued: on a GPU the host then waits once for the forward
    // and backward together, not between them.
    const auto& loss_host = on_host(loss.value());
    return loss_host.data()[0];
  }

  /// Applies the gradients of the micro-batches since the last apply, then clears them.
  template <class Opt>
  StepOutcome apply(Opt& optimizer, float lr) {
    if constexpr (ops::on_cuda<Device>) return apply_on_device(optimizer, lr);
    else return apply_on_host(optimizer, lr);
  }

 private:
  template <class Opt>
  StepOutcome apply_on_host(Opt& optimizer, float lr) {
    StepOutcome out;
    out.loss_scale = loss_scale();
    if (sync_) sync_->finish();  // the averaged gradients: every rank decides alike below
    // A sharded optimizer (ZeRO-1) holds this rank's slice of the averaged gradients, not
    // the model: it answers for them (collectively).
    constexpr bool sharded = dist::ShardedUpdate<Opt>;
    bool finite = false;
    if constexpr (sharded) finite = optimizer.grads_finite();
    else finite = optim::all_grads_finite(model_);
    if constexpr (Policy::loss_scaling) {
      if (!scaler_.update(finite)) {
        optim::zero_grad(model_);
        micro_batches_ = 0;
        out.applied = false;
        return out;
      }
    } else if (!finite) {
      throw Error("a gradient is inf or nan (the training diverged); lower --learning_rate, or use "
                  "--precision=fp32 to check");
    }
    const auto unscale = static_cast<float>(1.0 / (out.loss_scale * static_cast<double>(std::max(1, micro_batches_))));
    if constexpr (sharded) out.grad_norm = optimizer.grad_norm(unscale);
    else out.grad_norm = optim::global_grad_norm(model_, unscale);
    const float clip = optim::clip_factor(out.grad_norm, options_.max_grad_norm);
    optimizer.step(model_, lr, unscale * clip);
    optim::zero_grad(model_);
    micro_batches_ = 0;
    return out;
  }

  template <class Opt>
  StepOutcome apply_on_device(Opt& optimizer, float lr) {
    static_assert(!dist::ShardedUpdate<Opt>, "a host ZeRO-1 optimizer for a model on a CUDA device: give "
                                             "dist::ShardedOptimizer the model's device (D = Cuda)");
    if (sync_) sync_->finish();  // averaged over the GPUs (NCCL) before the checks and the update
    const optim::DeviceStepOptions options{.loss_scaling = Policy::loss_scaling,
                                           .max_grad_norm = options_.max_grad_norm,
                                           .micro_batches = std::max(1, micro_batches_)};
    // ZeRO-1 (dist::ShardedOptimizer on Cuda) takes the step on its slice itself.
    optim::DeviceStepOutcome step;
    if constexpr (dist::DeviceShardedUpdate<Opt>) step = optimizer.apply(lr, scaler_, options);
    else step = device_step_.apply(optimizer, model_, lr, scaler_, options);
    optim::zero_grad(model_);
    micro_batches_ = 0;
    if (!step.grads_finite && !Policy::loss_scaling) {
      throw Error("a gradient is inf or nan (the training diverged); lower --learning_rate, or use "
                  "--precision=fp32 to check");
    }
    return {step.applied, step.grad_norm, step.loss_scale};
  }

  Model& model_;
  Options options_;
  precision::LossScaler scaler_;
  [[no_unique_address]] std::conditional_t<ops::on_cuda<Device>, optim::DeviceStep, NoDeviceStep> device_step_;
  dist::GradientSync* sync_ = nullptr;
  std::uint64_t dropout_step_ = 0;
  int micro_batches_ = 0;
};

/// What predict keeps beyond probabilities and predictions, and how its batches are made.
struct PredictOptions {
  bool keep_logits = false;
  bool keep_pooled = false;  // needs a model with forward_with_pooled (BertForSequenceClassification)
  /// Every batch max_seq_length wide, in file order, as the original pipeline pads; by
  /// default each batch is as wide as its longest row (rounded up to a multiple of 8),
  /// which gives the same outputs up to rounding for less work
  /// (data::Batcher::Options::trim_padding).
  bool pad_to_max_length = false;
  /// With batches as wide as their longest row: the rows batched in order of decreasing
  /// length, so that each batch holds rows of similar length and little padding
  /// (data::Batcher::Options::group_by_length). Every output is put back in its row's
  /// place, the same up to rounding as in file order; false batches in file order.
  bool group_by_length = true;
  /// Called after each batch with how many of the pass's batches are done and how many
  /// there are (every rank has the same count; train::InferenceProgressLog prints them).
  std::function<void(std::size_t done, std::size_t batches)> progress = {};
  /// Token classifiers (train/tokens.hpp): how the model's classes stand for the words'
  /// labels (data/token_scheme.hpp). tensorflow: the model has L + 4 classes, and a feature
  /// with fewer predicted word labels than words fills the rest with outside_label ("O").
  data::TokenScheme token_scheme = data::TokenScheme::first_piece;
  std::int32_t outside_label = -1;
};

/// Inference over this rank's share of every batch of `cache` (comm's ranks, as
/// data::Batcher splits them), without dropout, the batches made as `options` says (file
/// order, or grouped by length): `run(ctx, batch)` runs the model and takes what it needs
/// to the host, each row's outputs to its place (batch.rows); each call's wall time (on a
/// GPU the forward only queues kernels, and the copy back is where the host waits for
/// them) and rows are appended to batch_ms and batch_rows; options.progress hears of each
/// batch. A rank's empty share of a last batch is skipped. (predict and
/// train/tokens.hpp's predict_tokens.)
template <dist::Communicator C, class Run>
void for_each_inference_batch(const data::FeatureCache& cache, index_t batch_size, const PredictOptions& options,
                              C& comm, std::vector<double>& batch_ms, std::vector<index_t>& batch_rows, Run&& run) {
  data::Batcher batcher(cache, {.batch_size = batch_size,
                                .rank = comm.rank(),
                                .world_size = comm.size(),
                                .shuffle = false,
                                .drop_remainder = false,
                                .trim_padding = !options.pad_to_max_length,
                                .group_by_length = !options.pad_to_max_length && options.group_by_length});
  batcher.start_epoch(0);
  const std::size_t batches = batcher.batches_per_epoch();
  data::Batch batch;
  for (std::size_t done = 1; batcher.next(batch); ++done) {
    if (batch.size() > 0) {
      const auto t0 = std::chrono::steady_clock::now();
      {
        Tape tape;
        NoGrad no_grad(tape);
        nn::Context ctx{tape, false};
        run(ctx, batch);
      }
      batch_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      batch_rows.push_back(batch.size());
    }
    if (options.progress) options.progress(done, batches);
  }
}

struct Predictions {
  index_t num_labels = 0;
  std::vector<float> probabilities;     // rows x num_labels, in cache row order
  std::vector<std::int32_t> predicted;  // argmax per row
  std::vector<std::int32_t> truth;      // the cache's label per row
  double mean_loss = 0;
  std::vector<double> batch_ms;         // wall time of each batch: its forward, its logits on the host and in place
  std::vector<index_t> batch_rows;      // the rows of each batch (the last one may be short)
  std::ptrdiff_t first_non_finite_row = -1;  // the first cache row with a NaN or infinite logit, or -1
  std::size_t non_finite_rows = 0;           // how many rows have one (their outputs mean nothing)
  // Kept only when PredictOptions asks (ner_span_classifier --write_npy):
  std::vector<float> logits;  // rows x num_labels, in cache row order
  std::vector<float> pooled;  // rows x hidden: the pooled vector each row's logits were computed from
  index_t hidden = 0;
};

/// Runs the classifier over every row of `cache` without dropout; the results are in
/// file order whatever order the batches took (PredictOptions).
template <class Model>
Predictions predict(const Model& model, const data::FeatureCache& cache, index_t batch_size, index_t num_labels,
                    const PredictOptions& options = {});

/// The same, split across the ranks of `comm`: each rank runs its slice of every global
/// batch of batch_size x ranks rows (data::Batcher), so every row is computed in the same
/// batch of batch_size rows as one process computes it; the logits (and pooled vectors)
/// are then summed over the ranks, each row's from the one rank that computed it (x + 0
/// is exact), and every rank derives the whole Predictions from them: one process's,
/// bit for bit. batch_ms and batch_rows hold this rank's own batches.
template <class Model, dist::Communicator C>
Predictions predict(const Model& model, const data::FeatureCache& cache, index_t batch_size, index_t num_labels,
                    const PredictOptions& options, C& comm);

// ============================================================================

template <class Model>
Predictions predict(const Model& model, const data::FeatureCache& cache, index_t batch_size, index_t num_labels,
                    const PredictOptions& options) {
  dist::LocalComm one;
  return predict(model, cache, batch_size, num_labels, options, one);
}

template <class Model, dist::Communicator C>
Predictions predict(const Model& model, const data::FeatureCache& cache, index_t batch_size, index_t num_labels,
                    const PredictOptions& options, C& comm) {
  Predictions p;
  p.num_labels = num_labels;
  const std::size_t n = cache.rows();
  const auto L = static_cast<std::size_t>(num_labels);
  p.logits.assign(n * L, 0.f);
  // This rank's batches: their logits (and pooled vectors) into the rows they belong to.
  for_each_inference_batch(cache, batch_size, options, comm, p.batch_ms, p.batch_rows,
                           [&](nn::Context& ctx, const data::Batch& batch) {
    auto [logits, pooled] = [&] {
      if constexpr (requires { model.forward_with_pooled(ctx, batch); }) {
        auto out = model.forward_with_pooled(ctx, batch);
        return std::pair{std::move(out.logits), std::move(out.pooled)};
      } else {
        if (options.keep_pooled) throw Error("predict: this model has no pooled output to keep");
        return std::pair{model.forward(ctx, batch), 0};
      }
    }();
    const auto& logits_host = on_host(logits.value());  // on a GPU a copy: it must outlive `l`
    const float* l = logits_host.data();
    for (index_t i = 0; i < batch.size(); ++i)
      std::copy(l + i * num_labels, l + (i + 1) * num_labels,
                p.logits.begin() + static_cast<std::ptrdiff_t>(batch.rows[static_cast<std::size_t>(i)] * L));
    if constexpr (!std::is_same_v<decltype(pooled), int>) {
      if (options.keep_pooled) {
        const auto& v = on_host(pooled.value());
        const index_t h = v.extent(1);
        if (p.pooled.empty()) {
          p.hidden = h;
          p.pooled.assign(n * static_cast<std::size_t>(h), 0.f);
        }
        for (index_t i = 0; i < batch.size(); ++i) {
          const std::size_t row = batch.rows[static_cast<std::size_t>(i)];
          for (index_t k = 0; k < h; ++k)
            p.pooled[row * static_cast<std::size_t>(h) + static_cast<std::size_t>(k)] = static_cast<float>(v.data()[i * h + k]);
        }
      }
    }
  });
  if (comm.size() > 1) {  // every row from the rank that computed it (zeros elsewhere)
    comm.all_reduce(p.logits.data(), static_cast<std::int64_t>(p.logits.size()), dist::ReduceOp::sum);
    if (options.keep_pooled) {
      float h = static_cast<float>(p.hidden);  // a rank with no rows has no pooled vectors yet; rank 0 has (n > 0)
      comm.broadcast(&h, 1, 0);
      p.hidden = static_cast<index_t>(h);
      p.pooled.resize(n * static_cast<std::size_t>(p.hidden), 0.f);
      comm.all_reduce(p.pooled.data(), static_cast<std::int64_t>(p.pooled.size()), dist::ReduceOp::sum);
    }
  }
  // Every row, in file order: probabilities, the prediction, the loss.
  p.probabilities.resize(n * L);
  p.predicted.resize(n);
  p.truth.resize(n);
  double loss_sum = 0;
  for (std::size_t row = 0; row < n; ++row) {
    const float* li = p.logits.data() + row * L;
    if (!std::all_of(li, li + L, [](float x) { return std::isfinite(x); })) {
      ++p.non_finite_rows;
      if (p.first_non_finite_row < 0) p.first_non_finite_row = static_cast<std::ptrdiff_t>(row);
    }
    double mx = li[0];
    for (std::size_t k = 1; k < L; ++k) mx = std::max(mx, static_cast<double>(li[k]));
    double z = 0;
    for (std::size_t k = 0; k < L; ++k) z += std::exp(li[k] - mx);
    std::int32_t best = 0;
    for (std::size_t k = 0; k < L; ++k) {
      p.probabilities[row * L + k] = static_cast<float>(std::exp(li[k] - mx) / z);
      if (li[k] > li[best]) best = static_cast<std::int32_t>(k);
    }
    p.predicted[row] = best;
    const std::int32_t y = cache.label_id(row);
    p.truth[row] = y;
    loss_sum += -(li[y] - mx - std::log(z));
  }
  p.mean_loss = n ? loss_sum / static_cast<double>(n) : 0;
  if (!options.keep_logits) std::vector<float>().swap(p.logits);
  return p;
}

}  // namespace ctdl::train

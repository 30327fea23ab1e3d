#pragma once
// The training, evaluation and prediction loops of a sequence (span) classifier over a
// feature cache, for programs and for users who include ctdl in their own code.
//
//   fit        epochs of shuffled micro-batches; gradient accumulation; BERT's warmup +
//              linear decay schedule; global-norm clipping; dynamic loss scaling (a step
//              whose gradients overflow is skipped, its rows not rerun, and the next
//              micro-batches make that step again; by default the scale halves at the
//              second overflow since it last changed: precision/loss_scaler.hpp);
//              progress records; evaluation every N steps if asked; checkpoints every N
//              steps and at the end, and exact resume from the newest valid one
//              (train/checkpoint.hpp)
//   evaluate   predict + the classification report and the metrics of eval_results.txt
//   predict    (train/classifier.hpp) forward without dropout, results in file order
//
// The loops print nothing themselves: what a person should see goes through the hooks
// (FitHooks::say, ::record), so a program decides where it goes.
//
// Exact resume. Everything that decides the next step is in the checkpoint: the weights,
// AdamW's moments, the global step (the learning rate is a function of it), the loss
// scaler (scale, clean-step and overflow counts), the dropout stream position
// (ClassifierTrainer's seed and micro-batch count) and the data position (the batcher's
// epoch, whose shuffle is keyed by (seed, epoch), and the batches taken from it). The
// kernels add in an order that depends on the sizes and the thread count only
// (optim::ordered_sum_of_squares says why the gradient norm needs care), so with the same
// thread count a resumed run repeats the uninterrupted one bit for bit.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctdl/data/batcher.hpp"
#include "ctdl/data/feature_cache.hpp"
#include "ctdl/dist/communicator.hpp"
#include "ctdl/dist/data_parallel.hpp"
#include "ctdl/metrics/classification.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/optim/adamw.hpp"
#include "ctdl/optim/schedule.hpp"
#include "ctdl/train/checkpoint.hpp"
#include "ctdl/train/classifier.hpp"
#include "ctdl/train/run_log.hpp"

namespace ctdl::train {

struct CheckpointOptions {
  std::string root;                  ///< where checkpoint-<step>/ go; "" = no checkpoints
  std::int64_t every_steps = 0;      ///< also every N steps (0: only at the end)
  std::int64_t keep = 1;             ///< the newest N are kept (older ones removed once a newer is complete)
  bool resume = false;               ///< continue from the newest valid checkpoint under root
  std::map<std::string, std::string> extra_files = {};  ///< name in the checkpoint -> file copied into each
  /// What must match for a resume (name -> value). Empty: fit records its own options
  /// (batch_size (the global batch), accumulation_steps, epochs, learning_rate,
  /// warmup_proportion, max_grad_norm, shuffle, pad_to_max_length, group_by_length,
  /// seed, and token_scheme when it is tensorflow), the precision and the XXH64 of the
  /// training data.
  std::map<std::string, std::string> settings = {};
};

struct FitOptions {
  index_t batch_size = 32;                ///< rows per micro-batch
  std::int64_t accumulation_steps = 1;    ///< micro-batches per optimizer step
  double epochs = 3.0;                    ///< may be fractional
  double learning_rate = 5e-5;            ///< peak of the schedule
  double warmup_proportion = 0.1;         ///< share of the steps with linear warmup
  double max_grad_norm = 1.0;             ///< global-norm clipping; <= 0: none
  bool shuffle = true;                    ///< a new order every epoch (keyed by seed, epoch)
  /// Every micro-batch max_seq_length wide, as the original pipeline pads; by default each
  /// is as wide as its longest row (rounded up to a multiple of 8): the same model for
  /// less work, with other dropout masks (data::Batcher::Options::trim_padding).
  bool pad_to_max_length = false;
  /// Shuffled rows batched with rows of similar length (Hugging Face's group_by_length:
  /// runs of up to 50 global batches each sorted by length; data::Batcher): less padding,
  /// so faster steps, at the price of batches that are less random. Needs trimmed batches.
  bool group_by_length = false;
  /// Token features: the labels trained on (data/token_scheme.hpp). tensorflow trains every
  /// position on word_labels + 4 classes and, as its recipe averages the loss over all M
  /// positions of a feature (padding included), needs pad_to_max_length.
  data::TokenScheme token_scheme = data::TokenScheme::first_piece;
  index_t word_labels = 0;
  std::uint64_t seed = 0;                 ///< shuffling and dropout
  std::int64_t log_every = 10;            ///< a progress record every N steps (and at the last)
  std::int64_t evaluate_every = 0;        ///< FitHooks::evaluate every N steps (0: never)
  std::int64_t max_skipped_steps = 100;   ///< loss-scaling skips beyond this and the step count: diverged
  CheckpointOptions checkpoints = {};
};

struct FitHooks {
  /// A line for the person running it, progress lines included (when not set: stderr,
  /// with a progress bar on a terminal).
  std::function<void(const std::string&)> say = {};
  /// Each progress record ({"type": "train", "step", "epoch", "loss", ...}) and each
  /// record `evaluate` returns: the programs append them to metrics.jsonl.
  std::function<void(const nlohmann::json&)> record = {};
  /// Runs an evaluation at `step` (every FitOptions::evaluate_every steps); returns its
  /// record. The model is the one being trained (evaluate() on it does not disturb training).
  std::function<nlohmann::json(std::int64_t step)> evaluate = {};
  /// After a resumed run has read its checkpoint: the step it continues from (the programs
  /// drop later records from metrics.jsonl, which this run will make again).
  std::function<void(std::int64_t step)> on_resume = {};
  /// After each checkpoint is complete (and older ones are removed): its directory and step.
  std::function<void(const std::string& dir, std::int64_t step)> on_checkpoint = {};
};

struct FitResult {
  std::int64_t steps = 0;              ///< the step the run ended at (the total)
  std::int64_t resumed_from = 0;       ///< the checkpoint's step when resumed, else 0
  std::int64_t skipped_steps = 0;      ///< steps skipped by loss scaling, over the whole run
  double seconds = 0;                  ///< wall time of this process's steps
  double sentences = 0;                ///< rows trained on in this run (by all ranks)
  double steady_sentences_per_s = 0;   ///< from step 3 of this process on, without saving (0 if too few steps)
  std::string last_checkpoint;         ///< "" when checkpoints are off
};

/// Steps of a run of `rows` training rows: int(rows / (batch x accumulation) x epochs),
/// as the original scripts compute num_train_steps. Throws when that is 0.
std::int64_t training_steps(std::size_t rows, const FitOptions& options);

/// Trains `model` (Policy: its precision policy) on every row of `train`.
template <class Policy, class Model>
FitResult fit(Model& model, const data::FeatureCache& train, const FitOptions& options, const FitHooks& hooks = {});

/// The same, data parallel over the ranks of `comm` (dist/data_parallel.hpp): every rank
/// calls it with the same options and data; options.batch_size is each rank's share, so
/// a step takes batch_size x ranks rows (x accumulation_steps), the same rows, in the
/// same order, as one process at that batch size. Rank 0's initial weights go to every
/// rank; gradients are averaged in buckets that overlap backward. Rank 0 alone writes
/// checkpoints and calls say, record and on_checkpoint; every rank calls evaluate (which
/// may be collective) and on_resume. The loss recorded is the mean over all the ranks'
/// rows. FitResult's sentences count every rank's rows.
template <class Policy, class Model, dist::AsyncCommunicator C>
FitResult fit(Model& model, const data::FeatureCache& train, const FitOptions& options, const FitHooks& hooks, C& comm,
              const dist::DataParallelOptions& data_parallel = {});

/// The same with the model's data on a communicator of its own: `comm` carries the host's
/// collectives (the loss, the evaluation's rows; MPI), `device_comm` the initial weights and
/// the gradients (dist::NcclComm over the same ranks, one GPU each, for a model on a CUDA
/// device: that is how GPUs train data parallel). The overload above is this one with
/// device_comm = comm.
template <class Policy, class Model, dist::AsyncCommunicator C, dist::AsyncCommunicator G>
FitResult fit(Model& model, const data::FeatureCache& train, const FitOptions& options, const FitHooks& hooks, C& comm,
              G& device_comm, const dist::DataParallelOptions& data_parallel = {});

struct Evaluation {
  Predictions predictions;
  metrics::ClassificationReport report;
  /// eval_results.txt's metrics: eval_accuracy, eval_loss, precision/recall/f1-score
  /// (micro), *_mac and f1-macro, *_weighted and f1-weighted.
  std::map<std::string, double> metrics;
};

/// Predicts every row of `cache` and scores the predictions against its labels
/// (`options`: predict's, the batches' width among them).
template <class Model>
Evaluation evaluate(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                    const std::vector<std::string>& label_names, const PredictOptions& options = {});
/// The same, the rows split across the ranks of `comm` (predict's overload): every rank
/// gets one process's Evaluation.
template <class Model, dist::Communicator C>
Evaluation evaluate(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                    const std::vector<std::string>& label_names, const PredictOptions& options, C& comm);

// ============================================================================


inline std::int64_t training_steps(std::size_t rows, const FitOptions& o) {
  const auto rows_per_step = static_cast<double>(o.batch_size * o.accumulation_steps);
  const auto total = static_cast<std::int64_t>(static_cast<double>(rows) / rows_per_step * o.epochs);
  if (total < 1)
    throw Error("no training steps: " + std::to_string(rows) + " rows, batch " + std::to_string(o.batch_size) + " x " +
                std::to_string(o.accumulation_steps) + " accumulation steps, " + setting_text(o.epochs) +
                " epochs");
  return total;
}

template <class Policy, class Model>
FitResult fit(Model& model, const data::FeatureCache& train, const FitOptions& o, const FitHooks& hooks) {
  dist::LocalComm one;
  return fit<Policy>(model, train, o, hooks, one);
}

template <class Policy, class Model, dist::AsyncCommunicator C>
FitResult fit(Model& model, const data::FeatureCache& train, const FitOptions& o, const FitHooks& hooks, C& comm,
              const dist::DataParallelOptions& data_parallel) {
  return fit<Policy>(model, train, o, hooks, comm, comm, data_parallel);
}

template <class Policy, class Model, dist::AsyncCommunicator C, dist::AsyncCommunicator G>
FitResult fit(Model& model, const data::FeatureCache& train, const FitOptions& o, const FitHooks& hooks, C& comm,
              G& device_comm, const dist::DataParallelOptions& data_parallel) {
  using Clock = std::chrono::steady_clock;
  // A model on a CUDA device trains there (train/classifier.hpp); checkpoints go through
  // a host copy. Over several ranks its gradients and weights move over device_comm.
  using Device = nn::device_of_t<Model>;
  constexpr bool on_device = ops::on_cuda<Device>;
  const int ranks = comm.size();
  if (device_comm.size() != ranks || device_comm.rank() != comm.rank())
    throw Error("fit: the device communicator is rank " + std::to_string(device_comm.rank()) + " of " +
                std::to_string(device_comm.size()) + ", the host communicator rank " + std::to_string(comm.rank()) +
                " of " + std::to_string(ranks) + ": they must be the same ranks");
  // (Whether device_comm takes the model's memory, the averager and ZeRO-1 check below.)
  const bool lead = comm.rank() == 0;
  const auto say = [&](const std::string& s) {
    if (!lead) return;
    if (hooks.say) hooks.say(s);
    else std::fprintf(stderr, "%s\n", s.c_str());
  };
  if (o.batch_size < 1 || o.accumulation_steps < 1) throw Error("fit: batch_size and accumulation_steps must be at least 1");
  if (o.group_by_length && o.pad_to_max_length)
    throw Error("fit: group_by_length needs batches as wide as their longest row, not pad_to_max_length");
  if (o.token_scheme == data::TokenScheme::tensorflow && !o.pad_to_max_length)
    throw Error("fit: the tensorflow token scheme averages the loss over every position of max_seq_length, padding "
                "included: it needs pad_to_max_length");
  FitOptions global = o;  // the step as one process sees it: batch_size x ranks rows
  global.batch_size = o.batch_size * ranks;
  const std::int64_t total = training_steps(train.rows(), global);
  const auto schedule = optim::WarmupLinearDecay::with_proportion(o.learning_rate, total, o.warmup_proportion);
  const auto& ck = o.checkpoints;
  std::map<std::string, std::string> settings = ck.settings;
  if (settings.empty()) {
    settings = {{"batch_size", std::to_string(global.batch_size)},  // the global batch: resumable on another rank count
                {"accumulation_steps", std::to_string(o.accumulation_steps)},
                {"epochs", setting_text(o.epochs)},
                {"learning_rate", setting_text(o.learning_rate)},
                {"warmup_proportion", setting_text(o.warmup_proportion)},
                {"max_grad_norm", setting_text(o.max_grad_norm)},
                {"shuffle", o.shuffle ? "true" : "false"},
                {"pad_to_max_length", o.pad_to_max_length ? "true" : "false"},
                {"group_by_length", o.group_by_length ? "true" : "false"},
                {"seed", std::to_string(o.seed)},
                {"precision", Policy::name},
                {"training_data_xxh64", detail::hex64(train.header().source_xxh64)}};
    // Recorded only when not the default, so that older checkpoints still resume.
    if (o.token_scheme == data::TokenScheme::tensorflow) settings["token_scheme"] = "tensorflow";
  }

  optim::AdamW optimizer;  // sharded: the whole state, assembled only to write or read a checkpoint
  ClassifierTrainer<Model, Policy> trainer(
      model, {.max_grad_norm = o.max_grad_norm, .seed = o.seed, .rank = static_cast<std::uint32_t>(comm.rank())});
  std::optional<dist::GradientAverager<G, Device>> averager;
  std::optional<dist::ShardedOptimizer<optim::AdamW, G, Device>> sharded;
  if (data_parallel.shard_optimizer) {
    sharded.emplace(device_comm, model);
    trainer.set_gradient_sync(&*sharded);
  } else if (ranks > 1) {
    averager.emplace(device_comm, model, data_parallel);
    trainer.set_gradient_sync(&*averager);
  }
  data::Batcher batcher(train, {.batch_size = o.batch_size,
                                .rank = comm.rank(),
                                .world_size = ranks,
                                .shuffle = o.shuffle,
                                .seed = o.seed,
                                .drop_remainder = true,
                                .trim_padding = !o.pad_to_max_length,
                                .group_by_length = o.group_by_length,
                                .token_scheme = o.token_scheme,
                                .word_labels = o.word_labels});
  const auto accum = o.accumulation_steps;
  const std::size_t steps_per_epoch =
      std::max<std::size_t>(1, batcher.batches_per_epoch() / static_cast<std::size_t>(accum));

  FitResult result;
  TrainingState state;
  state.settings = settings;
  // The checkpoints of this run, oldest first: the ones pruning may remove. Others under
  // the root (an earlier run's; ones newer than the resumed checkpoint, which this run
  // will write again) are removed once this run's first checkpoint is complete.
  std::vector<std::int64_t> kept;
  bool swept = false;
  if (ck.resume) {
    if (ck.root.empty()) throw Error("fit: resume needs checkpoints.root");
    std::vector<std::string> rejected;
    const auto found = find_checkpoint(ck.root, &rejected);
    if (!found) {
      std::string why = "no checkpoint-<step> directory";
      if (!rejected.empty()) {
        why = "no valid checkpoint:";
        for (const auto& r : rejected) why += "\n  " + r;
      }
      throw Error("cannot resume: " + ck.root + " has " + why);
    }
    for (const auto& passed : found->passed_over)
      say("warning: not resuming from " + passed + "; using " + found->dir + " instead");
    const TrainingState saved = detail::state_from_json(detail::read_json(found->dir + "/state.json"),
                                                        found->dir + "/state.json");
    require_same_settings(found->dir, saved.settings, settings);  // before anything is loaded
    if constexpr (on_device) {  // read on the host, then copied up (weights and moments)
      auto host = nn::to_device<nn::on_device_t<Model, Cpu>>(model);
      state = read_checkpoint(found->dir, host, optimizer);
      // In place: the averager and ZeRO-1 above hold the model's Vars, which replacing
      // the model (layers in a vector) would leave dangling.
      nn::copy_values(model, host);
      if (!sharded) trainer.device_step().load_from(optimizer);  // ZeRO-1 keeps its slice alone (below)
    } else {
      state = read_checkpoint(found->dir, model, optimizer);
    }
    if (sharded) {  // this rank's slice of the moments; the whole state is let go
      sharded->scatter_state(optimizer);
      optimizer = optim::AdamW{};
    }
    if (state.global_step > total)
      throw Error(found->dir + " is at step " + std::to_string(state.global_step) + ", past this run's " +
                  std::to_string(total) + " steps");
    trainer.set_dropout_step(state.dropout_step);
    trainer.scaler().restore(state.loss_scaler);
    batcher.start_epoch(state.epoch, static_cast<std::size_t>(state.batches_taken));
    for (const auto step : checkpoint_steps(ck.root))
      if (step <= state.global_step && verify_checkpoint(checkpoint_dir(ck.root, step)).empty()) kept.push_back(step);
    result.resumed_from = state.global_step;
    if (hooks.on_resume) hooks.on_resume(state.global_step);
    say("resumed from " + found->dir + " (step " + std::to_string(state.global_step) + " of " + std::to_string(total) +
        ", epoch " + std::to_string(state.epoch) + ", batch " + std::to_string(state.batches_taken) + ")");
  } else {
    batcher.start_epoch(0);
  }
  // Every rank starts from rank 0's weights (a resumed run's are equal already).
  if (ranks > 1) dist::broadcast_parameters(device_comm, model);

  const auto checkpoint = [&] {
    state.epoch = batcher.epoch();
    state.batches_taken = batcher.batches_taken();
    state.dropout_step = trainer.dropout_step();
    state.optimizer_steps = optimizer.steps();
    state.loss_scaler = trainer.scaler().state();
    std::string dir;
    if constexpr (on_device) {  // the weights and moments copied to the host, then written
      if (!sharded) trainer.device_step().store_into(optimizer);  // ZeRO-1: gathered already
      auto host = nn::to_device<nn::on_device_t<Model, Cpu>>(model);
      dir = write_checkpoint(ck.root, host, optimizer, state, ck.extra_files);
    } else {
      dir = write_checkpoint(ck.root, model, optimizer, state, ck.extra_files);
    }
    std::erase(kept, state.global_step);
    kept.push_back(state.global_step);
    // Older checkpoints go only now that the new one is complete.
    const auto keep = static_cast<std::size_t>(std::max<std::int64_t>(1, ck.keep));
    std::vector<std::int64_t> remove;
    while (kept.size() > keep) {
      remove.push_back(kept.front());
      kept.erase(kept.begin());
    }
    if (!swept) {
      for (const auto step : checkpoint_steps(ck.root))
        if (std::find(kept.begin(), kept.end(), step) == kept.end() && std::find(remove.begin(), remove.end(), step) == remove.end()) {
          remove.push_back(step);
          say("removing " + checkpoint_dir(ck.root, step) + " (not a checkpoint of this run)");
        }
      swept = true;
    }
    for (const auto step : remove) std::filesystem::remove_all(checkpoint_dir(ck.root, step));
    result.last_checkpoint = dir;
    if (hooks.on_checkpoint) hooks.on_checkpoint(dir, state.global_step);
  };

  const std::int64_t rows_per_step = global.batch_size * accum;
  // The progress lines go through `say` when the caller set it (no progress bar then);
  // ranks other than 0 show none.
  const auto quiet = [](const std::string&) {};
  ProgressLog progress(total, o.log_every, rows_per_step,
                       !lead ? std::function<void(const std::string&)>(quiet)
                             : hooks.say ? hooks.say : std::function<void(const std::string&)>{});
  const auto t_start = Clock::now();
  double steady_s = 0;
  std::int64_t steady_steps = 0, steps_here = 0, skipped_here = 0;
  data::Batch batch;
  while (state.global_step < total) {
    const auto t0 = Clock::now();
    double loss = 0;
    for (std::int64_t k = 0; k < accum; ++k) {
      while (!batcher.next(batch)) batcher.start_epoch(batcher.epoch() + 1);
      loss += trainer.backward(batch, k == accum - 1) / static_cast<double>(accum);
    }
    if (ranks > 1) {  // the mean over every rank's rows, as one process would report it
      float mean = static_cast<float>(loss);
      comm.all_reduce(&mean, 1, dist::ReduceOp::avg);
      loss = mean;
    }
    const auto lr = static_cast<float>(schedule(state.global_step));
    const auto outcome = sharded ? trainer.apply(*sharded, lr) : trainer.apply(optimizer, lr);
    if (!outcome.applied) {
      ++skipped_here;
      const auto skipped = trainer.scaler().skipped_steps();
      if (skipped > o.max_skipped_steps && skipped > state.global_step)
        throw Error("the loss scale fell to " + setting_text(trainer.loss_scale()) +
                    " and steps keep overflowing: the training diverged");
      continue;  // the same step again (with the next micro-batches), at the smaller scale
    }
    ++state.global_step;
    ++steps_here;
    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (steps_here > 2) {
      steady_s += step_s;
      ++steady_steps;
    }
    const double epoch = static_cast<double>(state.global_step) / static_cast<double>(steps_per_epoch);
    const auto rec = progress.step(state.global_step, epoch, loss, lr, Policy::loss_scaling ? outcome.loss_scale : 0);
    if (hooks.record && lead) hooks.record(rec);
    if (o.evaluate_every > 0 && hooks.evaluate && state.global_step % o.evaluate_every == 0 &&
        state.global_step < total) {
      const auto eval = hooks.evaluate(state.global_step);
      if (hooks.record && lead) hooks.record(eval);
    }
    const bool save = !ck.root.empty() &&
                      (state.global_step == total || (ck.every_steps > 0 && state.global_step % ck.every_steps == 0));
    if (save && sharded) sharded->gather_state(optimizer);  // collective: every rank takes part
    if (save && lead) checkpoint();  // rank 0 writes: every rank holds the same state
    if (save && sharded) optimizer = optim::AdamW{};
  }
  result.steps = state.global_step;
  result.skipped_steps = trainer.scaler().skipped_steps();
  result.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  result.sentences = static_cast<double>(steps_here * rows_per_step);
  if (steady_steps > 0) result.steady_sentences_per_s = static_cast<double>(steady_steps * rows_per_step) / steady_s;
  if (skipped_here) say(std::to_string(skipped_here) + " steps skipped (loss scale)");
  return result;
}

template <class Model>
Evaluation evaluate(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                    const std::vector<std::string>& label_names, const PredictOptions& options) {
  dist::LocalComm one;
  return evaluate(model, cache, batch_size, label_names, options, one);
}

template <class Model, dist::Communicator C>
Evaluation evaluate(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                    const std::vector<std::string>& label_names, const PredictOptions& options, C& comm) {
  Evaluation e;
  e.predictions = predict(model, cache, batch_size, static_cast<index_t>(label_names.size()), options, comm);
  e.report = metrics::classification_report(e.predictions.truth, e.predictions.predicted, label_names);
  const auto& r = e.report;
  e.metrics = {{"eval_accuracy", r.accuracy},
               {"eval_loss", e.predictions.mean_loss},
               {"precision", r.micro.precision},
               {"recall", r.micro.recall},
               {"f1-score", r.micro.f1},
               {"precision_mac", r.macro.precision},
               {"recall_mac", r.macro.recall},
               {"f1-macro", r.macro.f1},
               {"precision_weighted", r.weighted.precision},
               {"recall_weighted", r.weighted.recall},
               {"f1-weighted", r.weighted.f1}};
  return e;
}

}  // namespace ctdl::train

#pragma once
// Dynamic loss scaling for fp16 training.
//
// The loss is multiplied by `scale()` before backward, so small gradients survive the
// fp16 rounding of activation gradients; the optimizer divides it out again. After each
// backward the trainer reports whether every gradient is finite:
//   - finite: the step is applied; after growth_interval (1000) such steps in a row the
//     scale doubles;
//   - inf or nan: the step is skipped (weights and optimizer state untouched) and the
//     count of clean steps restarts; at the backoff_interval-th such step since the scale
//     last changed (not necessarily in a row) the scale halves, never below min_scale (1).
// The defaults are the original pipeline's: NVIDIA's TensorFlow optimization.py, which
// run_ner_consensus.py trains with under --use_fp16, wraps the optimizer in
// tf.contrib.mixed_precision's ExponentialUpdateLossScaleManager(init_loss_scale=2^32,
// incr_every_n_steps=1000, decr_every_n_nan_or_inf=2, decr_ratio=0.5), whose rules these
// are. backoff_interval = 1 halves at every overflow, as PyTorch's GradScaler and NVIDIA's
// later DynamicLossScale do. The first steps bring 2^32 down to what the model's
// gradients allow (two skipped steps per halving by default).
//
// The rule is `LossScaler::next`, a plain function of the state that the CUDA step
// (kernels/cuda/optim.cuh) runs on the device too.

#include <algorithm>
#include <cstdint>

#include "ctdl/core/config.hpp"

namespace ctdl::precision {

class LossScaler {
 public:
  struct Options {
    double initial_scale = 4294967296.0;  // 2^32
    std::int64_t growth_interval = 1000;  // clean steps in a row before the scale grows
    double growth_factor = 2.0;
    std::int64_t backoff_interval = 2;    // overflowing steps since the last change before it backs off
    double backoff_factor = 0.5;
    double min_scale = 1.0;
  };

  /// What a checkpoint keeps, so that a resumed run scales (and skips) as the
  /// uninterrupted one would have.
  struct State {
    double scale = 1;
    std::int64_t clean_steps = 0;     ///< finite steps in a row since the scale last changed
    std::int64_t skipped_steps = 0;   ///< every overflowing step of the run
    std::int64_t overflow_steps = 0;  ///< overflowing steps since the scale last changed
  };

  /// The rule: `s` after a step whose gradients are finite or not; returns whether the
  /// step is applied.
  CTDL_HOST_DEVICE static bool next(State& s, const Options& o, bool grads_finite) {
    if (!grads_finite) {
      ++s.skipped_steps;
      s.clean_steps = 0;
      if (++s.overflow_steps >= o.backoff_interval) {
        const double backed_off = s.scale * o.backoff_factor;
        s.scale = backed_off > o.min_scale ? backed_off : o.min_scale;
        s.overflow_steps = 0;
      }
      return false;
    }
    if (++s.clean_steps >= o.growth_interval) {
      s.scale *= o.growth_factor;
      s.clean_steps = 0;
      s.overflow_steps = 0;
    }
    return true;
  }

  LossScaler() : LossScaler(Options{}) {}
  explicit LossScaler(Options options) : options_(options), state_{.scale = options.initial_scale} {}

  const Options& options() const { return options_; }
  double scale() const { return state_.scale; }
  std::int64_t skipped_steps() const { return state_.skipped_steps; }
  std::int64_t clean_steps() const { return state_.clean_steps; }
  std::int64_t overflow_steps() const { return state_.overflow_steps; }

  State state() const { return state_; }
  void restore(const State& s) { state_ = s; }

  /// Records the outcome of a backward; returns whether the step is to be applied.
  bool update(bool grads_finite) { return next(state_, options_, grads_finite); }

 private:
  Options options_;
  State state_;
};

}  // namespace ctdl::precision

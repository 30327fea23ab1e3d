#pragma once
// Dynamic loss scaling for fp16 training.
//
// The loss is multiplied by `scale()` before backward, so small gradients survive the
// fp16 rounding of activation gradients; the optimizer divides it out again. After each
// backward the trainer reports whether every gradient is finite:
//   - finite: the step is applied; after growth_interval (1000) such steps in a row the
//     scale doubles;
//   - inf or nan: the step is skipped (weights and optimizer state untouched), the scale
//     halves (never below min_scale, 1) and the count of clean steps restarts.
// The initial scale is 2^32, as NVIDIA's recipes start; the first steps halve it down to
// what the model's gradients allow.

#include <algorithm>
#include <cstdint>

namespace ctdl::precision {

class LossScaler {
 public:
  struct Options {
    double initial_scale = 4294967296.0;  // 2^32
    std::int64_t growth_interval = 1000;
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    double min_scale = 1.0;
  };

  LossScaler() : LossScaler(Options{}) {}
  explicit LossScaler(Options options) : options_(options), scale_(options.initial_scale) {}

  const Options& options() const { return options_; }
  double scale() const { return scale_; }
  std::int64_t skipped_steps() const { return skipped_; }
  std::int64_t clean_steps() const { return clean_; }

  /// What a checkpoint keeps, so that a resumed run scales (and skips) as the
  /// uninterrupted one would have.
  struct State {
    double scale;
    std::int64_t clean_steps, skipped_steps;
  };
  State state() const { return {scale_, clean_, skipped_}; }
  void restore(const State& s) {
    scale_ = s.scale;
    clean_ = s.clean_steps;
    skipped_ = s.skipped_steps;
  }

  /// Records the outcome of a backward; returns whether the step is to be applied.
  bool update(bool grads_finite) {
    if (!grads_finite) {
      scale_ = std::max(options_.min_scale, scale_ * options_.backoff_factor);
      clean_ = 0;
      ++skipped_;
      return false;
    }
    if (++clean_ >= options_.growth_interval) {
      scale_ *= options_.growth_factor;
      clean_ = 0;
    }
    return true;
  }

 private:
  Options options_;
  double scale_;
  std::int64_t clean_ = 0, skipped_ = 0;
};

}  // namespace ctdl::precision

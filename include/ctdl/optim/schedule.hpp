#pragma once
// The learning-rate schedule of BERT fine-tuning: linear warmup from 0 to the peak over
// the first warmup_steps steps, then linear decay from the peak to 0 at the last step.
//
//   lr(s) = peak * s / W                  for s < W
//   lr(s) = peak * (T - s) / (T - W)      for W <= s <= T        (s counts from 0)
//
// Google's optimization.py decays from step 0 instead (lr(s) = peak (1 - s/T) after
// warmup, so the peak itself is never reached when W > 0); `decay_from_start` selects that.

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ctdl::optim {

struct WarmupLinearDecay {
  double peak = 5e-5;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  bool decay_from_start = false;

  /// warmup_steps = int(total_steps * proportion), as the original scripts compute it.
  static WarmupLinearDecay with_proportion(double peak, std::int64_t total_steps, double proportion) {
    return {peak, static_cast<std::int64_t>(static_cast<double>(total_steps) * proportion), total_steps};
  }

  double operator()(std::int64_t step) const {
    const auto s = static_cast<double>(step), T = static_cast<double>(total_steps),
               W = static_cast<double>(warmup_steps);
    if (step < warmup_steps) return peak * s / W;
    if (step >= total_steps) return 0;
    if (decay_from_start) return peak * (1 - s / T);
    return peak * (T - s) / std::max(1.0, T - W);
  }
};

}  // namespace ctdl::optim

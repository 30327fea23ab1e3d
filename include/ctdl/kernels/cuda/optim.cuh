#pragma once
// The optimizer step on a CUDA device: multi-tensor fused AdamW, LAMB and SGD updates,
// the global gradient norm and clipping, the finiteness check and dynamic loss scaling,
// with every decision kept on the device (no host synchronisation inside a step).
//
// The device twin of optim/adamw.hpp, optim/lamb.hpp, optim/sgd.hpp,
// optim/optimizer.hpp (global_grad_norm, all_grads_finite, clip_factor),
// precision/loss_scaler.hpp and the step of train::ClassifierTrainer::apply; the
// update formulas are theirs, evaluated in float with the same coefficients, in the same
// order and with one rounding per operation (no fused multiply-adds), so a step gives
// the CPU's bits wherever grad_scale and LAMB's trust ratios come out the same:
//   AdamW  m = b1 m + a1 g,  v = b2 v + a2 g^2,  w -= lr (m / (sqrt(v) + eps) + wd w)
//   LAMB   m, v as AdamW;  u = (m c1) / (sqrt(v c2) + eps) + wd w,
//          c1 = 1 / (1 - b1^t), c2 = 1 / (1 - b2^t);  w -= (lr r) u,
//          r = ||w|| / ||u|| for decayed tensors when both norms are non-zero, else 1
//   SGD    b = momentum b + (g + wd w),  w -= lr b
// where a = 1 - b, wd = 0 for tensors whose weight_decay flag is off, and g is the
// stored gradient times the step's grad_scale.
//
// One training step on the device:
//   prepare_step(params, state, options)   S = sum of g^2 over every stored gradient (in
//                                          double), finite = isfinite(S); then, as
//                                          ClassifierTrainer::apply and LossScaler::update:
//       scale_used = loss scaling ? state.loss_scale : 1
//       finite:     applied; under loss scaling LossScaler::next (clean_steps + 1,
//                   and at growth_interval the scale grows)
//       not finite: skipped; under loss scaling LossScaler::next (clean_steps = 0,
//                   skipped_steps + 1, and at the backoff_interval-th overflow since
//                   the scale last changed it backs off, >= min_scale)
//       unscale    = float(1 / (scale_used * max(1, micro_batches)))
//       grad_norm  = sqrt(S) * unscale                     (optim::global_grad_norm)
//       clip       = clip_factor(grad_norm, max_grad_norm)  (optim::clip_factor)
//       grad_scale = unscale * clip                          (float, as the CPU's)
//       optimizer_steps + 1 when applied
//   adamw_step / lamb_step / sgd_step(params, state, options, lr)
//                                          read state.applied (a skipped step returns at
//                                          once: weights and moments untouched) and
//                                          state.grad_scale.
// lr is a host value (the schedule is computed on the host); everything that depends on
// the gradients stays in StepState, in device memory. read_step_state copies it back
// for logging (it synchronises the stream: call it outside the step's critical path).
//
// Finiteness from the sum of squares: every |g| < 2^128 (float, bf16 and fp16 range), so
// g^2 < 2^256 and a sum of fewer than 2^700 such terms is finite in double; an inf or a
// NaN makes the sum inf or NaN (all terms are >= 0, so inf - inf never happens). So
// isfinite(S) == all_grads_finite, exactly.
//
// Determinism: S, LAMB's per-tensor norms and the trust ratios are two-phase
// reductions (per-chunk partial sums in double, then a fixed-order sum of the
// partials): the same bits on every run on the same device. They are not the CPU's bits
// (other summation order), which is 1e-16 relative in double.
//
// Shape contract: a ParamList holds any number of tensors of any sizes (0 included),
// each a flat float array of master weights, a gradient of G = float, bf16 or fp16 with
// the same element count, and float optimizer state of that count: AdamW and LAMB use m
// and v, SGD uses m (its momentum buffer), zero-filled before the first step as the
// CPU's SlotSet. All pointers are device pointers; the tensors must not overlap. The
// CPU optimizers read float gradients (the policies keep parameters and their gradients
// in float); bf16/fp16 gradients are offered for a device-side policy that stores them
// so, and are read as exactly their float value.
//
// Ordering: every function runs asynchronously on `stream`; the kernels of one
// ParamList share its scratch, so run them on one stream.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "ctdl/core/device.hpp"
#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/optim/optimizer.hpp"
#include "ctdl/optim/sgd.hpp"
#include "ctdl/precision/loss_scaler.hpp"

namespace ctdl::cuda {

/// One parameter tensor as the fused updates see it (device pointers).
template <class G>
struct ParamSlot {
  float* param = nullptr;    ///< master weights, updated in place
  const G* grad = nullptr;   ///< the accumulated gradient (read only)
  float* m = nullptr;        ///< AdamW/LAMB first moment; SGD momentum buffer
  float* v = nullptr;        ///< AdamW/LAMB second moment; unused by SGD (may be null)
  std::int64_t size = 0;     ///< elements of each of the arrays above
  bool weight_decay = true;  ///< Var::weight_decay(): decay (and LAMB's trust ratio) on or off
};

/// Elements one block of a fused kernel handles: a tensor is cut into chunks of this
/// many elements (the last one shorter), and one launch covers the chunks of all tensors.
inline constexpr std::int64_t kOptimChunk = 4096;

/// The tensors of one optimizer, described once on the device and kept: the slot array,
/// the chunk table (which tensor and where each block starts) and the scratch of the
/// reductions. Built once per parameter list (it allocates with cudaMalloc and copies
/// synchronously); the pointers in the slots must stay valid while it is used.
template <class G>
class ParamList {
 public:
  static_assert(std::is_same_v<G, float> || std::is_same_v<G, bf16> || std::is_same_v<G, fp16>,
                "cuda::ParamList: gradients are float, bf16 or fp16");

  /// Where one block's elements lie: tensor `tensor`, elements [begin, min(begin +
  /// kOptimChunk, size)).
  struct Chunk {
    std::int32_t tensor;
    std::int64_t begin;
  };
  /// The chunks of one tensor: [first, first + count) in the chunk table.
  struct ChunkRange {
    std::int64_t first, count;
  };

  explicit ParamList(std::vector<ParamSlot<G>> slots);

  /// The same tensors with new pointers (a step's gradients are new allocations): when
  /// `slots` has this list's tensor count and sizes, takes them, uploads the slot array
  /// alone if a pointer or flag changed (the chunk tables and scratch stay) and returns
  /// true; otherwise changes nothing and returns false (build a new list).
  bool rebind(const std::vector<ParamSlot<G>>& slots);

  std::size_t size() const { return host_slots_.size(); }
  std::int64_t chunks() const { return chunks_; }
  const std::vector<ParamSlot<G>>& host_slots() const { return host_slots_; }

  // Device arrays, for the kernels.
  const ParamSlot<G>* slots() const { return slots_.get(); }
  const Chunk* chunk_table() const { return chunk_table_.get(); }
  const ChunkRange* chunk_ranges() const { return chunk_ranges_.get(); }
  /// Scratch: 2 * chunks() doubles (per-chunk partial sums of the reductions).
  double* partial_sums() const { return partial_sums_.get(); }
  /// Scratch: size() floats (LAMB's per-tensor trust ratios).
  float* trust_ratios() const { return trust_ratios_.get(); }

 private:
  struct DeviceFree {
    void operator()(void* p) const noexcept { cudaFree(p); }
  };
  template <class T>
  using DeviceArray = std::unique_ptr<T[], DeviceFree>;
  static void check_slot(std::size_t k, const ParamSlot<G>& s);
  template <class T>
  static DeviceArray<T> allocate(std::size_t n, const char* what);
  template <class T>
  static DeviceArray<T> upload(const std::vector<T>& host, const char* what);

  std::vector<ParamSlot<G>> host_slots_;
  std::int64_t chunks_ = 0;
  DeviceArray<ParamSlot<G>> slots_;
  DeviceArray<Chunk> chunk_table_;
  DeviceArray<ChunkRange> chunk_ranges_;
  DeviceArray<double> partial_sums_;
  DeviceArray<float> trust_ratios_;
};

/// What one training run's step decisions need, kept in device memory (one StepState
/// per run, owned by the caller; a checkpoint saves the first five fields).
struct StepState {
  // Kept across steps.
  double loss_scale = 1;             ///< LossScaler::scale(): what the next backward multiplies the loss by
  std::int64_t clean_steps = 0;      ///< LossScaler::clean_steps()
  std::int64_t skipped_steps = 0;    ///< LossScaler::skipped_steps()
  std::int64_t overflow_steps = 0;   ///< LossScaler::overflow_steps()
  std::int64_t optimizer_steps = 0;  ///< the optimizer's steps(): applied updates (LAMB's t)
  // This step's, written by prepare_step.
  double grad_sum_squares = 0;  ///< sum of the stored gradients' squares (before any scaling)
  double step_loss_scale = 1;   ///< StepOutcome::loss_scale: the scale this step's gradients carry
  double grad_norm = 0;         ///< StepOutcome::grad_norm: unscaled and averaged, before clipping; 0 when skipped
  float clip = 1;               ///< clip_factor(grad_norm, max_grad_norm); 1 when skipped
  float grad_scale = 0;         ///< unscale * clip: what the updates multiply every gradient by; 0 when skipped
  std::int32_t grads_finite = 1;  ///< all_grads_finite
  std::int32_t applied = 0;       ///< StepOutcome::applied: the update kernels run
};

/// How prepare_step decides (the trainer's options and the policy's).
struct StepOptions {
  bool loss_scaling = false;                     ///< Policy::loss_scaling (Fp16Mixed)
  precision::LossScaler::Options scaler{};       ///< growth and backoff, as the CPU LossScaler's
  double max_grad_norm = 1.0;                    ///< <= 0: no clipping
  int micro_batches = 1;                         ///< accumulated since the last step
};

/// A StepState starting from a loss scaler's state (a fresh LossScaler or a checkpoint's)
/// and an optimizer step count.
inline StepState initial_step_state(const precision::LossScaler::State& scaler, std::int64_t optimizer_steps = 0);
/// *state = value, asynchronously on `stream` (the value travels as a kernel argument).
inline void write_step_state(StepState* state, const StepState& value, cudaStream_t stream = current_stream());
/// A host copy of *state, for logging and checkpoints; synchronises `stream`.
inline StepState read_step_state(const StepState* state, cudaStream_t stream = current_stream());
/// The loss scaler's part of a host copy, for train::TrainState.
CTDL_HOST_DEVICE inline precision::LossScaler::State scaler_state(const StepState& s) {
  return {.scale = s.loss_scale,
          .clean_steps = s.clean_steps,
          .skipped_steps = s.skipped_steps,
          .overflow_steps = s.overflow_steps};
}
/// *seed = float(state->loss_scale): the backward's seed under loss scaling (the CPU seeds
/// tape.backward with static_cast<float>(scaler.scale())).
inline void write_loss_scale(const StepState* state, float* seed, cudaStream_t stream = current_stream());

/// Checks and measures the gradients and decides the step (see the header comment).
template <class G>
void prepare_step(ParamList<G>& params, StepState* state, const StepOptions& options,
                  cudaStream_t stream = current_stream());

/// prepare_step in two halves, for gradients split across ranks (ZeRO-1,
/// dist/sharded_optimizer.hpp): grad_sum_squares writes the sum of squares of this
/// list's gradients to *sum (one double in device memory); the caller gathers the
/// ranks' sums into `sums` (rank order, the same array on every rank), and decide_step
/// decides from their total (added in one fixed order: the same bits on every rank), as
/// prepare_step decides from its one list's. With one sum,
/// grad_sum_squares then decide_step gives prepare_step's StepState bit for bit (the
/// same partial sums added in the same order; the one sum then gains only exact zeros).
template <class G>
void grad_sum_squares(ParamList<G>& params, double* sum, cudaStream_t stream = current_stream());
inline void decide_step(const double* sums, std::int64_t count, StepState* state, const StepOptions& options,
                        cudaStream_t stream = current_stream());

/// The fused updates: one launch each (LAMB: three), skipped on the device when
/// state->applied is 0.
template <class G>
void adamw_step(const ParamList<G>& params, const StepState* state, const optim::AdamOptions& options, float lr,
                cudaStream_t stream = current_stream());
/// LAMB uses params' scratch (per-chunk norms, per-tensor trust ratios) and
/// t = state->optimizer_steps (prepare_step has counted this step).
template <class G>
void lamb_step(ParamList<G>& params, const StepState* state, const optim::AdamOptions& options, float lr,
               cudaStream_t stream = current_stream());
template <class G>
void sgd_step(const ParamList<G>& params, const StepState* state, const optim::Sgd::Options& options, float lr,
              cudaStream_t stream = current_stream());

// ============================================================================

namespace optim_detail {

inline constexpr int kReduceThreads = 1024;  // the one block that sums the partials

// The update formulas' float arithmetic, one rounding per operation, as the CPU's loops
// round it: left alone, nvcc fuses a * b + c into one fma (one rounding fewer), and the
// device's weights would drift from the CPU's by an ulp here and there. The _rn
// intrinsics are never fused, and divide and take square roots correctly rounded
// whatever -prec-div / -prec-sqrt / --use_fast_math say.
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }

/// The elements [begin, end) of the chunk this block handles.
template <class G>
struct ChunkView {
  ParamSlot<G> slot;
  std::int64_t begin, end;
};
template <class G>
__device__ __forceinline__ ChunkView<G> this_chunk(const ParamSlot<G>* slots,
                                                    const typename ParamList<G>::Chunk* chunks) {
  const auto chunk = chunks[blockIdx.x];
  const ParamSlot<G> slot = slots[chunk.tensor];
  const std::int64_t end = chunk.begin + kOptimChunk < slot.size ? chunk.begin + kOptimChunk : slot.size;
  return {slot, chunk.begin, end};
}

// ---- the gradients' sum of squares, phase 1: one partial per chunk ----
template <class G>
__global__ void grad_squares_kernel(const ParamSlot<G>* slots, const typename ParamList<G>::Chunk* chunks,
                                    double* partial) {
  __shared__ double scratch[32];
  const auto c = this_chunk(slots, chunks);
  double sum = 0;
  for (std::int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    const double g = load(c.slot.grad, i);
    sum += g * g;
  }
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// ---- phase 2: the partials' sum, in one fixed order (one block) ----
__device__ __forceinline__ double sum_of_partials(const double* partial, std::int64_t count, double* scratch) {
  double sum = 0;
  for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  return block_sum(sum, scratch);
}

inline __global__ void sum_partials_kernel(const double* partial, std::int64_t count, double* out) {
  __shared__ double scratch[32];
  const double sum = sum_of_partials(partial, count, scratch);
  if (threadIdx.x == 0) *out = sum;
}

// ---- the step's decisions from the partials' sum: one block ----
inline __global__ void decide_step_kernel(const double* partial, std::int64_t chunks, StepState* state,
                                   StepOptions options) {
  __shared__ double scratch[32];
  const double sum = sum_of_partials(partial, chunks, scratch);
  if (threadIdx.x != 0) return;

  StepState s = *state;
  s.grad_sum_squares = sum;
  const bool finite = ::isfinite(sum);
  s.grads_finite = finite;
  s.applied = finite;
  s.step_loss_scale = options.loss_scaling ? s.loss_scale : 1.0;
  if (options.loss_scaling) {  // LossScaler::update: its rule, on the device
    precision::LossScaler::State scaler = scaler_state(s);
    precision::LossScaler::next(scaler, options.scaler, finite);
    s.loss_scale = scaler.scale;
    s.clean_steps = scaler.clean_steps;
    s.skipped_steps = scaler.skipped_steps;
    s.overflow_steps = scaler.overflow_steps;
  }
  if (finite) {  // ClassifierTrainer::apply
    const int micro_batches = options.micro_batches > 1 ? options.micro_batches : 1;
    const auto unscale = static_cast<float>(1.0 / (s.step_loss_scale * static_cast<double>(micro_batches)));
    s.grad_norm = ::sqrt(sum) * static_cast<double>(unscale);
    // optim::clip_factor
    s.clip = options.max_grad_norm <= 0 || !(s.grad_norm > options.max_grad_norm)
                 ? 1.f
                 : static_cast<float>(options.max_grad_norm / s.grad_norm);
    s.grad_scale = mul(unscale, s.clip);
    ++s.optimizer_steps;
  } else {  // what StepOutcome reports for a skipped step
    s.grad_norm = 0;
    s.clip = 1.f;
    s.grad_scale = 0.f;
  }
  *state = s;
}

inline __global__ void write_step_state_kernel(StepState* state, StepState value) { *state = value; }

inline __global__ void write_loss_scale_kernel(const StepState* state, float* seed) {
  *seed = static_cast<float>(state->loss_scale);
}

// ---- AdamW: one pass ----
template <class G>
__global__ void adamw_kernel(const ParamSlot<G>* slots, const typename ParamList<G>::Chunk* chunks,
                             const StepState* state, optim::AdamCoefficients c, float lr) {
  if (!state->applied) return;
  const float grad_scale = state->grad_scale;
  const auto ch = this_chunk(slots, chunks);
  const float wd = ch.slot.weight_decay ? c.decay : 0.f;
  for (std::int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
    const float g = mul(load(ch.slot.grad, i), grad_scale);
    const float w = ch.slot.param[i];
    const float m = add(mul(ch.slot.m[i], c.b1), mul(g, c.a1));
    const float v = add(mul(ch.slot.v[i], c.b2), mul(mul(g, g), c.a2));
    ch.slot.m[i] = m;
    ch.slot.v[i] = v;
    ch.slot.param[i] = sub(w, mul(add(div(m, add(sqrt_rn(v), c.eps)), mul(w, wd)), lr));
  }
}

// ---- LAMB: moments and norms, trust ratios, weights ----
/// The bias corrections of step t, as the CPU forms them: in double, rounded once.
struct LambCorrections {
  float c1, c2;
};
__device__ __forceinline__ LambCorrections lamb_corrections(double beta1, double beta2, std::int64_t t) {
  const auto td = static_cast<double>(t);
  return {static_cast<float>(1 / (1 - ::pow(beta1, td))), static_cast<float>(1 / (1 - ::pow(beta2, td)))};
}

/// u = (m c1) / (sqrt(v c2) + eps) + wd w, the CPU's expression in its order.
__device__ __forceinline__ float lamb_direction(float m, float v, float w, LambCorrections k, float eps, float wd) {
  return add(div(mul(m, k.c1), add(sqrt_rn(mul(v, k.c2)), eps)), mul(w, wd));
}

template <class G>
__global__ void lamb_moments_kernel(const ParamSlot<G>* slots, const typename ParamList<G>::Chunk* chunks,
                                    const StepState* state, optim::AdamCoefficients c, double beta1, double beta2,
                                    double* partial) {
  if (!state->applied) return;
  __shared__ double scratch[32];
  __shared__ LambCorrections corrections;
  if (threadIdx.x == 0) corrections = lamb_corrections(beta1, beta2, state->optimizer_steps);
  __syncthreads();
  const LambCorrections k = corrections;
  const float grad_scale = state->grad_scale;
  const auto ch = this_chunk(slots, chunks);
  const float wd = ch.slot.weight_decay ? c.decay : 0.f;
  double w_squares = 0, u_squares = 0;
  for (std::int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
    const float g = mul(load(ch.slot.grad, i), grad_scale);
    const float w = ch.slot.param[i];
    const float m = add(mul(ch.slot.m[i], c.b1), mul(g, c.a1));
    const float v = add(mul(ch.slot.v[i], c.b2), mul(mul(g, g), c.a2));
    ch.slot.m[i] = m;
    ch.slot.v[i] = v;
    const double u = lamb_direction(m, v, w, k, c.eps, wd);
    w_squares += static_cast<double>(w) * static_cast<double>(w);
    u_squares += u * u;
  }
  w_squares = block_sum(w_squares, scratch);
  u_squares = block_sum(u_squares, scratch);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = w_squares;
    partial[2 * blockIdx.x + 1] = u_squares;
  }
}

/// One block per tensor: ||w|| and ||u|| from its chunks' partials, in chunk order.
template <class G>
__global__ void lamb_trust_ratio_kernel(const ParamSlot<G>* slots,
                                        const typename ParamList<G>::ChunkRange* ranges, const double* partial,
                                        const StepState* state, float* ratios) {
  if (!state->applied) return;
  __shared__ double scratch[32];
  const auto range = ranges[blockIdx.x];
  double w_squares = 0, u_squares = 0;
  for (std::int64_t i = threadIdx.x; i < range.count; i += blockDim.x) {
    w_squares += partial[2 * (range.first + i)];
    u_squares += partial[2 * (range.first + i) + 1];
  }
  w_squares = block_sum(w_squares, scratch);
  u_squares = block_sum(u_squares, scratch);
  if (threadIdx.x != 0) return;
  float ratio = 1.f;  // biases and LayerNorm parameters: no trust ratio
  if (slots[blockIdx.x].weight_decay) {
    const double w_norm = ::sqrt(w_squares), u_norm = ::sqrt(u_squares);
    if (w_norm > 0 && u_norm > 0) ratio = static_cast<float>(w_norm / u_norm);
  }
  ratios[blockIdx.x] = ratio;
}

template <class G>
__global__ void lamb_update_kernel(const ParamSlot<G>* slots, const typename ParamList<G>::Chunk* chunks,
                                   const StepState* state, optim::AdamCoefficients c, double beta1, double beta2,
                                   const float* ratios, float lr) {
  if (!state->applied) return;
  __shared__ LambCorrections corrections;
  if (threadIdx.x == 0) corrections = lamb_corrections(beta1, beta2, state->optimizer_steps);
  __syncthreads();
  const LambCorrections k = corrections;
  const auto ch = this_chunk(slots, chunks);
  const float wd = ch.slot.weight_decay ? c.decay : 0.f;
  const float step = mul(lr, ratios[chunks[blockIdx.x].tensor]);  // the CPU's (lr * ratio)
  for (std::int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
    const float w = ch.slot.param[i];
    ch.slot.param[i] = sub(w, mul(lamb_direction(ch.slot.m[i], ch.slot.v[i], w, k, c.eps, wd), step));
  }
}

// ---- SGD: one pass ----
template <class G>
__global__ void sgd_kernel(const ParamSlot<G>* slots, const typename ParamList<G>::Chunk* chunks,
                           const StepState* state, float momentum, float decay, float lr) {
  if (!state->applied) return;
  const float grad_scale = state->grad_scale;
  const auto ch = this_chunk(slots, chunks);
  const float wd = ch.slot.weight_decay ? decay : 0.f;
  for (std::int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
    const float w = ch.slot.param[i];
    const float g = add(mul(load(ch.slot.grad, i), grad_scale), mul(w, wd));
    const float b = add(mul(ch.slot.m[i], momentum), g);
    ch.slot.m[i] = b;
    ch.slot.param[i] = sub(w, mul(b, lr));
  }
}

/// Throws naming `op` when a tensor lacks the state arrays the optimizer updates.
template <class G>
void require_state(const ParamList<G>& params, bool needs_v, const char* op) {
  for (std::size_t k = 0; k < params.size(); ++k) {
    const auto& s = params.host_slots()[k];
    if (s.size == 0) continue;
    if (!s.m || (needs_v && !s.v)) {
      throw Error(std::string(op) + ": parameter tensor " + std::to_string(k) + " has no " +
                  (!s.m ? "m" : "v") + " state array (ParamSlot::" + (!s.m ? "m" : "v") + " is null)");
    }
  }
}

inline void require_state_pointer(const void* state, const char* op) {
  if (!state) throw Error(std::string(op) + ": the StepState pointer is null");
}

}  // namespace optim_detail

template <class G>
template <class T>
auto ParamList<G>::allocate(std::size_t n, const char* what) -> DeviceArray<T> {
  void* p = nullptr;
  // At least one element, so every array is a real allocation even for an empty list.
  check(cudaMalloc(&p, (n ? n : 1) * sizeof(T)), what);
  return DeviceArray<T>(static_cast<T*>(p));
}

template <class G>
template <class T>
auto ParamList<G>::upload(const std::vector<T>& host, const char* what) -> DeviceArray<T> {
  auto device = allocate<T>(host.size(), what);
  if (!host.empty()) check(cudaMemcpy(device.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), what);
  return device;
}

template <class G>
void ParamList<G>::check_slot(std::size_t k, const ParamSlot<G>& s) {
  if (s.size < 0) throw Error("cuda::ParamList: parameter tensor " + std::to_string(k) + " has negative size");
  if (s.size > 0 && (!s.param || !s.grad)) {
    throw Error("cuda::ParamList: parameter tensor " + std::to_string(k) + " has a null " +
                (!s.param ? "param" : "grad") + " pointer");
  }
}

template <class G>
bool ParamList<G>::rebind(const std::vector<ParamSlot<G>>& slots) {
  if (slots.size() != host_slots_.size()) return false;
  bool same = true;
  for (std::size_t k = 0; k < slots.size(); ++k) {
    const auto &a = slots[k], &b = host_slots_[k];
    if (a.size != b.size) return false;
    check_slot(k, a);
    same = same && a.param == b.param && a.grad == b.grad && a.m == b.m && a.v == b.v &&
           a.weight_decay == b.weight_decay;
  }
  if (same) return true;
  host_slots_ = slots;
  // Staged and ordered on the stream (the step before still reads the old slots): a
  // cudaMemcpy from pageable memory would hold the host until the device caught up, at
  // every step whose gradients were made anew.
  if (!host_slots_.empty())
    DeviceAllocator<Cuda>::copy_from_host(slots_.get(), host_slots_.data(), host_slots_.size() * sizeof(ParamSlot<G>));
  return true;
}

template <class G>
ParamList<G>::ParamList(std::vector<ParamSlot<G>> slots) : host_slots_(std::move(slots)) {
  if (host_slots_.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw Error("cuda::ParamList: " + std::to_string(host_slots_.size()) + " tensors are more than one launch indexes");
  }
  std::vector<Chunk> table;
  std::vector<ChunkRange> ranges;
  for (std::size_t k = 0; k < host_slots_.size(); ++k) {
    const auto& s = host_slots_[k];
    check_slot(k, s);
    ranges.push_back({static_cast<std::int64_t>(table.size()), (s.size + kOptimChunk - 1) / kOptimChunk});
    for (std::int64_t begin = 0; begin < s.size; begin += kOptimChunk) {
      table.push_back({static_cast<std::int32_t>(k), begin});
    }
  }
  if (table.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw Error("cuda::ParamList: " + std::to_string(table.size()) + " chunks are more than one launch covers");
  }
  chunks_ = static_cast<std::int64_t>(table.size());
  slots_ = upload(host_slots_, "cuda::ParamList: slot array");
  chunk_table_ = upload(table, "cuda::ParamList: chunk table");
  chunk_ranges_ = upload(ranges, "cuda::ParamList: chunk ranges");
  partial_sums_ = allocate<double>(2 * table.size(), "cuda::ParamList: partial sums");
  trust_ratios_ = allocate<float>(host_slots_.size(), "cuda::ParamList: trust ratios");
}

inline StepState initial_step_state(const precision::LossScaler::State& scaler, std::int64_t optimizer_steps) {
  StepState s;
  s.loss_scale = scaler.scale;
  s.clean_steps = scaler.clean_steps;
  s.skipped_steps = scaler.skipped_steps;
  s.overflow_steps = scaler.overflow_steps;
  s.optimizer_steps = optimizer_steps;
  return s;
}

inline void write_step_state(StepState* state, const StepState& value, cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::write_step_state");
  optim_detail::write_step_state_kernel<<<1, 1, 0, stream>>>(state, value);
  check_launch("cuda::write_step_state");
}

inline StepState read_step_state(const StepState* state, cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::read_step_state");
  StepState host;
  check(cudaMemcpyAsync(&host, state, sizeof host, cudaMemcpyDeviceToHost, stream), "cuda::read_step_state: copy");
  check(cudaStreamSynchronize(stream), "cuda::read_step_state: synchronise");
  return host;
}

inline void write_loss_scale(const StepState* state, float* seed, cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::write_loss_scale");
  if (!seed) throw Error("cuda::write_loss_scale: the seed pointer is null");
  optim_detail::write_loss_scale_kernel<<<1, 1, 0, stream>>>(state, seed);
  check_launch("cuda::write_loss_scale");
}

template <class G>
void prepare_step(ParamList<G>& params, StepState* state, const StepOptions& options, cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::prepare_step");
  if (params.chunks() > 0) {
    optim_detail::grad_squares_kernel<G><<<static_cast<unsigned>(params.chunks()), kThreads, 0, stream>>>(
        params.slots(), params.chunk_table(), params.partial_sums());
    check_launch("cuda::prepare_step (gradient sum of squares)");
  }
  optim_detail::decide_step_kernel<<<1, optim_detail::kReduceThreads, 0, stream>>>(params.partial_sums(),
                                                                                  params.chunks(), state, options);
  check_launch("cuda::prepare_step (decision)");
}

template <class G>
void grad_sum_squares(ParamList<G>& params, double* sum, cudaStream_t stream) {
  if (!sum) throw Error("cuda::grad_sum_squares: the sum pointer is null");
  if (params.chunks() > 0) {
    optim_detail::grad_squares_kernel<G><<<static_cast<unsigned>(params.chunks()), kThreads, 0, stream>>>(
        params.slots(), params.chunk_table(), params.partial_sums());
    check_launch("cuda::grad_sum_squares (per chunk)");
  }
  optim_detail::sum_partials_kernel<<<1, optim_detail::kReduceThreads, 0, stream>>>(params.partial_sums(),
                                                                                   params.chunks(), sum);
  check_launch("cuda::grad_sum_squares (total)");
}

inline void decide_step(const double* sums, std::int64_t count, StepState* state, const StepOptions& options,
                        cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::decide_step");
  if (!sums || count < 1) throw Error("cuda::decide_step: no sums to decide from (a null pointer or a count below 1)");
  optim_detail::decide_step_kernel<<<1, optim_detail::kReduceThreads, 0, stream>>>(sums, count, state, options);
  check_launch("cuda::decide_step");
}

template <class G>
void adamw_step(const ParamList<G>& params, const StepState* state, const optim::AdamOptions& options, float lr,
                cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::adamw_step");
  optim_detail::require_state(params, true, "cuda::adamw_step");
  if (params.chunks() == 0) return;
  optim_detail::adamw_kernel<G><<<static_cast<unsigned>(params.chunks()), kThreads, 0, stream>>>(
      params.slots(), params.chunk_table(), state, optim::AdamCoefficients(options), lr);
  check_launch("cuda::adamw_step");
}

template <class G>
void lamb_step(ParamList<G>& params, const StepState* state, const optim::AdamOptions& options, float lr,
               cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::lamb_step");
  optim_detail::require_state(params, true, "cuda::lamb_step");
  if (params.size() == 0) return;
  const optim::AdamCoefficients c(options);
  if (params.chunks() > 0) {
    optim_detail::lamb_moments_kernel<G><<<static_cast<unsigned>(params.chunks()), kThreads, 0, stream>>>(
        params.slots(), params.chunk_table(), state, c, options.beta1, options.beta2, params.partial_sums());
    check_launch("cuda::lamb_step (moments and norms)");
  }
  optim_detail::lamb_trust_ratio_kernel<G><<<static_cast<unsigned>(params.size()), kThreads, 0, stream>>>(
      params.slots(), params.chunk_ranges(), params.partial_sums(), state, params.trust_ratios());
  check_launch("cuda::lamb_step (trust ratios)");
  if (params.chunks() > 0) {
    optim_detail::lamb_update_kernel<G><<<static_cast<unsigned>(params.chunks()), kThreads, 0, stream>>>(
        params.slots(), params.chunk_table(), state, c, options.beta1, options.beta2, params.trust_ratios(), lr);
    check_launch("cuda::lamb_step (weights)");
  }
}

template <class G>
void sgd_step(const ParamList<G>& params, const StepState* state, const optim::Sgd::Options& options, float lr,
              cudaStream_t stream) {
  optim_detail::require_state_pointer(state, "cuda::sgd_step");
  optim_detail::require_state(params, false, "cuda::sgd_step");
  if (params.chunks() == 0) return;
  optim_detail::sgd_kernel<G><<<static_cast<unsigned>(params.chunks()), kThreads, 0, stream>>>(
      params.slots(), params.chunk_table(), state, static_cast<float>(options.momentum),
      static_cast<float>(options.weight_decay), lr);
  check_launch("cuda::sgd_step");
}

}  // namespace ctdl::cuda

#pragma once
// The optimizer step of a module whose parameters live on a CUDA device: what
// train::ClassifierTrainer::apply does on the host (finiteness, loss scaling, unscaling,
// the global norm, clipping, the update), done by the fused kernels of
// kernels/cuda/optim.cuh, which compute the CPU's formulas with its rounding points.
//
//   optim::DeviceStep step;                      // holds the moments, on the device
//   auto out = step.apply(adamw, model, lr, scaler, {.max_grad_norm = 1.0, .micro_batches = 2});
//
// The optimizer object (AdamW, Lamb, Sgd) gives the options and the step count; its
// host moments are used only to save and restore them (store_into / load_from, for
// checkpoints). The loss scaler stays the host's: its state goes to the device with
// each step and comes back with the outcome, so checkpoints and logs read it as on the
// CPU. Each apply reads the step's outcome back (one synchronisation per step: the
// logging needs the norm; the speed issue keeps it on the device).
//
// Parameters are float (every precision policy keeps float master weights); a parameter
// without a gradient is left alone, as on the CPU, and its moments keep their place
// (the index counts every parameter).
//
// Compile the file that instantiates apply() with nvcc in a CUDA build.

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ctdl/core/tensor.hpp"
#include "ctdl/nn/module.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/optim/adamw.hpp"
#include "ctdl/optim/lamb.hpp"
#include "ctdl/optim/optimizer.hpp"
#include "ctdl/optim/sgd.hpp"
#include "ctdl/precision/loss_scaler.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/optim.cuh"
#endif

namespace ctdl::optim {

struct DeviceStepOptions {
  bool loss_scaling = false;    ///< Policy::loss_scaling (Fp16Mixed)
  double max_grad_norm = 1.0;   ///< <= 0: no clipping
  int micro_batches = 1;        ///< accumulated since the last step
};

struct DeviceStepOutcome {
  bool applied = false;
  bool grads_finite = true;
  double grad_norm = 0;   ///< after unscaling and averaging, before clipping; 0 when skipped
  double loss_scale = 1;  ///< the scale this step's gradients carried
};

class DeviceStep {
 public:
  /// One optimizer step of `model` (parameters on Cuda) from its accumulated gradients;
  /// updates `scaler` and the optimizer's step count as the host step would.
  template <class Opt, nn::Module M>
  DeviceStepOutcome apply(Opt& optimizer, M& model, float lr, precision::LossScaler& scaler,
                          const DeviceStepOptions& options);

  /// The moments, copied into the optimizer's host slots (to write a checkpoint).
  template <class Opt>
  void store_into(Opt& optimizer) const;
  /// The moments, copied from the optimizer's host slots (a resumed run's).
  template <class Opt>
  void load_from(const Opt& optimizer);

 private:
  using DeviceFlat = Tensor<float, Shape<dyn>, Cuda>;
  /// The moment tensor of parameter k (first: m, or SGD's buffer; second: v), sized.
  DeviceFlat& moment(std::vector<DeviceFlat>& set, std::size_t k, index_t size) {
    if (k >= set.size()) set.resize(k + 1);
    if (set[k].size() != size) set[k] = DeviceFlat({size});
    return set[k];
  }
  template <class Opt>
  static constexpr int kMoments = std::is_same_v<Opt, Sgd> ? 1 : 2;
  template <class Opt>
  static auto host_sets(Opt& optimizer) {
    if constexpr (std::is_same_v<std::remove_const_t<Opt>, Sgd>) return std::array{&optimizer.buffer()};
    else return std::array{&optimizer.m(), &optimizer.v()};
  }

  std::vector<DeviceFlat> m_, v_;
  Tensor<unsigned char, Shape<dyn>, Cuda> state_;  // one cuda::StepState
  // The last step's cuda::ParamList<float> (its device tables), rebound to each step's
  // pointers while the parameters with gradients stay the same ones: no device
  // allocation or free (cudaFree waits for the device) per step. Type-erased: the
  // type is nvcc's alone.
  std::shared_ptr<void> list_;
};

#if CTDL_CUDA_OPS
/// The parts of a device step that DeviceStep and ZeRO-1 on a GPU
/// (dist::ShardedOptimizer<…, Cuda>) share.
namespace device_step_detail {

/// The cached cuda::ParamList in `cache` rebound to `slots`, or a new one where the
/// tensors changed (cache holds nvcc's type erased, for classes that g++ also compiles).
inline cuda::ParamList<float>& bind(std::shared_ptr<void>& cache, std::vector<cuda::ParamSlot<float>> slots) {
  auto* list = static_cast<cuda::ParamList<float>*>(cache.get());
  if (!list || !list->rebind(slots)) {
    cache = std::make_shared<cuda::ParamList<float>>(std::move(slots));
    list = static_cast<cuda::ParamList<float>*>(cache.get());
  }
  return *list;
}

/// The StepState in `storage` (allocated on first use), set to start a step from the loss
/// scaler's state and the optimizer's step count; and the kernels' options.
inline cuda::StepState* begin(Tensor<unsigned char, Shape<dyn>, Cuda>& storage, const precision::LossScaler& scaler,
                              std::int64_t optimizer_steps) {
  if (storage.size() == 0) storage = Tensor<unsigned char, Shape<dyn>, Cuda>({static_cast<index_t>(sizeof(cuda::StepState))});
  auto* state = reinterpret_cast<cuda::StepState*>(storage.data());
  cuda::write_step_state(state, cuda::initial_step_state(scaler.state(), optimizer_steps));
  return state;
}
inline cuda::StepOptions kernel_options(const DeviceStepOptions& options, const precision::LossScaler& scaler) {
  cuda::StepOptions o;
  o.loss_scaling = options.loss_scaling;
  o.scaler = scaler.options();
  o.max_grad_norm = options.max_grad_norm;
  o.micro_batches = options.micro_batches;
  return o;
}

/// The step's outcome read back (the host waits for the device), with the loss scaler's
/// state and the optimizer's step count taken from it.
template <class Opt>
DeviceStepOutcome end(const cuda::StepState* state, precision::LossScaler& scaler, Opt& optimizer) {
  const cuda::StepState s = cuda::read_step_state(state);
  scaler.restore(cuda::scaler_state(s));
  optimizer.set_steps(s.optimizer_steps);
  return {s.applied != 0, s.grads_finite != 0, s.grad_norm, s.step_loss_scale};
}

}  // namespace device_step_detail
#endif

// ============================================================================

template <class Opt, nn::Module M>
DeviceStepOutcome DeviceStep::apply(Opt& optimizer, M& model, float lr, precision::LossScaler& scaler,
                                    const DeviceStepOptions& options) {
  static_assert(ops::on_cuda<nn::device_of_t<M>>, "DeviceStep: the module's parameters are not on a CUDA device");
  ops::require_kernels<nn::device_of_t<M>>();
#if CTDL_CUDA_OPS
  std::vector<cuda::ParamSlot<float>> slots;
  std::size_t index = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    const std::size_t k = index++;
    if (!p.has_grad()) return;
    using T = typename std::remove_cvref_t<decltype(p)>::value_type;
    static_assert(std::is_same_v<T, float>, "DeviceStep: parameters are float (master weights)");
    const index_t n = p.value().size();
    if (p.grad().size() != n) throw Error("DeviceStep: the gradient of " + name + " does not match its value");
    cuda::ParamSlot<float> slot;
    slot.param = p.value().data();
    slot.grad = p.grad().data();
    slot.m = moment(m_, k, n).data();
    slot.v = kMoments<Opt> == 2 ? moment(v_, k, n).data() : nullptr;
    slot.size = n;
    slot.weight_decay = p.weight_decay();
    slots.push_back(slot);
  });
  cuda::ParamList<float>& list = device_step_detail::bind(list_, std::move(slots));
  cuda::StepState* state = device_step_detail::begin(state_, scaler, optimizer.steps());
  cuda::prepare_step(list, state, device_step_detail::kernel_options(options, scaler));
  if constexpr (std::is_same_v<Opt, AdamW>) cuda::adamw_step(list, state, optimizer.options(), lr);
  else if constexpr (std::is_same_v<Opt, Lamb>) cuda::lamb_step(list, state, optimizer.options(), lr);
  else if constexpr (std::is_same_v<Opt, Sgd>) cuda::sgd_step(list, state, optimizer.options(), lr);
  else static_assert(std::is_same_v<Opt, AdamW>, "DeviceStep: AdamW, Lamb or Sgd");
  return device_step_detail::end(state, scaler, optimizer);
#else
  (void)optimizer, (void)model, (void)lr, (void)scaler, (void)options;
  return {};
#endif
}

template <class Opt>
void DeviceStep::store_into(Opt& optimizer) const {
  const auto sets = host_sets(optimizer);
  const std::vector<DeviceFlat>* device[] = {&m_, &v_};
  for (std::size_t s = 0; s < sets.size(); ++s) {
    for (std::size_t k = 0; k < device[s]->size(); ++k) {
      const auto& d = (*device[s])[k];
      if (d.size() == 0) continue;  // a parameter never trained: no state, as on the host
      auto& h = sets[s]->at(k, d.size());
      DeviceAllocator<Cuda>::copy_to_host(h.data(), d.data(), sizeof(float) * static_cast<std::size_t>(d.size()));
    }
  }
}

template <class Opt>
void DeviceStep::load_from(const Opt& optimizer) {
  const auto sets = host_sets(optimizer);
  std::vector<DeviceFlat>* device[] = {&m_, &v_};
  for (std::size_t s = 0; s < sets.size(); ++s) {
    const auto& host = sets[s]->all();
    device[s]->assign(host.size(), DeviceFlat());
    for (std::size_t k = 0; k < host.size(); ++k) {
      if (host[k].size() == 0) continue;
      (*device[s])[k] = to_device<Cuda>(host[k]);
    }
  }
}

}  // namespace ctdl::optim

// Data parallel on the GPU over NCCL, with the one rank a single-GPU machine can run
// (NcclComm(0)): dist::GradientAverager<NcclComm, Cuda> on the tiny BERT of gpu/bert.
// One rank's average is its own gradient, so every check is exact or within the
// run-to-run noise of float scatter-adds on the device:
//   - after one backward with overlap on, buckets start during backward (on NCCL's
//     stream) and finish() gives back every gradient bit for bit, with several buckets;
//   - a parameter whose gradient was forgotten before finish() keeps none (the flags read
//     back from the device), the others are unchanged;
//   - 5 ClassifierTrainer steps (AdamW, clipping, two micro-batches) with the averager as
//     the trainer's gradient sync end within 1e-5 of the same steps without it;
//   - broadcast_parameters over NCCL leaves one rank's weights as they are;
//   - ZeRO-1 on the GPU (dist::ShardedOptimizer<AdamW, NcclComm, Cuda>), whose one rank's
//     slice is every parameter: 5 steps from the same gradients (each step's backward run
//     once, its gradients copied into the other model) give optim::DeviceStep's weights,
//     norms and loss scales bit for bit, under Fp16Mixed's loss scaling with two overflow
//     steps skipped and the scale halved at the second; its state is 1/1 of AdamW's, gather_state gives DeviceStep's moments
//     bit for bit and scatter_state takes them back; as the trainer's gradient sync and
//     optimizer, 5 steps (two micro-batches each) end within 1e-5 of the plain trainer's;
//   - ZeRO-1's multi-rank layout on this one GPU: 3 or more ranks as threads over
//     test::ThreadComm<Cuda> (tests/dist/thread_comm.hpp), the count of parameters not a
//     multiple of them, each rank 5 trainer steps on the same batch: every rank within
//     1e-5 of the plain trainer, each holding 1/N of the state;
//   - the misuse errors: a host communicator (LocalComm) for a model on the GPU, in the
//     averager, in ShardedOptimizer and in broadcast_parameters.
// Exits 77 without a device or without NCCL. Several GPUs (several ranks) are not on the
// GPU machine; tests/dist/mpi_data_parallel.cpp checks the averaging itself on 2 MPI ranks.
#include "gpu/gpu_test.hpp"

#if defined(CTDL_WITH_NCCL)
#include <ctdl/dist/any_comm.hpp>
#include <ctdl/dist/data_parallel.hpp>
#include <ctdl/dist/nccl.hpp>
#include <ctdl/dist/sharded_optimizer.hpp>
#include <ctdl/ops/cross_entropy.hpp>
#include <ctdl/optim/device_step.hpp>
#include <ctdl/precision/policy.hpp>
#include <ctdl/train/classifier.hpp>

#include "dist/thread_comm.hpp"
#include "gpu/ops_twin.hpp"
#include "gpu/tiny_bert.hpp"
#endif

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#if defined(CTDL_WITH_NCCL)

namespace {

using namespace ctdl;
using gpu_test::Report;
using tiny_bert::by_name;

using GpuModel = bert::BertForSequenceClassification<float, bert::Tiny, precision::Fp32, Cuda>;
using CpuModel = bert::BertForSequenceClassification<float, bert::Tiny, precision::Fp32>;

GpuModel fresh_model() {
  auto cpu = CpuModel::make(tiny_bert::tiny_config(), 5);
  bert::init_weights(cpu, 0.02, 7);
  return nn::to_device<GpuModel>(cpu);
}

/// The gradients that exist, by name (by_name's grad() would make the missing ones).
std::map<std::string, std::vector<float>> present_grads(GpuModel& model) {
  std::map<std::string, std::vector<float>> out;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    if (!p.has_grad()) return;
    const auto v = ops_twin::values(p.grad());
    out[name] = std::vector<float>(v.begin(), v.end());
  });
  return out;
}

void backward(GpuModel& model, Tape& tape, const Batch& batch) {
  nn::Context ctx{tape, /*training=*/true, /*seed=*/42, /*step=*/0};
  auto logits = model.forward(ctx, batch);
  auto loss = ops::cross_entropy(tape, logits, batch.labels);
  tape.backward(loss);
}

void check_averager(Report& report, dist::NcclComm& comm) {
  const Batch batch = tiny_bert::tiny_batch();
  auto model = fresh_model();
  dist::GradientAverager avg(comm, model, {.bucket_bytes = 256 << 10, .overlap = true});
  static_assert(std::is_same_v<decltype(avg), dist::GradientAverager<dist::NcclComm, Cuda>>);
  report.expect("several buckets", avg.buckets().size() > 3, std::to_string(avg.buckets().size()) + " buckets");
  {
    Tape tape;
    avg.begin(tape);
    backward(model, tape, batch);
  }
  const auto before = by_name(model, true);
  avg.finish();
  cuda::check(cudaDeviceSynchronize(), "after finish");
  report.expect("buckets start during backward", avg.started_during_backward() > 0,
                std::to_string(avg.started_during_backward()) + " of " + std::to_string(avg.buckets().size()));
  const auto after = by_name(model, true);
  int differ = 0;
  for (const auto& [name, g] : before)
    if (!report.equal("one rank's average of d " + name, after.at(name), g)) ++differ;
  report.expect("every gradient comes back bit for bit", differ == 0 && before.size() == 41,
                std::to_string(before.size()) + " parameters, " + std::to_string(differ) + " differ");

  // A gradient forgotten before finish(): no rank has one, so none is made. Without
  // overlap, so that the buckets start in finish(), after the gradient is dropped (with
  // overlap, every bucket has started by the end of backward, the dropped one included).
  optim::zero_grad(model);
  dist::GradientAverager late(comm, model, {.bucket_bytes = 256 << 10, .overlap = false});
  {
    Tape tape;
    late.begin(tape);
    backward(model, tape, batch);
  }
  const std::string dropped = "classifier.bias";
  bool found = false;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name == dropped) {
      p.zero_grad();
      found = true;
    }
  });
  const auto kept = present_grads(model);
  late.finish();
  bool none = false;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name == dropped) none = !p.has_grad();
  });
  report.expect("a parameter without a gradient keeps none", found && none);
  report.equal("the other gradients after a step with one missing",
               present_grads(model)["bert.pooler.dense.weight"], kept.at("bert.pooler.dense.weight"));
}

/// 5 ClassifierTrainer steps (AdamW, clipping, two micro-batches) of `synced`, whose
/// trainer runs `sync` and steps with `optimizer`, against the same steps of a fresh model
/// without them: losses, norms and every weight within 1e-5.
template <class Opt>
void check_against_plain_trainer(Report& report, const std::string& what, GpuModel& synced, dist::GradientSync& sync,
                                 Opt& optimizer) {
  const Batch batch = tiny_bert::tiny_batch();
  auto plain = fresh_model();
  train::ClassifierTrainer<GpuModel, precision::Fp32> trainer_p(plain, {.max_grad_norm = 1.0, .seed = 3});
  train::ClassifierTrainer<GpuModel, precision::Fp32> trainer_s(synced, {.max_grad_norm = 1.0, .seed = 3});
  trainer_s.set_gradient_sync(&sync);
  optim::AdamW adam;
  std::vector<double> loss_p, loss_s, norm_p, norm_s;
  for (int step = 0; step < 5; ++step) {
    const float lr = 1e-3f;
    for (int micro = 0; micro < 2; ++micro) {
      loss_p.push_back(trainer_p.backward(batch, micro == 1));
      loss_s.push_back(trainer_s.backward(batch, micro == 1));
    }
    norm_p.push_back(trainer_p.apply(adam, lr).grad_norm);
    norm_s.push_back(trainer_s.apply(optimizer, lr).grad_norm);
  }
  report.close(what + ": 10 micro-batch losses", loss_s, loss_p, 1e-5);
  report.close(what + ": 5 gradient norms", norm_s, norm_p, 1e-5);
  const auto wp = by_name(plain, false), ws = by_name(synced, false);
  int differ = 0;
  for (const auto& [name, w] : wp)  // (the embeddings' scatter-add makes the two runs differ in the last bits)
    if (!tiny_bert::trained_on_noise(name) && !report.close(what + ": after 5 steps, " + name, ws.at(name), w, 1e-5))
      ++differ;
  report.expect(what + ": every weight after 5 steps agrees (the key biases, trained on noise, aside)", differ == 0,
                std::to_string(differ) + " differ");
}

/// Trainer steps with and without the averager as the gradient sync.
void check_trainer(Report& report, dist::NcclComm& comm) {
  auto synced = fresh_model();
  dist::GradientAverager avg(comm, synced, {.bucket_bytes = 1 << 20});
  optim::AdamW adam;
  check_against_plain_trainer(report, "trainer over NCCL", synced, avg, adam);

  const auto before = by_name(synced, false);
  dist::broadcast_parameters(comm, synced);
  cuda::check(cudaDeviceSynchronize(), "after broadcast_parameters");
  report.equal("broadcast_parameters over NCCL, one rank: the weights as they were",
               by_name(synced, false)["bert.embeddings.word_embeddings.weight"],
               before.at("bert.embeddings.word_embeddings.weight"));
}

/// The parameters of a model in visiting order.
template <class M>
std::vector<std::pair<float*, index_t>> grad_slots(M& model) {
  std::vector<std::pair<float*, index_t>> out;
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    out.emplace_back(p.node_ptr()->grad_data(), p.value().size());  // a zero gradient where none was made
  });
  return out;
}

/// ZeRO-1 on one GPU against DeviceStep, from the same gradients.
void check_sharded(Report& report, dist::NcclComm& comm) {
  const Batch batch = tiny_bert::tiny_batch();
  auto plain = fresh_model();
  auto sharded_model = fresh_model();
  optim::AdamW adam_p;
  optim::DeviceStep device_step;
  dist::ShardedOptimizer zero(comm, sharded_model, optim::AdamW{});
  static_assert(std::is_same_v<decltype(zero), dist::ShardedOptimizer<optim::AdamW, dist::NcclComm, Cuda>>);
  static_assert(dist::DeviceShardedUpdate<decltype(zero)> && !dist::ShardedUpdate<decltype(zero)>);
  std::int64_t total = 0;
  nn::visit_parameters(plain, [&](const std::string&, auto& p) { total += p.value().size(); });
  report.expect("ZeRO-1 on one rank holds the whole of AdamW's state", zero.state_bytes() == 8 * total,
                std::to_string(zero.state_bytes()) + " bytes for " + std::to_string(total) + " parameters");
  precision::LossScaler scaler_p, scaler_s;  // the default scaler: 2^32 to start (float gradients hold it)
  const optim::DeviceStepOptions options{.loss_scaling = true, .max_grad_norm = 1.0, .micro_batches = 1};
  std::vector<double> norm_p, norm_s, scale_p, scale_s;
  std::vector<int> applied_p, applied_s;
  for (int step = 0; step < 5; ++step) {
    optim::zero_grad(plain);
    optim::zero_grad(sharded_model);
    {
      Tape tape;
      nn::Context ctx{tape, /*training=*/true, /*seed=*/42, static_cast<std::uint64_t>(step)};
      auto logits = plain.forward(ctx, batch);
      auto loss = ops::cross_entropy(tape, logits, batch.labels);
      tape.backward(loss, Tensor<float, Shape<>, Cuda>::full({}, static_cast<float>(scaler_p.scale())));
    }
    auto from = grad_slots(plain);
    auto to = grad_slots(sharded_model);
    if (step == 1 || step == 3) {  // overflows: both skip the step; at the second the scale backs off
      const float inf = std::numeric_limits<float>::infinity();
      DeviceAllocator<Cuda>::copy_from_host(from[3].first, &inf, sizeof inf);
    }
    for (std::size_t k = 0; k < from.size(); ++k)
      DeviceAllocator<Cuda>::copy(to[k].first, from[k].first, static_cast<std::size_t>(from[k].second) * sizeof(float));
    const auto p = device_step.apply(adam_p, plain, 1e-3f, scaler_p, options);
    zero.finish();
    const auto z = zero.apply(1e-3f, scaler_s, options);
    norm_p.push_back(p.grad_norm), norm_s.push_back(z.grad_norm);
    scale_p.push_back(p.loss_scale), scale_s.push_back(z.loss_scale);
    applied_p.push_back(p.applied), applied_s.push_back(z.applied);
  }
  report.equal("ZeRO-1 on one GPU: 5 gradient norms = DeviceStep's", norm_s, norm_p);
  report.equal("ZeRO-1 on one GPU: 5 loss scales = DeviceStep's", scale_s, scale_p);
  report.expect("ZeRO-1 on one GPU: steps applied = DeviceStep's, steps 2 and 4 skipped",
                applied_s == applied_p && applied_s == std::vector<int>{1, 0, 1, 0, 1});
  report.expect("ZeRO-1 on one GPU: the loss scaler skipped two steps and halved at the second, as DeviceStep's",
                scaler_s.skipped_steps() == 2 && scaler_s.scale() == 2147483648.0 &&
                    scaler_s.scale() == scaler_p.scale() && scaler_s.overflow_steps() == scaler_p.overflow_steps() &&
                    scaler_s.clean_steps() == scaler_p.clean_steps(),
                "scale " + std::to_string(scaler_s.scale()) + " and " + std::to_string(scaler_p.scale()));
  report.expect("ZeRO-1 on one GPU: the optimizer counted 3 steps", zero.steps() == 3 && adam_p.steps() == 3,
                std::to_string(zero.steps()) + " and " + std::to_string(adam_p.steps()));
  const auto wp = by_name(plain, false), ws = by_name(sharded_model, false);
  int differ = 0;
  for (const auto& [name, w] : wp)
    if (!report.equal("ZeRO-1 on one GPU: after 5 steps, " + name, ws.at(name), w)) ++differ;
  report.expect("ZeRO-1 on one GPU: every weight = DeviceStep's, bit for bit", differ == 0,
                std::to_string(differ) + " of " + std::to_string(wp.size()) + " differ");

  // The state, assembled for a checkpoint and taken back.
  optim::AdamW whole_p, whole_s;
  device_step.store_into(whole_p);
  zero.gather_state(whole_s);
  std::size_t compared = 0;
  // Steps 2 and 4 overflowed: 3 applied, the count checkpoints keep. (store_into copies
  // the moments only; the step count is the host optimizer's, adam_p's.)
  report.expect("ZeRO-1 on one GPU: gather_state counts the 3 applied steps, as DeviceStep's optimizer",
                whole_s.steps() == 3 && adam_p.steps() == 3,
                std::to_string(whole_s.steps()) + " and " + std::to_string(adam_p.steps()));
  bool same = true;
  for (std::size_t k = 0; k < whole_p.m().all().size(); ++k) {
    const auto& a = whole_p.m().all()[k];
    if (a.size() == 0) continue;
    const auto& b = whole_s.m().at(k, a.size());
    const auto& va = whole_p.v().all()[k];
    const auto& vb = whole_s.v().at(k, va.size());
    same = same && std::equal(a.data(), a.data() + a.size(), b.data()) &&
           std::equal(va.data(), va.data() + va.size(), vb.data());
    ++compared;
  }
  report.expect("ZeRO-1 on one GPU: gather_state = DeviceStep's moments, bit for bit", same && compared == wp.size(),
                std::to_string(compared) + " tensors compared");
  dist::ShardedOptimizer resumed(comm, sharded_model, optim::AdamW{});
  resumed.scatter_state(whole_s);
  optim::AdamW again;
  resumed.gather_state(again);
  bool round_trip = again.steps() == whole_s.steps();
  for (std::size_t k = 0; k < whole_s.m().all().size(); ++k) {
    const auto& a = whole_s.m().all()[k];
    const auto& b = again.m().at(k, a.size());
    round_trip = round_trip && std::equal(a.data(), a.data() + a.size(), b.data());
  }
  report.expect("ZeRO-1 on one GPU: scatter_state then gather_state gives the state back", round_trip);

  // As the trainer's gradient sync and optimizer.
  auto synced = fresh_model();
  dist::ShardedOptimizer zero2(comm, synced, optim::AdamW{});
  check_against_plain_trainer(report, "trainer with ZeRO-1 on the GPU", synced, zero2, zero2);
}

/// ZeRO-1's multi-rank layout on one GPU: N rank threads over test::ThreadComm<Cuda>
/// (NCCL allows one rank per GPU), each with its own model and the same batch, against
/// the plain trainer's DeviceStep: the slices, their offsets in the flat vectors, the
/// padding of the last one (N does not divide the parameter count) and the rank order of
/// the gathered sums all take part.
void check_sharded_threads(Report& report) {
  std::int64_t total = 0;
  {
    auto probe = fresh_model();
    nn::visit_parameters(probe, [&](const std::string&, auto& p) { total += p.value().size(); });
  }
  int ranks = 3;
  while (total % ranks == 0) ranks += 2;
  const Batch batch = tiny_bert::tiny_batch();
  const train::ClassifierTrainer<GpuModel, precision::Fp32>::Options options{.max_grad_norm = 1.0, .seed = 3};
  auto plain = fresh_model();
  {
    train::ClassifierTrainer<GpuModel, precision::Fp32> trainer(plain, options);
    optim::AdamW adam;
    for (int step = 0; step < 5; ++step) {
      trainer.backward(batch);
      trainer.apply(adam, 1e-3f);
    }
  }
  const auto want = by_name(plain, false);
  std::vector<std::map<std::string, std::vector<float>>> got(static_cast<std::size_t>(ranks));
  std::vector<std::int64_t> state(static_cast<std::size_t>(ranks));
  test::ThreadGroup group(ranks);
  group.run<Cuda>([&](test::ThreadComm<Cuda>& comm) {
    auto model = fresh_model();
    dist::ShardedOptimizer zero(comm, model, optim::AdamW{});
    static_assert(std::is_same_v<decltype(zero), dist::ShardedOptimizer<optim::AdamW, test::ThreadComm<Cuda>, Cuda>>);
    train::ClassifierTrainer<GpuModel, precision::Fp32> trainer(model, options);  // rank 0's dropout on every rank
    trainer.set_gradient_sync(&zero);
    for (int step = 0; step < 5; ++step) {
      trainer.backward(batch);
      trainer.apply(zero, 1e-3f);
    }
    got[static_cast<std::size_t>(comm.rank())] = by_name(model, false);
    state[static_cast<std::size_t>(comm.rank())] = zero.state_bytes();
  });
  const std::string what = "ZeRO-1 on " + std::to_string(ranks) + " rank threads of one GPU";
  int differ = 0;
  // The ranks' average of equal gradients, ((g + g) + g) / 3, is g within a rounding.
  for (int r = 0; r < ranks; ++r)
    for (const auto& [name, w] : want)
      if (!tiny_bert::trained_on_noise(name) &&
          !report.close(what + ", rank " + std::to_string(r) + ": after 5 steps, " + name,
                        got[static_cast<std::size_t>(r)].at(name), w, 1e-5))
        ++differ;
  report.expect(what + ": every rank ends with the plain trainer's weights (within 1e-5; the key biases, trained "
                       "on noise, aside)", differ == 0,
                std::to_string(differ) + " tensors differ; " + std::to_string(total) + " parameters, not a multiple of " +
                    std::to_string(ranks));
  const std::int64_t slice = (total + ranks - 1) / ranks;  // the last one padded
  report.expect(what + ": each rank holds 1/" + std::to_string(ranks) + " of AdamW's state (its slice, padded)",
                std::all_of(state.begin(), state.end(), [&](std::int64_t b) { return b == 8 * slice; }),
                std::to_string(state[0]) + " bytes on rank 0 for a slice of " + std::to_string(slice) + " of " +
                    std::to_string(total) + " parameters");
}

void check_misuse(Report& report) {
  auto model = fresh_model();
  dist::LocalComm host;
  gpu_test::expect_error(report, "GradientAverager over a host communicator for a model on the GPU",
                         "takes host memory", [&] { dist::GradientAverager<dist::LocalComm, Cuda> avg(host, model); });
  gpu_test::expect_error(report, "broadcast_parameters over a host communicator for a model on the GPU",
                         "takes host memory", [&] { dist::broadcast_parameters(host, model); });
  gpu_test::expect_error(report, "ShardedOptimizer over a host communicator for a model on the GPU",
                         "takes host memory", [&] { dist::ShardedOptimizer zero(host, model, optim::AdamW{}); });
  dist::AnyComm any(host);
  report.expect("AnyComm says whether its communicator takes device buffers", !any.device_buffers());
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/nccl_data_parallel");
  if (std::getenv("NCCL_DEBUG") == nullptr) setenv("NCCL_DEBUG", "WARN", 1);
  Report report("gpu/nccl_data_parallel");
  gpu_test::guarded(report, "setup", [&] {
    dist::NcclComm comm(0);
    dist::AnyComm any(comm);
    report.expect("AnyComm over NcclComm takes device buffers", any.device_buffers());
    gpu_test::guarded(report, "GradientAverager", [&] { check_averager(report, comm); });
    gpu_test::guarded(report, "ClassifierTrainer", [&] { check_trainer(report, comm); });
    gpu_test::guarded(report, "ShardedOptimizer (ZeRO-1)", [&] { check_sharded(report, comm); });
  });
  gpu_test::guarded(report, "ShardedOptimizer (ZeRO-1) on rank threads", [&] { check_sharded_threads(report); });
  gpu_test::guarded(report, "misuse", [&] { check_misuse(report); });
  return report.finish();
}

#else

int main() {
  std::printf("gpu/nccl_data_parallel: skipped: this build has no NCCL (CTDL_WITH_NCCL off)\n");
  return 77;
}

#endif

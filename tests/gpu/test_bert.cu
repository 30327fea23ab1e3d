// A tiny BERT on the GPU against the same model on the CPU: the model is built and
// initialised on the host, copied to the device with nn::to_device, and both run the
// same batch (padding included) with dropout on (the same Philox streams), the
// cross-entropy of the span classifier's head, and backward. Compared: the loss, the
// logits and the gradient of every parameter, by name, each relative to the larger of its
// own scale and 1e-2 of the model's largest gradient (the attention key bias's gradient
// is zero in exact arithmetic, rounding noise on both devices). Then 20 training steps of
// train::ClassifierTrainer on both devices (dropout on, AdamW at BERT's defaults,
// clipping to norm 1, two micro-batches per step; on the GPU the fused device step of
// optim::DeviceStep): the losses step by step, the same steps applied, their gradient
// norms, the final logits and weights agree within 1e-4 relative (fp32), as the issue
// asks of a fine-tune on the GPU, except the key biases, which each device trains on its
// own noise (they change no output); the moments come back to the host (store_into, for
// checkpoints) equal to the CPU's.
//
// Also nn::copy_values between the host and the device model (in place, as a resumed
// run loads its checkpoint). Policies: Fp32 (tolerance 1e-4 over the whole model: each
// op agrees within 1e-5, and 2 layers of them compound), Bf16Mixed (products on bf16
// inputs, rounded on both devices the same way; float sums in different orders can flip
// a bf16 rounding, hence 3e-2) and Fp16Mixed (fp16 products and the trainer's dynamic
// loss scaling, whose 2^32 start makes the first steps overflow and be skipped on both
// devices; 3e-2 as bf16). Then the token classifier (the NER task's model), its -1
// labels left out of the loss, trained 10 steps on both devices (Fp32 and Bf16Mixed).
#include <ctdl/models/bert/model.hpp>
#include <ctdl/ops/cross_entropy.hpp>
#include <ctdl/precision/policy.hpp>
#include <ctdl/train/classifier.hpp>

#include <algorithm>
#include <map>

#include "gpu/ops_twin.hpp"
#include "gpu/tiny_bert.hpp"

namespace {

using namespace ctdl;
using gpu_test::Report;
using tiny_bert::by_name;
using tiny_bert::tiny_batch;
using tiny_bert::tiny_config;

template <class P>
void check_policy(Report& report, const std::string& policy, double tol) {
  using CpuModel = bert::BertForSequenceClassification<float, bert::Tiny, P>;
  using GpuModel = bert::BertForSequenceClassification<float, bert::Tiny, P, Cuda>;
  const auto config = tiny_config();
  auto cpu = CpuModel::make(config, 5);
  bert::init_weights(cpu, 0.02, 7);
  auto gpu = nn::to_device<GpuModel>(cpu);
  report.equal(policy + ": nn::to_device copies the weights exactly",
               by_name(gpu, false)["bert.encoder.layer.1.output.dense.weight"],
               by_name(cpu, false)["bert.encoder.layer.1.output.dense.weight"]);
  {  // nn::copy_values: a checkpoint read on the host, loaded into the device model in place
    auto other = CpuModel::make(config, 5);
    bert::init_weights(other, 0.02, 8);
    auto loaded = nn::to_device<GpuModel>(cpu);
    const auto* node = loaded.bert.encoder.layer[1].output.dense.weight.node_ptr().get();
    const auto* storage = loaded.bert.encoder.layer[1].output.dense.weight.value().data();
    nn::copy_values(loaded, other);
    report.equal(policy + ": nn::copy_values loads host values into the device model",
                 by_name(loaded, false)["bert.encoder.layer.1.output.dense.weight"],
                 by_name(other, false)["bert.encoder.layer.1.output.dense.weight"]);
    report.expect(policy + ": nn::copy_values keeps the device Vars and their storage",
                  loaded.bert.encoder.layer[1].output.dense.weight.node_ptr().get() == node &&
                      loaded.bert.encoder.layer[1].output.dense.weight.value().data() == storage,
                  "a layer's weight was replaced");
    auto back = CpuModel::make(config, 5);
    nn::copy_values(back, loaded);  // device to host
    report.equal(policy + ": nn::copy_values copies device values back to the host",
                 by_name(back, false)["bert.encoder.layer.0.attention.self.query.weight"],
                 by_name(other, false)["bert.encoder.layer.0.attention.self.query.weight"]);
  }
  const Batch batch = tiny_batch();

  // One training step's forward and backward, dropout on.
  auto run = [&](auto& model, Tape& tape, std::uint64_t step) {
    nn::Context ctx{tape, /*training=*/true, /*seed=*/42, step};
    auto logits = model.forward(ctx, batch);
    auto loss = ops::cross_entropy(tape, logits, batch.labels);
    tape.backward(loss);
    return std::pair{logits, loss};
  };
  Tape tc, tg;
  const auto [lc, losses_c] = run(cpu, tc, 0);
  const auto [lg, losses_g] = run(gpu, tg, 0);
  report.close(policy + ": loss", ops_twin::values(losses_g.value()), ops_twin::values(losses_c.value()), tol);
  report.close(policy + ": logits", ops_twin::values(lg.value()), ops_twin::values(lc.value()), tol);
  const auto grads_c = by_name(cpu, true), grads_g = by_name(gpu, true);
  const double grad_floor = 1e-2 * tiny_bert::largest(grads_c);  // the key bias's gradient is rounding noise
  int compared = 0, failed = 0;
  for (const auto& [name, want] : grads_c) {
    ++compared;
    if (!report.close(policy + ": d " + name, grads_g.at(name), want, tol, grad_floor)) ++failed;
  }
  report.expect(policy + ": every parameter's gradient agrees", failed == 0 && compared == 41,
                std::to_string(compared) + " parameters, " + std::to_string(failed) + " differ");

  // 20 optimizer steps of the trainer on both devices: the fine-tune ends in the same place.
  optim::zero_grad(cpu);
  optim::zero_grad(gpu);
  train::ClassifierTrainer<CpuModel, P> trainer_c(cpu, {.max_grad_norm = 1.0, .seed = 3});
  train::ClassifierTrainer<GpuModel, P> trainer_g(gpu, {.max_grad_norm = 1.0, .seed = 3});
  // Under Fp16Mixed both start at 2^20, not 2^32: from 2^32 the first halvings (two
  // skipped steps each, the original's rule) would take most of the 20 steps.
  trainer_c.scaler().restore({.scale = 1048576.0});
  trainer_g.scaler().restore({.scale = 1048576.0});
  optim::AdamW adam_c, adam_g;
  std::vector<double> loss_c, loss_g, norm_c, norm_g;
  std::vector<int> applied_c, applied_g;
  for (int step = 0; step < 20; ++step) {
    const float lr = 1e-3f * static_cast<float>(20 - step) / 20.0f;
    for (int micro = 0; micro < 2; ++micro) {
      loss_c.push_back(trainer_c.backward(batch, micro == 1));
      loss_g.push_back(trainer_g.backward(batch, micro == 1));
    }
    const auto oc = trainer_c.apply(adam_c, lr), og = trainer_g.apply(adam_g, lr);
    applied_c.push_back(oc.applied), applied_g.push_back(og.applied);
    if (oc.applied) norm_c.push_back(oc.grad_norm);  // a skipped step's norm is inf or NaN
    if (og.applied) norm_g.push_back(og.grad_norm);
  }
  // Under Fp16Mixed any step that overflows is skipped, on both devices alike; the other
  // policies apply all 20.
  const auto applied = std::count(applied_c.begin(), applied_c.end(), 1);
  report.close(policy + ": 40 micro-batch losses of 20 trainer steps", loss_g, loss_c, tol);
  report.expect(policy + ": the same steps applied on both devices", applied_g == applied_c && applied > 0 &&
                                                                        (P::loss_scaling || applied == 20),
                std::to_string(applied) + " of 20 applied on the CPU");
  report.close(policy + ": the applied steps' gradient norms (before clipping)", norm_g, norm_c, tol);
  report.expect(policy + ": the device optimizer counted the applied steps",
                adam_g.steps() == applied && adam_c.steps() == applied,
                std::to_string(adam_g.steps()) + " and " + std::to_string(adam_c.steps()) + " of " +
                    std::to_string(applied));
  Tape ec, eg;
  nn::Context cc{ec}, cg{eg};
  const auto final_c = cpu.forward(cc, batch);
  const auto final_g = gpu.forward(cg, batch);
  report.close(policy + ": logits after 20 steps (evaluation)", ops_twin::values(final_g.value()),
               ops_twin::values(final_c.value()), tol);
  const auto weights_c = by_name(cpu, false), weights_g = by_name(gpu, false);
  int wrong = 0;
  for (const auto& [name, want] : weights_c) {
    if (tiny_bert::trained_on_noise(name)) continue;
    if (!report.close(policy + ": after 20 steps, " + name, weights_g.at(name), want, tol)) ++wrong;
  }
  report.expect(policy + ": every weight after 20 steps agrees (the key biases, trained on noise, aside)", wrong == 0,
                std::to_string(wrong) + " differ");
  optim::AdamW moments_g;
  trainer_g.device_step().store_into(moments_g);
  const auto& mc = adam_c.m().all();
  const auto& mg = moments_g.m().all();
  report.expect(policy + ": store_into gives a moment per parameter", mc.size() == mg.size(),
                std::to_string(mg.size()) + " vs " + std::to_string(mc.size()));
  if (mc.size() == mg.size() && !mc.empty()) {
    report.close(policy + ": the classifier bias's first moment on the host", ops_twin::values(mg.back()),
                 ops_twin::values(mc.back()), tol);
  }
}

/// The token classifier (the NER task's head) on both devices: B x S labels, -1 where
/// nothing is scored (padding and, as for a word's later pieces, every third position),
/// the trainer's masked cross-entropy (train::classification_loss), 10 steps (dropout on,
/// AdamW, clipping, two micro-batches each): the losses step by step, the gradient norms
/// and the final B*S x 5 logits agree within `tol`.
template <class P>
void check_token_classifier(Report& report, const std::string& policy, double tol) {
  using CpuModel = bert::BertForTokenClassification<float, bert::Tiny, P>;
  using GpuModel = bert::BertForTokenClassification<float, bert::Tiny, P, Cuda>;
  auto cpu = CpuModel::make(tiny_config(), 5);
  bert::init_weights(cpu, 0.02, 9);
  auto gpu = nn::to_device<GpuModel>(cpu);
  Batch batch = tiny_batch();
  const index_t b = batch.input_ids.extent(0), s = batch.input_ids.extent(1);
  batch.labels = Tensor<std::int32_t, Shape<dyn>>({b * s});
  int scored = 0;
  for (index_t k = 0; k < b * s; ++k) {
    const bool counts = batch.attention_mask.data()[k] == 1 && k % 3 != 2;
    batch.labels.data()[k] = counts ? static_cast<std::int32_t>((k / 7 + k % 2) % 5) : -1;
    scored += counts;
  }
  train::ClassifierTrainer<CpuModel, P> trainer_c(cpu, {.max_grad_norm = 1.0, .seed = 5});
  train::ClassifierTrainer<GpuModel, P> trainer_g(gpu, {.max_grad_norm = 1.0, .seed = 5});
  optim::AdamW adam_c, adam_g;
  std::vector<double> loss_c, loss_g, norm_c, norm_g;
  int applied = 0;
  for (int step = 0; step < 10; ++step) {
    for (int micro = 0; micro < 2; ++micro) {
      loss_c.push_back(trainer_c.backward(batch, micro == 1));
      loss_g.push_back(trainer_g.backward(batch, micro == 1));
    }
    const auto oc = trainer_c.apply(adam_c, 1e-3f), og = trainer_g.apply(adam_g, 1e-3f);
    report.expect(policy + " token classifier: step " + std::to_string(step) + " applied alike", oc.applied == og.applied);
    if (oc.applied && og.applied) {
      ++applied;
      norm_c.push_back(oc.grad_norm);
      norm_g.push_back(og.grad_norm);
    }
  }
  report.expect(policy + " token classifier: steps applied", applied > 0 && (P::loss_scaling || applied == 10),
                std::to_string(applied) + " of 10 (" + std::to_string(scored) + " of " + std::to_string(b * s) +
                    " positions scored)");
  report.close(policy + " token classifier: 20 micro-batch losses (-1 positions left out)", loss_g, loss_c, tol);
  report.close(policy + " token classifier: gradient norms", norm_g, norm_c, tol);
  Tape ec, eg;
  nn::Context cc{ec}, cg{eg};
  report.close(policy + " token classifier: B*S x 5 logits after 10 steps", ops_twin::values(gpu.forward(cg, batch).value()),
               ops_twin::values(cpu.forward(cc, batch).value()), tol);
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/bert");
  Report report("gpu/bert");
  gpu_test::guarded(report, "Fp32", [&] { check_policy<precision::Fp32>(report, "Fp32", 1e-4); });
  gpu_test::guarded(report, "Bf16Mixed", [&] { check_policy<precision::Bf16Mixed>(report, "Bf16Mixed", 3e-2); });
  gpu_test::guarded(report, "Fp16Mixed", [&] { check_policy<precision::Fp16Mixed>(report, "Fp16Mixed", 3e-2); });
  gpu_test::guarded(report, "Fp32 token classifier",
                    [&] { check_token_classifier<precision::Fp32>(report, "Fp32", 1e-4); });
  gpu_test::guarded(report, "Bf16Mixed token classifier",
                    [&] { check_token_classifier<precision::Bf16Mixed>(report, "Bf16Mixed", 3e-2); });
  return report.finish();
}

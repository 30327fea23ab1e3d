// The training step on a tiny BERT over the real data path (TSV -> features -> cache ->
// batcher): the loss falls under every precision policy, an injected overflow skips the
// step under loss scaling, and gradient accumulation equals one big batch.
#include <catch2/catch.hpp>

#include <ctdl/data/batcher.hpp>
#include <ctdl/optim/adamw.hpp>
#include <ctdl/train/classifier.hpp>

#include <fstream>
#include <limits>
#include <numeric>

#include "toy_task.hpp"

using namespace ctdl;
using F = bert::Family<32, 4, 64>;

namespace {

const data::FeatureCache& cache() { return test::toy_span_cache("train_rows"); }

bert::BertConfig config() { return test::toy_bert_config(); }

/// The losses of the first `steps` applied optimizer steps.
template <class P>
std::vector<double> train_losses(int steps, std::uint64_t seed = 1) {
  auto model = bert::BertForSequenceClassification<float, F, P>::make(config(), 3);
  bert::init_weights(model, 0.02, seed);
  train::ClassifierTrainer<decltype(model), P> trainer(model, {.max_grad_norm = 1.0, .seed = seed});
  optim::AdamW opt;
  data::Batcher batcher(cache(), {.batch_size = 16, .shuffle = true, .seed = seed, .drop_remainder = true});
  REQUIRE(batcher.batches_per_epoch() > 0);  // else the loop below would never end
  std::vector<double> losses;
  for (std::uint64_t epoch = 0; static_cast<int>(losses.size()) < steps; ++epoch) {
    batcher.start_epoch(epoch);
    data::Batch b;
    while (static_cast<int>(losses.size()) < steps && batcher.next(b)) {
      const double loss = trainer.backward(b);
      // Steps that count: under Fp16Mixed the first ones overflow at the initial scale
      // (2^32) and are skipped, two per halving (the original's loss scaler).
      if (trainer.apply(opt, 2e-3f).applied) losses.push_back(loss);
    }
  }
  return losses;
}

double mean(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  double s = 0;
  for (std::size_t i = begin; i < end; ++i) s += v[i];
  return s / static_cast<double>(end - begin);
}

}  // namespace

TEMPLATE_TEST_CASE("a tiny BERT learns the span classes under every precision policy", "", precision::Fp32,
                   precision::Bf16Mixed, precision::Fp16Mixed) {
  const auto losses = train_losses<TestType>(60);
  for (double l : losses) REQUIRE(std::isfinite(l));
  const double first = mean(losses, 0, 6), last = mean(losses, 54, 60);
  INFO(TestType::name << ": mean loss of the first 6 steps " << first << ", of the last 6 " << last);
  CHECK(first > 0.9);         // about ln 3 at the start
  CHECK(last < 0.5 * first);  // and it learns
}

TEST_CASE("an injected overflow skips the step and leaves the weights alone, and the second since the scale changed halves it") {
  using P = precision::Fp16Mixed;
  auto model = bert::BertForSequenceClassification<float, F, P>::make(config(), 3);
  bert::init_weights(model, 0.02, 3);
  train::ClassifierTrainer<decltype(model), P> trainer(model, {});
  // A scale this model's fp16 gradients take (the initial 2^32 overflows them: the
  // first steps of a run bring it down, two skipped steps per halving).
  trainer.scaler().restore({.scale = 1024.0});
  optim::AdamW opt;
  data::Batcher batcher(cache(), {.batch_size = 16, .shuffle = false, .prefetch = 0});
  batcher.start_epoch(0);
  data::Batch b;
  REQUIRE(batcher.next(b));
  for (int i = 0; i < 3; ++i) {  // a few clean steps
    trainer.backward(b);
    REQUIRE(trainer.apply(opt, 1e-3f).applied);
  }
  const auto inject_overflow = [&] {
    trainer.backward(b);
    model.bert.embeddings.word_embeddings.weight.node_ptr()->grad_data()[7] = std::numeric_limits<float>::infinity();
    return trainer.apply(opt, 1e-3f);
  };
  const auto before = model.classifier.weight.value();
  const auto adam_steps = opt.steps();
  const auto first = inject_overflow();
  CHECK_FALSE(first.applied);
  CHECK(first.loss_scale == 1024.0);
  CHECK(trainer.loss_scale() == 1024.0);  // the first overflow since the scale changed keeps it
  CHECK(trainer.scaler().overflow_steps() == 1);
  CHECK(opt.steps() == adam_steps);
  for (index_t i = 0; i < before.size(); ++i) REQUIRE(model.classifier.weight.value().data()[i] == before.data()[i]);
  CHECK_FALSE(model.classifier.weight.has_grad());  // the skipped step's gradients are gone
  // Training goes on; a clean step between two overflows does not reset their count.
  trainer.backward(b);
  CHECK(trainer.apply(opt, 1e-3f).applied);
  CHECK_FALSE(inject_overflow().applied);
  CHECK(trainer.loss_scale() == 512.0);
  CHECK(trainer.scaler().skipped_steps() == 2);
  trainer.backward(b);
  CHECK(trainer.apply(opt, 1e-3f).applied);
}

TEST_CASE("two accumulated half batches update the weights as one batch does") {
  using P = precision::Fp32;
  auto cfg = config();
  cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = cfg.classifier_dropout = 0;
  auto a = bert::BertForSequenceClassification<float, F, P>::make(cfg, 3);
  auto b = bert::BertForSequenceClassification<float, F, P>::make(cfg, 3);
  bert::init_weights(a, 0.02, 5);
  bert::init_weights(b, 0.02, 5);
  train::ClassifierTrainer<decltype(a), P> ta(a, {}), tb(b, {});
  optim::AdamW oa, ob;
  data::Batcher whole(cache(), {.batch_size = 16, .shuffle = false, .prefetch = 0});
  data::Batcher halves(cache(), {.batch_size = 8, .shuffle = false, .prefetch = 0});
  whole.start_epoch(0);
  halves.start_epoch(0);
  for (int step = 0; step < 3; ++step) {
    data::Batch w, h;
    REQUIRE(whole.next(w));
    ta.backward(w);
    ta.apply(oa, 1e-3f);
    for (int k = 0; k < 2; ++k) {
      REQUIRE(halves.next(h));
      tb.backward(h);
    }
    tb.apply(ob, 1e-3f);
  }
  double worst = 0;
  const auto& wa = a.bert.encoder.layer[1].output.dense.weight.value();
  const auto& wb = b.bert.encoder.layer[1].output.dense.weight.value();
  for (index_t i = 0; i < wa.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(wa.data()[i] - wb.data()[i])));
  CHECK(worst < 1e-5);
}

TEST_CASE("predict names the first row whose logits are not finite") {
  using Model = bert::BertForSequenceClassification<float, F, precision::Fp32>;
  auto model = Model::make(config(), 3);
  bert::init_weights(model, 0.02, 3);
  const auto clean = train::predict(model, cache(), 8, 3);
  CHECK(clean.first_non_finite_row == -1);
  CHECK(clean.non_finite_rows == 0);
  // One NaN in a classifier weight makes every row's logit of that class NaN: the first
  // row in file order is named, and every row is counted (argmax alone would answer class 0).
  model.classifier.weight.value().data()[1 * 32 + 5] = std::numeric_limits<float>::quiet_NaN();
  const auto broken = train::predict(model, cache(), 8, 3);
  CHECK(broken.first_non_finite_row == 0);
  CHECK(broken.non_finite_rows == cache().rows());
  // Only the rows whose span is "world" (rows 1, 4, 7, ...) meet an infinite embedding:
  // the first of them is named, and only they are counted.
  bert::init_weights(model, 0.02, 3);
  const auto world = test::tiny_tokenizer().vocab().require("world");
  model.bert.embeddings.word_embeddings.weight.value().data()[world * 32] = std::numeric_limits<float>::infinity();
  const auto some = train::predict(model, cache(), 8, 3);
  CHECK(some.first_non_finite_row == 1);
  CHECK(some.non_finite_rows == cache().rows() / 3);
}

TEST_CASE("predict keeps the logits and the pooled vectors they came from, in row order") {
  using Model = bert::BertForSequenceClassification<float, F, precision::Fp32>;
  auto model = Model::make(config(), 3);
  bert::init_weights(model, 0.02, 5);
  const auto plain = train::predict(model, cache(), 8, 3);
  CHECK(plain.logits.empty());
  CHECK(plain.pooled.empty());
  // A batch size that does not divide the rows, the rows grouped by length (the default):
  // the kept rows are still in file order. (Other batches, other widths: the same
  // probabilities up to rounding.)
  const auto p = train::predict(model, cache(), 5, 3, {.keep_logits = true, .keep_pooled = true});
  const std::size_t n = cache().rows();
  REQUIRE(p.hidden == 32);
  REQUIRE(p.logits.size() == n * 3);
  REQUIRE(p.pooled.size() == n * 32);
  REQUIRE(p.probabilities.size() == plain.probabilities.size());
  for (std::size_t i = 0; i < p.probabilities.size(); ++i) CHECK(std::abs(p.probabilities[i] - plain.probabilities[i]) < 1e-6);
  const float* w = model.classifier.weight.value().data();  // 3 x 32
  const float* b = model.classifier.bias.value().data();
  double worst_logit = 0, worst_probability = 0;
  for (std::size_t r = 0; r < n; ++r) {
    const float* l = &p.logits[r * 3];
    // The logits are the classifier of the kept pooled vector (computed here in double) ...
    for (int k = 0; k < 3; ++k) {
      double z = b[k];
      for (int j = 0; j < 32; ++j) z += static_cast<double>(w[k * 32 + j]) * p.pooled[r * 32 + static_cast<std::size_t>(j)];
      worst_logit = std::max(worst_logit, std::abs(z - l[k]));
    }
    // ... and their softmax is the row's probabilities.
    const double mx = std::max({l[0], l[1], l[2]});
    const double s = std::exp(l[0] - mx) + std::exp(l[1] - mx) + std::exp(l[2] - mx);
    for (int k = 0; k < 3; ++k)
      worst_probability = std::max(worst_probability, std::abs(std::exp(l[k] - mx) / s - p.probabilities[r * 3 + static_cast<std::size_t>(k)]));
  }
  CHECK(worst_logit < 1e-5);
  CHECK(worst_probability < 1e-6);
  // The pooler's output is tanh: every value in (-1, 1), and rows differ.
  CHECK(std::all_of(p.pooled.begin(), p.pooled.end(), [](float v) { return v > -1 && v < 1; }));
  CHECK(p.pooled[0] != p.pooled[32]);
}

TEST_CASE("predict's batches grouped by length (the default) give file order's and M-wide batches' outputs, row by row") {
  using Model = bert::BertForSequenceClassification<float, F, precision::Fp32>;
  auto model = Model::make(config(), 3);
  bert::init_weights(model, 0.02, 11);
  // The toy rows differ in length, so grouping reorders them (ties keep file order).
  data::Batcher grouping(cache(), {.batch_size = 8, .shuffle = false, .trim_padding = true, .group_by_length = true});
  grouping.start_epoch(0);
  std::vector<std::uint32_t> file_order(cache().rows());
  std::iota(file_order.begin(), file_order.end(), 0u);
  REQUIRE(grouping.order() != file_order);

  const auto grouped = train::predict(model, cache(), 8, 3, {.keep_logits = true});
  const auto in_file_order = train::predict(model, cache(), 8, 3, {.keep_logits = true, .group_by_length = false});
  const auto padded = train::predict(model, cache(), 8, 3, {.keep_logits = true, .pad_to_max_length = true});
  const std::size_t n = cache().rows();
  for (const auto* other : {&in_file_order, &padded}) {
    REQUIRE(other->logits.size() == n * 3);
    CHECK(grouped.predicted == other->predicted);
    CHECK(grouped.truth == other->truth);
    double worst = 0;
    for (std::size_t i = 0; i < n * 3; ++i) worst = std::max(worst, static_cast<double>(std::abs(grouped.logits[i] - other->logits[i])));
    CHECK(worst < 1e-5);
    CHECK(grouped.mean_loss == Approx(other->mean_loss).epsilon(1e-6));
  }
  // Each row's logits are its own: the batches of one row each (no batching at all) agree.
  const auto alone = train::predict(model, cache(), 1, 3, {.keep_logits = true, .group_by_length = false});
  double worst = 0;
  for (std::size_t i = 0; i < n * 3; ++i) worst = std::max(worst, static_cast<double>(std::abs(grouped.logits[i] - alone.logits[i])));
  CHECK(worst < 1e-5);
}

TEST_CASE("predict reports its progress after every batch") {
  using Model = bert::BertForSequenceClassification<float, F, precision::Fp32>;
  auto model = Model::make(config(), 3);
  bert::init_weights(model, 0.02, 3);
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  const auto p = train::predict(model, cache(), 10, 3,
                                {.progress = [&](std::size_t done, std::size_t batches) { calls.emplace_back(done, batches); }});
  const std::size_t batches = (cache().rows() + 9) / 10;  // the last one short
  REQUIRE(calls.size() == batches);
  for (std::size_t k = 0; k < batches; ++k) CHECK(calls[k] == std::pair{k + 1, batches});
  CHECK(p.batch_rows.size() == batches);
}

// fit, evaluate and predict (train/loops.hpp) and their checkpoints (train/checkpoint.hpp)
// on a tiny BERT over the real data path (TSV -> features -> cache -> batcher): the loss
// falls on a learnable task, k accumulated micro-batches of b rows equal one batch of
// k x b, evaluate's metrics equal a count by hand, and a run resumed from a checkpoint ends
// with the weights, bit for bit, of one that was never interrupted.
#include <catch2/catch.hpp>

#include <ctdl/train/checkpoint.hpp>
#include <ctdl/train/loops.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "toy_task.hpp"

using namespace ctdl;
using F = bert::Family<32, 4, 64>;
namespace fs = std::filesystem;

namespace {

const data::FeatureCache& loops_cache() { return test::toy_span_cache("loops_rows"); }

bert::BertConfig config(bool dropout = true) { return test::toy_bert_config(dropout); }

template <class P>
auto make_model(std::uint64_t seed, bool dropout = true) {
  auto m = bert::BertForSequenceClassification<float, F, P>::make(config(dropout), 3);
  bert::init_weights(m, 0.02, seed);
  return m;
}

/// Every parameter's bytes, in visiting order: equal strings mean bit-identical weights.
template <class M>
std::string weight_bytes(M& model) {
  std::string out;
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    const auto& v = p.value();
    out.append(reinterpret_cast<const char*>(v.data()), static_cast<std::size_t>(v.size()) * sizeof(float));
  });
  return out;
}

template <class M>
double max_weight_difference(M& a, M& b) {
  std::vector<const float*> pa;
  std::vector<index_t> sizes;
  nn::visit_parameters(a, [&](const std::string&, auto& p) {
    pa.push_back(p.value().data());
    sizes.push_back(p.value().size());
  });
  double worst = 0;
  std::size_t k = 0;
  nn::visit_parameters(b, [&](const std::string&, auto& p) {
    for (index_t i = 0; i < sizes[k]; ++i)
      worst = std::max(worst, static_cast<double>(std::abs(p.value().data()[i] - pa[k][i])));
    ++k;
  });
  return worst;
}

train::FitHooks quiet(std::vector<double>* losses = nullptr) {
  train::FitHooks h;
  h.say = [](const std::string&) {};
  if (losses)
    h.record = [losses](const nlohmann::json& r) {
      if (r.value("type", "") == "train") losses->push_back(r["loss"].get<double>());
    };
  return h;
}

}  // namespace

TEST_CASE("fit lowers the loss of a learnable task and evaluate then scores it well") {
  using P = precision::Fp32;
  auto model = make_model<P>(1);
  std::vector<double> losses;
  auto hooks = quiet(&losses);
  std::vector<std::int64_t> evaluated_at;
  hooks.evaluate = [&](std::int64_t step) {
    evaluated_at.push_back(step);
    const auto e = train::evaluate(model, loops_cache(), 16, {"che", "dis", "out"});
    return nlohmann::json{{"type", "eval"}, {"step", step}, {"eval_accuracy", e.metrics.at("eval_accuracy")}};
  };
  // 96 rows / 16 = 6 steps an epoch; 10 epochs; an evaluation every 25 steps.
  const auto r = train::fit<P>(
      model, loops_cache(),
      {.batch_size = 16, .epochs = 10, .learning_rate = 2e-3, .seed = 1, .log_every = 1, .evaluate_every = 25}, hooks);
  REQUIRE(r.steps == 60);
  REQUIRE(losses.size() == 60);  // the evaluation records are not "train" records
  CHECK(evaluated_at == std::vector<std::int64_t>{25, 50});
  double first = 0, last = 0;
  for (int i = 0; i < 6; ++i) first += losses[static_cast<std::size_t>(i)] / 6;
  for (int i = 54; i < 60; ++i) last += losses[static_cast<std::size_t>(i)] / 6;
  INFO("mean loss of the first 6 steps " << first << ", of the last 6 " << last);
  CHECK(first > 0.9);         // about ln 3 at the start
  CHECK(last < 0.6 * first);  // and it learns (measured: 1.10 -> 0.47)
  const auto e = train::evaluate(model, loops_cache(), 8, {"che", "dis", "out"});
  CHECK(e.metrics.at("eval_accuracy") > 0.5);  // chance is 1/3 (measured: 0.67)
}

TEST_CASE("fit with k accumulated micro-batches of b rows equals fit with batches of k x b rows") {
  using P = precision::Fp32;
  auto whole = make_model<P>(5, /*dropout=*/false);
  auto parts = make_model<P>(5, /*dropout=*/false);
  // File order, so that micro-batches 2i and 2i+1 are the rows of batch i.
  train::FitOptions o{.batch_size = 16, .epochs = 1, .learning_rate = 1e-3, .shuffle = false};
  const auto a = train::fit<P>(whole, loops_cache(), o, quiet());
  o.batch_size = 4;
  o.accumulation_steps = 4;
  const auto b = train::fit<P>(parts, loops_cache(), o, quiet());
  REQUIRE(a.steps == 6);
  REQUIRE(b.steps == 6);
  const double d = max_weight_difference(whole, parts);
  INFO("largest weight difference " << d);
  CHECK(d < 1e-5);
  // and both moved away from the initial weights
  auto initial = make_model<P>(5, false);
  CHECK(max_weight_difference(whole, initial) > 1e-4);
}

TEST_CASE("evaluate's metrics equal a count by hand over predict's outputs") {
  using P = precision::Fp32;
  auto model = make_model<P>(7);
  train::fit<P>(model, loops_cache(), {.batch_size = 16, .epochs = 2, .learning_rate = 1e-3, .seed = 7}, quiet());
  const std::vector<std::string> names = {"che", "dis", "out"};
  const auto e = train::evaluate(model, loops_cache(), 5, names);  // 5: a last, short batch
  const auto& p = e.predictions;
  const std::size_t n = loops_cache().rows();
  REQUIRE(p.predicted.size() == n);
  // truth is the cache's label of each row, in file order
  for (std::size_t r = 0; r < n; ++r) REQUIRE(p.truth[r] == loops_cache().label_id(r));
  std::size_t correct = 0;
  double loss = 0;
  std::array<double, 3> tp{}, fp{}, fn{};
  for (std::size_t r = 0; r < n; ++r) {
    const auto y = static_cast<std::size_t>(p.truth[r]), k = static_cast<std::size_t>(p.predicted[r]);
    const float* probs = p.probabilities.data() + r * 3;
    REQUIRE(std::abs(probs[0] + probs[1] + probs[2] - 1.0) < 1e-5);
    REQUIRE(probs[k] >= probs[0]);
    REQUIRE(probs[k] >= probs[1]);
    REQUIRE(probs[k] >= probs[2]);
    loss -= std::log(static_cast<double>(probs[y]));
    if (y == k) {
      ++correct;
      tp[y] += 1;
    } else {
      fp[k] += 1;
      fn[y] += 1;
    }
  }
  double macro_f1 = 0, weighted_f1 = 0;
  for (std::size_t c = 0; c < 3; ++c) {
    const double prec = tp[c] + fp[c] > 0 ? tp[c] / (tp[c] + fp[c]) : 0;
    const double rec = tp[c] + fn[c] > 0 ? tp[c] / (tp[c] + fn[c]) : 0;
    const double f1 = prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0;
    macro_f1 += f1 / 3;
    weighted_f1 += f1 * (tp[c] + fn[c]) / static_cast<double>(n);
  }
  const double accuracy = static_cast<double>(correct) / static_cast<double>(n);
  INFO("accuracy " << accuracy << ", loss " << loss / static_cast<double>(n));
  CHECK(e.metrics.at("eval_accuracy") == Approx(accuracy).epsilon(1e-12));
  CHECK(e.metrics.at("f1-score") == Approx(accuracy).epsilon(1e-12));  // micro F1 of single-label classes
  CHECK(e.metrics.at("f1-macro") == Approx(macro_f1).epsilon(1e-9));
  CHECK(e.metrics.at("f1-weighted") == Approx(weighted_f1).epsilon(1e-9));
  CHECK(e.metrics.at("eval_loss") == Approx(loss / static_cast<double>(n)).epsilon(1e-5));
}

TEMPLATE_TEST_CASE("a run resumed from a checkpoint ends bit-identical to an uninterrupted one", "", precision::Fp32,
                   precision::Fp16Mixed) {
  using P = TestType;
  const std::string root = test::scratch_dir("loops", std::string("resume_") + P::name);
  // 96 rows, micro-batches of 8, 2 accumulated: 6 steps an epoch; 3 epochs; a checkpoint
  // every 4 steps (at 4, 8, 12, 16 and the end, 18), mid-epoch, with dropout and shuffling.
  train::FitOptions o{.batch_size = 8, .accumulation_steps = 2, .epochs = 3, .learning_rate = 2e-3, .seed = 11,
                      .checkpoints = {.root = root + "/whole", .every_steps = 4, .keep = 10}};
  auto whole = make_model<P>(3);
  const auto full = train::fit<P>(whole, loops_cache(), o, quiet());
  REQUIRE(full.steps == 18);
  CHECK(train::checkpoint_steps(root + "/whole") == std::vector<std::int64_t>{4, 8, 12, 16, 18});
  if constexpr (P::loss_scaling) CHECK(full.skipped_steps > 0);  // 2^32 overflows first: the scaler state matters

  {  // the optimizer's moments are in it (between steps no parameter has a gradient)
    const io::SafetensorsFile moments(root + "/whole/checkpoint-4/optimizer.safetensors");
    REQUIRE(moments.contains("v.classifier.weight"));
    const auto v = moments.tensor<float, Shape<dyn>>("v.classifier.weight");
    CHECK(std::any_of(v.data(), v.data() + v.size(), [](float x) { return x > 0; }));
  }
  // "Killed" after checkpoint 8: only what was on disk then is left.
  fs::create_directories(root + "/killed");
  fs::copy(root + "/whole/checkpoint-4", root + "/killed/checkpoint-4", fs::copy_options::recursive);
  fs::copy(root + "/whole/checkpoint-8", root + "/killed/checkpoint-8", fs::copy_options::recursive);
  auto resumed = make_model<P>(99);  // other initial weights: all must come from the checkpoint
  o.checkpoints.root = root + "/killed";
  o.checkpoints.resume = true;
  const auto rest = train::fit<P>(resumed, loops_cache(), o, quiet());
  CHECK(rest.resumed_from == 8);
  CHECK(rest.steps == 18);
  CHECK(weight_bytes(resumed) == weight_bytes(whole));
  CHECK(test::read_file(root + "/killed/checkpoint-18/model.safetensors") ==
        test::read_file(root + "/whole/checkpoint-18/model.safetensors"));
  CHECK(test::read_file(root + "/killed/checkpoint-18/optimizer.safetensors") ==
        test::read_file(root + "/whole/checkpoint-18/optimizer.safetensors"));
}

TEST_CASE("a torn newest checkpoint is passed over, naming it, for the one before") {
  using P = precision::Fp32;
  const std::string root = test::scratch_dir("loops", "torn");
  auto model = make_model<P>(3);
  train::fit<P>(model, loops_cache(),
                {.batch_size = 16, .epochs = 1, .seed = 2, .checkpoints = {.root = root, .every_steps = 2, .keep = 2}},
                quiet());
  // keep = 2: of 2, 4 and 6 (the end), the newest two
  REQUIRE(train::checkpoint_steps(root) == std::vector<std::int64_t>{4, 6});
  CHECK(train::verify_checkpoint(root + "/checkpoint-6") == "");
  const std::string st = root + "/checkpoint-6/model.safetensors";
  fs::resize_file(st, fs::file_size(st) / 2);
  CHECK_THAT(train::verify_checkpoint(root + "/checkpoint-6"), Catch::Contains("model.safetensors") &&
                                                                   Catch::Contains("torn or truncated"));
  auto found = train::find_checkpoint(root);
  REQUIRE(found);
  CHECK(found->step == 4);
  REQUIRE(found->passed_over.size() == 1);
  CHECK_THAT(found->passed_over[0], Catch::Contains("checkpoint-6: model.safetensors"));
  // A flipped byte of the same size is caught by the checksum.
  {
    std::fstream f(root + "/checkpoint-4/optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  CHECK_THAT(train::verify_checkpoint(root + "/checkpoint-4"), Catch::Contains("optimizer.safetensors: checksum"));
  // An unfinished one (no manifest) is not a checkpoint either.
  fs::remove(root + "/checkpoint-6/manifest.json");
  CHECK_THAT(train::verify_checkpoint(root + "/checkpoint-6"), Catch::Contains("no manifest.json"));
  std::vector<std::string> rejected;
  CHECK_FALSE(train::find_checkpoint(root, &rejected));
  CHECK(rejected.size() == 2);
}

TEST_CASE("resuming with settings that change the run is an error naming the setting and both values") {
  using P = precision::Fp32;
  const std::string root = test::scratch_dir("loops", "settings");
  auto model = make_model<P>(3);
  train::FitOptions o{.batch_size = 16, .epochs = 1, .learning_rate = 1e-3, .seed = 2,
                      .checkpoints = {.root = root, .every_steps = 3}};
  train::fit<P>(model, loops_cache(), o, quiet());
  o.checkpoints.resume = true;
  o.learning_rate = 2e-3;
  CHECK_THROWS_WITH(train::fit<P>(model, loops_cache(), o, quiet()),
                    Catch::Contains("learning_rate=0.001") && Catch::Contains("learning_rate=0.002") &&
                        Catch::Contains("checkpoint-6"));
  {  // the training data is recorded by its content
    const std::string state = test::read_file(root + "/checkpoint-6/state.json");
    char sum[17];
    std::snprintf(sum, sizeof sum, "%016llx", static_cast<unsigned long long>(loops_cache().header().source_xxh64));
    CHECK_THAT(state, Catch::Contains(std::string("\"training_data_xxh64\": \"") + sum + "\""));
  }
  o.learning_rate = 1e-3;
  o.checkpoints.settings = {{"--train_batch_size", "16"}};
  train::FitOptions other = o;
  other.checkpoints.resume = false;
  other.checkpoints.root = root + "/flags";
  train::fit<P>(model, loops_cache(), other, quiet());
  o.checkpoints.root = other.checkpoints.root;
  o.checkpoints.settings = {{"--train_batch_size", "32"}};
  CHECK_THROWS_WITH(train::fit<P>(model, loops_cache(), o, quiet()),
                    Catch::Contains("--train_batch_size=16") && Catch::Contains("--train_batch_size=32"));
}

TEST_CASE("state.json carries the loss scaler's counts, and one written before the overflow count reads it as 0") {
  train::TrainingState s;
  s.global_step = 12;
  s.epoch = 1;
  s.batches_taken = 3;
  s.dropout_step = 27;
  s.optimizer_steps = 12;
  s.loss_scaler = {.scale = 65536.0, .clean_steps = 7, .skipped_steps = 15, .overflow_steps = 1};
  s.settings = {{"seed", "3"}};
  auto j = train::detail::state_to_json(s);
  const auto back = train::detail::state_from_json(j, "state.json");
  CHECK(back.loss_scaler.scale == 65536.0);
  CHECK(back.loss_scaler.clean_steps == 7);
  CHECK(back.loss_scaler.skipped_steps == 15);
  CHECK(back.loss_scaler.overflow_steps == 1);
  CHECK(back.global_step == 12);
  CHECK(back.settings == s.settings);
  j.erase("loss_scale_overflow_steps");  // as an earlier ctdl wrote it
  CHECK(train::detail::state_from_json(j, "state.json").loss_scaler.overflow_steps == 0);
  j.erase("loss_scale");
  CHECK_THROWS_WITH(train::detail::state_from_json(j, "old/state.json"),
                    Catch::Contains("old/state.json: not a training state"));
}

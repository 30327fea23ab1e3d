#pragma once
// The work of ner_span_classifier for one BERT family F and precision policy P.

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <span>
#include <nlohmann/json.hpp>

#include <ctdl/data/batcher.hpp>
#include <ctdl/io/atomic_file.hpp>
#include <ctdl/io/parameters.hpp>
#include <ctdl/io/safetensors_writer.hpp>
#include <ctdl/metrics/classification.hpp>
#include <ctdl/optim/adamw.hpp>
#include <ctdl/optim/schedule.hpp>
#include <ctdl/train/classifier.hpp>
#include <ctdl/train/run_log.hpp>

#include "span_classifier.hpp"

namespace span_classifier {

namespace fs = std::filesystem;
using namespace ctdl;

inline void say(const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); }

inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

/// The feature cache of one split, prepared if needed (logging what happened). With
/// --skip_bad_rows, <output_dir>/<split>_skipped_rows.tsv lists every skipped row (line,
/// reason, id columns), so that the outputs, one line per good row, can be lined up with
/// the input; it is written whole (empty but for its header when nothing was skipped).
inline std::unique_ptr<data::FeatureCache> split_cache(const Setup& s, const std::string& split) {
  const auto& a = s.args;
  const std::string tsv = a.data_dir + "/" + split + ".tsv";
  const std::string cache = a.output_dir + "/" + split + ".features";
  const std::string skipped_path = a.output_dir + "/" + split + "_skipped_rows.tsv";
  std::optional<io::AtomicFile> skipped_file;
  if (a.skip_bad_rows) {
    skipped_file.emplace(skipped_path);
    *skipped_file << "line\treason\tids\n";
  }
  const auto on_skip = [&](const data::SkippedRow& r) {
    if (skipped_file) *skipped_file << std::to_string(r.line) << '\t' << r.reason << '\t' << r.ids << '\n';
  };
  const data::SpanFeatureBuilder builder(
      *s.tokenizer, {.max_seq_length = a.max_seq_length,
                     .replace_span = a.replace_span.empty() ? std::nullopt : std::optional(a.replace_span)});
  const bool terminal = ::isatty(STDERR_FILENO);
  const auto report = data::prepare_span_cache(
      tsv, cache, *s.labels, builder, *s.tokenizer, a.skip_bad_rows, [&](std::size_t rows, std::size_t pos, std::size_t total) {
        if (terminal)
          std::fprintf(stderr, "\r\033[Kpreparing %s: %zu rows, %.0f%%", split.c_str(), rows,
                       100.0 * static_cast<double>(pos) / static_cast<double>(std::max<std::size_t>(1, total)));
      },
      on_skip);
  if (skipped_file) {
    skipped_file->commit();
  } else {
    std::error_code ec;  // a list from an earlier --skip_bad_rows run would describe other outputs
    fs::remove(skipped_path, ec);
  }
  if (terminal && report.rebuilt) std::fprintf(stderr, "\r\033[K");
  if (report.rebuilt)
    say("prepared " + split + ": " + std::to_string(report.rows) + " rows in " + fmt("%.1f s", report.seconds) + " (" +
        fmt("%.0f rows/s", static_cast<double>(report.rows) / std::max(1e-9, report.seconds)) + ", " +
        std::to_string(omp_get_max_threads()) + " threads) -> " + cache + " (" + report.reason + ")");
  else
    say("using the feature cache " + cache + ": " + std::to_string(report.rows) + " rows");
  if (report.skipped) {
    say("skipped " + std::to_string(report.skipped) + " bad rows of " + tsv + " (--skip_bad_rows; all listed in " +
        skipped_path + "); the first:");
    for (const auto& m : report.skipped_messages) say("  " + m);
  }
  auto fc = std::make_unique<data::FeatureCache>(cache);
  if (fc->rows() == 0) throw Error(tsv + ": no rows");
  return fc;
}

inline void dump_features(const data::FeatureCache& cache, const std::string& path) {
  io::AtomicFile out(path);
  const index_t M = cache.max_seq_length();
  for (std::size_t r = 0; r < cache.rows(); ++r) {
    const std::int32_t* ids = cache.input_ids(r);
    nlohmann::json j;
    std::vector<std::int32_t> v(ids, ids + M), mask(static_cast<std::size_t>(M)), seg(static_cast<std::size_t>(M), 0);
    for (index_t k = 0; k < M; ++k) mask[static_cast<std::size_t>(k)] = ids[k] != cache.header().pad_id;
    j["input_ids"] = v;
    j["input_mask"] = mask;
    j["segment_ids"] = seg;
    j["label_id"] = cache.label_id(r);
    out << j.dump() << '\n';
  }
  out.commit();
  say("wrote " + path);
}

/// Loads the encoder (and the classifier, when the checkpoint has one) from safetensors.
/// Why classifier row `dropped` may be a used class rather than the phantom one, or ""
/// when its bias looks like the phantom's. The check: no label maps to the phantom row, so
/// it is never a training target, and softmax cross-entropy's gradient on its bias is its
/// probability, always > 0: training only ever lowers that bias from its initial 0 (BERT
/// initialises classifier biases to zero; AdamWeightDecay does not decay biases), and with
/// Adam at the largest rate any row can move (its gradient never changes sign). So the
/// phantom row's bias is <= 0 and no other row's is lower. Equal biases (a classifier that
/// was never trained) say nothing either way.
inline std::string phantom_row_doubt(std::span<const float> bias, index_t dropped) {
  const auto d = static_cast<std::size_t>(dropped);
  const float b = bias[d];
  const auto lowest = static_cast<std::size_t>(std::min_element(bias.begin(), bias.end()) - bias.begin());
  const auto row = [](std::size_t r) { return "row " + std::to_string(r); };
  if (b > 0)
    return "the dropped " + row(d) + " looks used: its bias is " + fmt("%g", b) +
           " > 0, but training only lowers the bias of the row no label maps to (it starts at 0); " +
           (lowest != d ? row(lowest) + " has the lowest bias (" + fmt("%g", bias[lowest]) + ")" : std::string("check --phantom_class"));
  if (bias[lowest] < b) {
    const std::string hint = lowest == 0 ? " (--phantom_class=first drops it)"
                             : lowest + 1 == bias.size() ? " (--phantom_class=last drops it)" : "";
    return "the dropped " + row(d) + " may be a used class: " + row(lowest) + " has a lower bias (" +
           fmt("%g", bias[lowest]) + " < " + fmt("%g", b) + "), and the row no label maps to has the lowest" + hint;
  }
  return "";
}

template <class Model>
void load_checkpoint(Model& model, const Setup& s) {
  io::SafetensorsFile file(s.checkpoint_file);
  io::load_parameters(model.bert, file, "bert.");
  const auto L = static_cast<index_t>(s.labels->size());
  if (!file.contains("classifier.weight")) {
    say("the checkpoint has no classifier: it starts from random initialisation");
    return;
  }
  const auto& w = file.at("classifier.weight");
  const index_t rows = w.shape.empty() ? 0 : w.shape[0];
  if (rows == L) {
    file.read_into("classifier.weight", model.classifier.weight.value());
    file.read_into("classifier.bias", model.classifier.bias.value());
    return;
  }
  if (rows != L + 1)
    throw Error(s.checkpoint_file + ": the classifier has " + std::to_string(rows) + " classes, labels.txt has " +
                std::to_string(L));
  // The original pipeline's phantom extra class: it numbers the labels 0..L-1 and builds
  // L+1 outputs, so row L is the one no label maps to (--phantom_class=last, the default).
  const index_t skip = s.args.phantom_class == "first" ? 0 : L;
  auto full_w = file.tensor<float, Shape<dyn, dyn>>("classifier.weight");
  auto full_b = file.tensor<float, Shape<dyn>>("classifier.bias");
  say("warning: " + s.checkpoint_file + ": the classifier has " + std::to_string(L + 1) + " rows for " +
      std::to_string(L) + " labels (the original pipeline's extra class); dropped row " + std::to_string(skip) +
      " of 0.." + std::to_string(L) + " (--phantom_class=" + s.args.phantom_class + ")");
  const std::string doubt = phantom_row_doubt(std::span<const float>(full_b.data(), static_cast<std::size_t>(L + 1)), skip);
  if (!doubt.empty()) say("warning: " + s.checkpoint_file + ": " + doubt);
  const index_t H = full_w.extent(1);
  for (index_t r = 0, out = 0; r <= L; ++r) {
    if (r == skip) continue;
    std::copy_n(full_w.data() + r * H, H, model.classifier.weight.value().data() + out * H);
    model.classifier.bias.value().data()[out] = full_b.data()[r];
    ++out;
  }
}

/// model.safetensors (Hugging Face names) with bert_config.json, vocab.txt and labels.txt
/// beside it: a directory that is itself a valid --init_checkpoint.
template <class Model>
void save_model(Model& model, const Setup& s, const std::string& dir, std::int64_t step) {
  fs::create_directories(dir);
  io::save_parameters(model, dir + "/model.safetensors",
                      {{"format", "pt"}, {"made_by", "ctdl ner_span_classifier"}, {"global_step", std::to_string(step)}});
  const auto copy = [&](const std::string& from, const std::string& to) {
    if (fs::absolute(from) != fs::absolute(dir + "/" + to)) io::copy_file_atomically(from, dir + "/" + to);
  };
  copy(s.args.bert_config_file, "bert_config.json");
  copy(s.args.vocab_file, "vocab.txt");
  copy(s.labels->source(), "labels.txt");
}

/// Non-finite logits (NaN weights, a broken config) would otherwise come out as a
/// confident answer for every row (argmax over NaN picks the first label): an error naming
/// the first such row's line.
inline void require_finite(const train::Predictions& p, const data::FeatureCache& cache, const std::string& tsv,
                           const Setup& s) {
  if (p.first_non_finite_row < 0) return;
  const auto row = static_cast<std::size_t>(p.first_non_finite_row);
  throw Error(tsv + ":" + std::to_string(cache.source_index(row)) +
              ": the model's logits for this row are not finite (NaN or infinite; " + std::to_string(p.non_finite_rows) +
              " of " + std::to_string(cache.rows()) + " rows): the model is broken (" +
              (s.checkpoint_file.empty() ? std::string("random initialisation") : "weights of " + s.checkpoint_file) +
              ", layer_norm_eps and sizes of " + s.args.bert_config_file + "); its results were not written");
}

inline std::int32_t majority_label(const data::FeatureCache& cache, std::size_t num_labels) {
  std::vector<std::size_t> counts(num_labels);
  for (std::size_t r = 0; r < cache.rows(); ++r) ++counts[static_cast<std::size_t>(cache.label_id(r))];
  return static_cast<std::int32_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
}

template <class F, class P>
int run(const Setup& s) {
  const auto& a = s.args;
  using Model = bert::BertForSequenceClassification<float, F, P>;
  const auto L = static_cast<index_t>(s.labels->size());
  auto model = Model::make(s.config, L);
  bert::init_weights(model, s.config.initializer_range, static_cast<std::uint64_t>(a.seed));
  if (!s.checkpoint_file.empty()) {
    load_checkpoint(model, s);
    say("loaded " + s.checkpoint_file);
  } else {
    say("no --init_checkpoint: the model starts from random initialisation (seed " + std::to_string(a.seed) + ")");
  }
  say("model: BERT " + bert::shape_name(s.config) + (F::is_dynamic ? " (runtime-shaped family)" : "") + " x " +
      std::to_string(s.config.num_hidden_layers) + " layers, " +
      std::to_string(nn::count_parameters(model)) + " parameters, precision " + P::name + ", " +
      std::to_string(omp_get_max_threads()) + " threads");

  std::map<std::string, std::unique_ptr<data::FeatureCache>> caches;
  const auto cache_of = [&](const std::string& split) -> data::FeatureCache& {
    auto& c = caches[split];
    if (!c) c = split_cache(s, split);
    return *c;
  };
  // Every input is read (and prepared) before any output is touched: a bad row in dev.tsv
  // stops the run before training replaces the model, metrics.jsonl or the results of an
  // earlier run in the same --output_dir. (The feature caches are outputs too, but each is
  // replaced only whole, by a cache of the same inputs.)
  const bool have_train = fs::exists(a.data_dir + "/train.tsv");
  for (const std::string split : {"train", "dev", "test"})
    if ((a.do_prepare && fs::exists(a.data_dir + "/" + split + ".tsv")) || (split == "train" && a.do_train) ||
        (split == "train" && a.do_eval && have_train) || (split == "dev" && a.do_eval) ||
        (split == "test" && a.do_predict))
      cache_of(split);
  if (a.do_prepare && a.dump_features)
    for (const auto& [split, c] : caches) dump_features(*c, a.output_dir + "/" + split + "_features.jsonl");

  train::RunLog log(a.output_dir, /*append=*/!a.do_train);
  std::int64_t global_step = 0;

  if (a.do_train) {
    auto& cache = cache_of("train");
    const std::int64_t micro = a.train_batch_size, accum = a.gradient_accumulation_steps;
    const auto rows_per_step = static_cast<double>(micro * accum);
    const auto total = static_cast<std::int64_t>(static_cast<double>(cache.rows()) / rows_per_step * a.num_train_epochs);
    if (total < 1)
      throw Error("no training steps: " + std::to_string(cache.rows()) + " rows, batch " + std::to_string(micro) +
                  " x " + std::to_string(accum) + " accumulation steps, " + fmt("%g epochs", a.num_train_epochs));
    const auto schedule = optim::WarmupLinearDecay::with_proportion(a.learning_rate, total, a.warmup_proportion);
    optim::AdamW optimizer;
    train::ClassifierTrainer<Model, P> trainer(model, {.max_grad_norm = a.max_grad_norm,
                                                       .seed = static_cast<std::uint64_t>(a.seed)});
    data::Batcher batcher(cache, {.batch_size = micro, .shuffle = a.shuffle,
                                  .seed = static_cast<std::uint64_t>(a.seed), .drop_remainder = true});
    const std::size_t per_epoch = batcher.batches_per_epoch() / static_cast<std::size_t>(accum);
    say("training: " + std::to_string(cache.rows()) + " rows, " + std::to_string(total) + " steps of " +
        std::to_string(micro * accum) + " (" + fmt("%g epochs", a.num_train_epochs) + "), peak learning rate " +
        fmt("%g", a.learning_rate) + ", warmup " + std::to_string(schedule.warmup_steps) + " steps");
    train::ProgressLog progress(total, a.log_every, micro * accum);
    const auto t_start = std::chrono::steady_clock::now();
    double overhead_free_s = 0;
    std::int64_t skipped = 0, timed_steps = 0;
    std::uint64_t epoch = 0;
    batcher.start_epoch(epoch);
    while (global_step < total) {
      const auto t0 = std::chrono::steady_clock::now();
      double loss = 0;
      for (std::int64_t k = 0; k < accum; ++k) {
        data::Batch b;
        while (!batcher.next(b)) batcher.start_epoch(++epoch);
        loss += trainer.backward(b) / static_cast<double>(accum);
      }
      const auto lr = static_cast<float>(schedule(global_step));
      const auto outcome = trainer.apply(optimizer, lr);
      if (!outcome.applied) {
        ++skipped;
        if (skipped > 100 && skipped > global_step)
          throw Error("the loss scale fell to " + fmt("%g", trainer.loss_scale()) +
                      " and steps keep overflowing: the training diverged");
        continue;  // the same step again, with the smaller scale
      }
      ++global_step;
      const double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (global_step > 2) {
        overhead_free_s += step_s;
        ++timed_steps;
      }
      const double ep = static_cast<double>(global_step) / static_cast<double>(std::max<std::size_t>(1, per_epoch));
      auto rec = progress.step(global_step, ep, loss, lr, P::loss_scaling ? outcome.loss_scale : 0);
      log.record(rec);
      if (a.save_checkpoints_steps > 0 && global_step % a.save_checkpoints_steps == 0 && global_step < total)
        save_model(model, s, a.output_dir + "/checkpoint-" + std::to_string(global_step), global_step);
    }
    const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double sentences = static_cast<double>(global_step) * rows_per_step;
    say("training done: " + std::to_string(global_step) + " steps, " + fmt("%.0f sentences", sentences) + " in " +
        train::format_duration(total_s) + (skipped ? ", " + std::to_string(skipped) + " steps skipped (loss scale)" : ""));
    say("  throughput with overhead: " + fmt("%.1f sentences/s", sentences / total_s));
    if (timed_steps > 0)
      say("  throughput without overhead (steps 3 on, no data preparation or saving): " +
          fmt("%.1f sentences/s", static_cast<double>(timed_steps) * rows_per_step / overhead_free_s));
    save_model(model, s, a.output_dir, global_step);
    log.commit();
    say("saved " + a.output_dir + "/model.safetensors (+ bert_config.json, vocab.txt, labels.txt), metrics.jsonl");
  }

  if (a.do_eval) {
    auto& cache = cache_of("dev");
    const auto p = train::predict(model, cache, a.eval_batch_size, L);
    require_finite(p, cache, a.data_dir + "/dev.tsv", s);
    const auto r = metrics::classification_report(p.truth, p.predicted, s.labels->names());
    std::map<std::string, double> kv = {
        {"eval_accuracy", r.accuracy},          {"eval_loss", p.mean_loss},
        {"precision", r.micro.precision},       {"recall", r.micro.recall},
        {"f1-score", r.micro.f1},               {"precision_mac", r.macro.precision},
        {"recall_mac", r.macro.recall},         {"f1-macro", r.macro.f1},
        {"precision_weighted", r.weighted.precision}, {"recall_weighted", r.weighted.recall},
        {"f1-weighted", r.weighted.f1},         {"global_step", static_cast<double>(global_step)}};
    if (have_train) {
      const auto majority = majority_label(cache_of("train"), s.labels->size());
      kv["majority_baseline"] = r.per_class[static_cast<std::size_t>(majority)].support / static_cast<double>(r.total);
    }
    std::string text;
    for (const auto& [k, v] : kv) text += k + " = " + (k == "global_step" ? std::to_string(global_step) : fmt("%.6g", v)) + "\n";
    text += "\n" + r.table() + "\n" + r.confusion_table();
    io::write_file_atomically(a.output_dir + "/eval_results.txt", text);
    std::printf("***** eval results (%zu rows of %s/dev.tsv) *****\n%s", cache.rows(), a.data_dir.c_str(), text.c_str());
    io::check_stream_written(stdout, "stdout");
    nlohmann::json rec = {{"type", "eval"}, {"step", global_step}};
    for (const auto& [k, v] : kv) rec[k] = v;
    log.record(rec);
    log.commit();
    say("wrote " + a.output_dir + "/eval_results.txt");
  }

  if (a.do_predict) {
    auto& cache = cache_of("test");
    const auto t0 = std::chrono::steady_clock::now();
    const auto p = train::predict(model, cache, a.predict_batch_size, L);
    const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    require_finite(p, cache, a.data_dir + "/test.tsv", s);
    {
      // Both files are complete before either replaces an earlier run's: they stay a pair.
      io::AtomicFile results(a.output_dir + "/test_results.tsv"), labels(a.output_dir + "/test_output_labels.txt");
      for (std::size_t r = 0; r < cache.rows(); ++r) {
        for (index_t k = 0; k < L; ++k)
          results << (k ? "\t" : "") << fmt("%.6g", p.probabilities[r * static_cast<std::size_t>(L) + static_cast<std::size_t>(k)]);
        results << '\n';
        labels << s.labels->name(p.predicted[r]) << '\n';
      }
      results.flush();
      labels.flush();
      results.commit();
      labels.commit();
    }
    std::vector<double> ms(p.batch_ms.begin() + std::min<std::ptrdiff_t>(2, std::ssize(p.batch_ms)), p.batch_ms.end());
    say("predicted " + std::to_string(cache.rows()) + " rows in " + fmt("%.2f s", total_s) + " -> " + a.output_dir +
        "/test_results.tsv, test_output_labels.txt");
    if (!ms.empty()) {
      double sum = 0;
      for (double x : ms) sum += x;
      say("  latency per batch of " + std::to_string(a.predict_batch_size) + " (ms, without the first 2 batches): 50% " +
          fmt("%.2f", train::percentile(ms, 50)) + ", 90% " + fmt("%.2f", train::percentile(ms, 90)) + ", 95% " +
          fmt("%.2f", train::percentile(ms, 95)) + ", 99% " + fmt("%.2f", train::percentile(ms, 99)) + ", 100% " +
          fmt("%.2f", train::percentile(ms, 100)) + "; " +
          fmt("%.1f sentences/s", static_cast<double>(ms.size() * static_cast<std::size_t>(a.predict_batch_size)) / (sum / 1000)));
    }
  }
  log.commit();
  io::check_stream_written(stdout, "stdout");
  return 0;
}

}  // namespace span_classifier

// run<F, P> is explicitly instantiated for each compiled family, every policy, in a
// translation unit of its own generated from instantiate.cpp.in by examples/CMakeLists.txt.

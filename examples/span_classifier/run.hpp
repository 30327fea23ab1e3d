#pragma once
// The work of ner_span_classifier for one BERT family F, precision policy P and device D.
// On a CUDA device the model is built, initialised and loaded on the host, copied to the
// GPU, trained and run there; it comes back to the host only to be saved.

#include <omp.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <nlohmann/json.hpp>

#include <ctdl/data/batcher.hpp>
#include <ctdl/io/atomic_file.hpp>
#include <ctdl/io/bert_checkpoint.hpp>
#include <ctdl/io/bert_tf_checkpoint.hpp>
#include <ctdl/io/npy.hpp>
#include <ctdl/io/parameters.hpp>
#include <ctdl/io/safetensors.hpp>
#include <ctdl/io/safetensors_writer.hpp>
#include <ctdl/metrics/classification.hpp>
#include <ctdl/optim/adamw.hpp>
#include <ctdl/optim/schedule.hpp>
#include <ctdl/train/classifier.hpp>
#include <ctdl/train/loops.hpp>
#include <ctdl/train/run_log.hpp>

#include "span_classifier.hpp"

namespace span_classifier {

namespace fs = std::filesystem;
using namespace ctdl;

inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

/// What a row of a split's cache is, for the log and the skipped-rows list.
struct CacheKind {
  std::string row = "rows", rows_of_data = "rows", id_column = "ids";
};

/// The feature cache <output_dir>/<split>.features of <data_dir>/<split>.tsv, made by
/// `prepare(path, progress, on_skip)` if needed (logging what happened). With
/// --skip_bad_rows, <output_dir>/<split>_skipped_rows.tsv lists every skipped row (line,
/// reason, id columns), so that the outputs, one line per good row, can be lined up with
/// the input; it is written whole (empty but for its header when nothing was skipped).
/// `lead`: this process writes outputs (rank 0; the others read the cache it made).
template <class Prepare>
std::unique_ptr<data::FeatureCache> prepared_cache(const Setup& s, const std::string& split, bool lead,
                                                   const CacheKind& kind, Prepare&& prepare) {
  const auto& a = s.args;
  const std::string tsv = a.data_dir + "/" + split + ".tsv";
  const std::string cache = a.output_dir + "/" + split + ".features";
  const std::string skipped_path = a.output_dir + "/" + split + "_skipped_rows.tsv";
  std::optional<io::AtomicFile> skipped_file;
  if (a.skip_bad_rows && lead) {
    skipped_file.emplace(skipped_path);
    *skipped_file << "line\treason\t" << kind.id_column << "\n";
  }
  const data::SkipSink on_skip = [&](const data::SkippedRow& r) {
    if (skipped_file) *skipped_file << std::to_string(r.line) << '\t' << r.reason << '\t' << r.ids << '\n';
  };
  const bool terminal = lead && ::isatty(STDERR_FILENO);
  const data::PrepareProgress progress = [&](std::size_t rows, std::size_t pos, std::size_t total) {
    if (terminal)
      std::fprintf(stderr, "\r\033[Kpreparing %s: %zu %s, %.0f%%", split.c_str(), rows, kind.row.c_str(),
                   100.0 * static_cast<double>(pos) / static_cast<double>(std::max<std::size_t>(1, total)));
  };
  const data::PrepareReport report = prepare(tsv, cache, progress, on_skip);
  if (skipped_file) {
    skipped_file->commit();
  } else if (lead) {
    std::error_code ec;  // a list from an earlier --skip_bad_rows run would describe other outputs
    fs::remove(skipped_path, ec);
  }
  if (terminal && report.rebuilt) std::fprintf(stderr, "\r\033[K");
  if (report.rebuilt)
    say("prepared " + split + ": " + std::to_string(report.rows) + " " + kind.row + " in " + fmt("%.1f s", report.seconds) +
        " (" + fmt("%.0f ", static_cast<double>(report.rows) / std::max(1e-9, report.seconds)) + kind.row + "/s, " +
        std::to_string(omp_get_max_threads()) + " threads) -> " + cache + " (" + report.reason + ")");
  else
    say("using the feature cache " + cache + ": " + std::to_string(report.rows) + " " + kind.row);
  if (report.skipped) {
    say("skipped " + std::to_string(report.skipped) + " bad " + kind.rows_of_data + " of " + tsv +
        " (--skip_bad_rows; all listed in " + skipped_path + "); the first:");
    for (const auto& m : report.skipped_messages) say("  " + m);
  }
  auto fc = std::make_unique<data::FeatureCache>(cache);
  if (fc->rows() == 0) throw Error(tsv + ": no " + kind.rows_of_data);
  return fc;
}

/// PredictOptions::progress of an evaluation or prediction pass, `what` (say,
/// "predicting test.tsv"): on rank 0 a bar on a terminal, else a line every 30 s
/// (train::InferenceProgressLog); nothing on the other ranks. `global_batch`: the rows of
/// a batch of all the ranks, counted in `unit`s.
inline std::function<void(std::size_t, std::size_t)> inference_progress(bool lead, const std::string& what,
                                                                       std::int64_t global_batch,
                                                                       const std::string& unit = "sentences") {
  if (!lead) return {};
  auto log = std::make_shared<train::InferenceProgressLog>(what, global_batch, unit);
  return [log](std::size_t done, std::size_t batches) { (*log)(done, batches); };
}

/// The span feature cache of one split (the consensus task).
inline std::unique_ptr<data::FeatureCache> split_cache(const Setup& s, const std::string& split, bool lead) {
  const auto& a = s.args;
  const data::SpanFeatureBuilder builder(
      *s.tokenizer, {.max_seq_length = a.max_seq_length,
                     .replace_span = a.replace_span.empty() ? std::nullopt : std::optional(a.replace_span)});
  return prepared_cache(s, split, lead, {}, [&](const std::string& tsv, const std::string& cache, const auto& progress,
                                                 const auto& on_skip) {
    return data::prepare_span_cache(tsv, cache, *s.labels, builder, *s.tokenizer, a.skip_bad_rows, progress, on_skip);
  });
}

/// The latency line of a prediction: percentiles of the batches after the first 2, and
/// the throughput of those (`unit`: what a row is).
inline void say_latency(const std::vector<double>& batch_ms, const std::vector<index_t>& batch_rows, index_t batch_size,
                        const std::string& unit) {
  const std::ptrdiff_t skipped = std::min<std::ptrdiff_t>(2, std::ssize(batch_ms));
  std::vector<double> ms(batch_ms.begin() + skipped, batch_ms.end());
  if (ms.empty()) return;
  // The rows of the timed batches (the last batch may be short).
  const auto timed_rows = std::accumulate(batch_rows.begin() + skipped, batch_rows.end(), index_t{0});
  double sum = 0;
  for (double x : ms) sum += x;
  say("  latency per batch of " + std::to_string(batch_size) + " (ms, without the first 2 batches): 50% " +
      fmt("%.2f", train::percentile(ms, 50)) + ", 90% " + fmt("%.2f", train::percentile(ms, 90)) + ", 95% " +
      fmt("%.2f", train::percentile(ms, 95)) + ", 99% " + fmt("%.2f", train::percentile(ms, 99)) + ", 100% " +
      fmt("%.2f", train::percentile(ms, 100)) + "; " +
      fmt("%.1f ", static_cast<double>(timed_rows) / (sum / 1000)) + unit + "/s");
}

inline void dump_features(const data::FeatureCache& cache, const std::string& path) {
  io::AtomicFile out(path);
  const index_t M = cache.max_seq_length();
  for (std::size_t r = 0; r < cache.rows(); ++r) {
    const std::int32_t* ids = cache.input_ids(r);
    nlohmann::json j;
    std::vector<std::int32_t> v(ids, ids + M), mask(static_cast<std::size_t>(M)), seg(static_cast<std::size_t>(M), 0);
    for (index_t k = 0; k < M; ++k) mask[static_cast<std::size_t>(k)] = attention_mask(ids[k], cache.header().pad_id);
    j["input_ids"] = v;
    j["input_mask"] = mask;
    j["segment_ids"] = seg;
    j["label_id"] = cache.label_id(r);
    out << j.dump() << '\n';
  }
  out.commit();
  say("wrote " + path);
}

/// The NER task's --ner_scheme (data/token_scheme.hpp); first_piece for the consensus task.
inline data::TokenScheme token_scheme(const Args& a) {
  return is_ner(a) && a.ner_scheme == "tensorflow" ? data::TokenScheme::tensorflow : data::TokenScheme::first_piece;
}

/// Loads the encoder (and the classifier, when the checkpoint has one) from safetensors or
/// from a TensorFlow checkpoint (Google's names seen as Hugging Face's), every tensor used
/// or logged as skipped (the policy is io/bert_checkpoint.hpp's).
template <class Model>
void load_checkpoint(Model& model, const Setup& s) {
  // Labels found in train.tsv are named by it (Setup::labels_origin; their file is pending).
  const std::string labels_file = s.labels_origin.empty() ? s.labels->source() : s.labels_origin;
  const auto scheme = token_scheme(s.args);
  const io::BertClassifierLoadOptions options{.labels = data::token_class_names(scheme, s.labels->names()),
                                              .labels_file = labels_file,
                                              .listed_labels = scheme == data::TokenScheme::tensorflow
                                                                   ? s.labels->names()
                                                                   : std::vector<std::string>{},
                                              .config_file = s.args.bert_config_file,
                                              .phantom_class = s.args.phantom_class, .log = say};
  // A head of the other NER scheme's size says which scheme made it (the loader's own error
  // names only the counts).
  const auto require_scheme = [&](const auto& source) {
    if (!is_ner(s.args) || !source.contains("classifier.weight")) return;
    const auto rows = source.at("classifier.weight").shape.at(0);
    const auto L = static_cast<std::int64_t>(s.labels->size());
    const bool tensorflow = scheme == data::TokenScheme::tensorflow;
    if (tensorflow ? rows == L : rows == L + data::kTensorflowExtraClasses)
      throw Error(s.checkpoint_file + ": the classifier has " + std::to_string(rows) + " rows for the " + std::to_string(L) +
                  " labels of " + labels_file + ": a token classifier of " +
                  (tensorflow ? "--ner_scheme=first_piece (a row per label)"
                              : "--ner_scheme=tensorflow (padding, the labels, X, [CLS], [SEP])") +
                  "; this run has --ner_scheme=" + s.args.ner_scheme + ": give --ner_scheme=" +
                  (tensorflow ? "first_piece" : "tensorflow"));
  };
  if (!s.checkpoint_is_tf) {
    const io::SafetensorsFile file(s.checkpoint_file);
    require_scheme(file);
    io::load_bert_classifier(model, file, options);
    return;
  }
  const io::BertTfCheckpoint file(s.checkpoint_file);
  for (const auto& skipped : file.skipped())  // optimizer state is expected; anything else is worth a line
    if (!skipped.reason.starts_with("optimizer state") && skipped.name != "global_step")
      say("note: " + s.checkpoint_file + ": skipped \"" + skipped.name + "\" (" + skipped.reason + ")");
  require_scheme(file);
  io::load_bert_classifier(model, file, options);
}

/// The bert_config.json that goes with a saved model: `file` is what save_model and the
/// checkpoints copy. It is the run's own, or, when the model ran with another GELU form than
/// that file means to a safetensors reader ("gelu" reads as erf; a TensorFlow checkpoint
/// runs tanh, as does --hidden_act=gelu_tanh), a copy that says "gelu_new" (tanh) or "gelu"
/// (erf), so that loading a saved directory or training checkpoint again runs what was
/// trained (docs/checkpoints.md). The copy is pending in --output_dir (rank 0, `write`)
/// until the model is saved: a run that stops early leaves an earlier model's
/// bert_config.json there as it was.
struct SavedConfig {
  std::string file;
  std::unique_ptr<io::PendingFile> pending;  // the rewritten copy while it is pending; nullptr: the run's own
};
inline SavedConfig saved_config(const Setup& s, bool write = true) {
  if (s.config.hidden_act == bert::BertConfig::from_file(s.args.bert_config_file).hidden_act) return {s.args.bert_config_file, {}};
  auto j = nlohmann::json::parse(std::ifstream(s.args.bert_config_file));
  j["hidden_act"] = s.config.hidden_act == bert::Activation::gelu_tanh ? "gelu_new" : "gelu";
  const std::string path = s.args.output_dir + "/bert_config.json";
  if (!write) return {path, {}};  // a rank that saves nothing
  auto pending = std::make_unique<io::PendingFile>(path, j.dump(2) + "\n");
  std::string file = pending->path();
  return {std::move(file), std::move(pending)};
}

/// The vocabulary's name in a saved directory: vocab.txt, or tokenizer.json for one.
inline std::string saved_vocab_name(const Setup& s) {
  return text::Vocab::is_tokenizer_json(s.args.vocab_file) ? "tokenizer.json" : "vocab.txt";
}

/// model.safetensors (Hugging Face names) with bert_config.json (saved_config), the
/// vocabulary and labels.txt beside it: a directory that is itself a valid --init_checkpoint.
template <class Model>
void save_model(Model& model, const Setup& s, const std::string& dir, std::int64_t step, const std::string& config_file) {
  fs::create_directories(dir);
  io::save_parameters(model, dir + "/model.safetensors",
                      {{"format", "pt"}, {"made_by", "ctdl ner_span_classifier"}, {"global_step", std::to_string(step)}});
  const auto copy = [&](const std::string& from, const std::string& to) {
    if (fs::absolute(from) != fs::absolute(dir + "/" + to)) io::copy_file_atomically(from, dir + "/" + to);
  };
  copy(config_file, "bert_config.json");
  copy(s.args.vocab_file, saved_vocab_name(s));
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

/// The training options of the flags, with what a resume must not change (named by flag)
/// and the files that make each checkpoint a valid --init_checkpoint.
inline train::FitOptions fit_options(const Setup& s, const data::FeatureCache& train_cache, const std::string& precision,
                                    const std::string& config_file) {
  const auto& a = s.args;
  const auto hex = [](std::uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return std::string(b);
  };
  const auto num = [](double v) { return train::setting_text(v); };
  const auto& h = train_cache.header();
  train::FitOptions o{.batch_size = a.train_batch_size,
                      .accumulation_steps = a.gradient_accumulation_steps,
                      .epochs = a.num_train_epochs,
                      .learning_rate = a.learning_rate,
                      .warmup_proportion = a.warmup_proportion,
                      .max_grad_norm = a.max_grad_norm,
                      .shuffle = a.shuffle,
                      // The tensorflow scheme's loss averages over every position of M (fit says so).
                      .pad_to_max_length = a.pad_to_max_length || token_scheme(a) == data::TokenScheme::tensorflow,
                      .group_by_length = a.group_by_length,
                      .token_scheme = token_scheme(a),
                      .word_labels = static_cast<index_t>(s.labels->size()),
                      .seed = static_cast<std::uint64_t>(a.seed),
                      .log_every = a.log_every,
                      .checkpoints = {.root = a.output_dir,
                                      .every_steps = a.save_checkpoints_steps,
                                      .keep = a.keep_checkpoint_max,
                                      .resume = a.resume,
                                      .extra_files = {{"bert_config.json", config_file},
                                                      {saved_vocab_name(s), a.vocab_file},
                                                      {"labels.txt", s.labels->source()}},
                                      // The global batch (per rank x ranks): a job resumes on any number of ranks
                                      // that keeps it.
                                      .settings = {{"--train_batch_size", std::to_string(a.train_batch_size * s.comm->size())},
                                                   {"--gradient_accumulation_steps", std::to_string(a.gradient_accumulation_steps)},
                                                   {"--num_train_epochs", num(a.num_train_epochs)},
                                                   {"--learning_rate", num(a.learning_rate)},
                                                   {"--warmup_proportion", num(a.warmup_proportion)},
                                                   {"--max_grad_norm", num(a.max_grad_norm)},
                                                   {"--shuffle", a.shuffle ? "true" : "false"},
                                                   {"--pad_to_max_length", a.pad_to_max_length ? "true" : "false"},
                                                   {"--group_by_length", a.group_by_length ? "true" : "false"},
                                                   {"--seed", std::to_string(a.seed)},
                                                   {"--max_seq_length", std::to_string(a.max_seq_length)},
                                                   {"--precision", precision},
                                                   {"--cased", a.cased ? "true" : "false"},
                                                   {"--replace_span", a.replace_span},
                                                   {"--tokenizer_rules", a.tokenizer_rules},
                                                   {"--hidden_act (as run)", s.config.hidden_act == bert::Activation::gelu_tanh ? "gelu_tanh" : "gelu_erf"},
                                                   {"train.tsv (XXH64 of its bytes)", hex(h.source_xxh64)},
                                                   {"--vocab_file (XXH64)", hex(h.vocab_fingerprint)},
                                                   {"labels.txt (XXH64)", hex(h.labels_fingerprint)}}}};
  // Recorded only when not the default, so that earlier checkpoints still resume.
  if (o.token_scheme == data::TokenScheme::tensorflow) o.checkpoints.settings["--ner_scheme"] = "tensorflow";
  return o;
}

/// The model of the run: made on the host, initialised (seed), loaded from the checkpoint
/// when there is one, then copied to the device (Model's) if that is not the host.
template <class HostModel, class Model>
Model build_model(const Setup& s, index_t num_labels) {
  auto host = HostModel::make(s.config, num_labels);
  bert::init_weights(host, s.config.initializer_range, static_cast<std::uint64_t>(s.args.seed));
  if (!s.checkpoint_file.empty()) {
    load_checkpoint(host, s);
    say("loaded " + s.checkpoint_file);
  } else {
    say("no --init_checkpoint: the model starts from random initialisation (seed " + std::to_string(s.args.seed) + ")");
  }
  if constexpr (std::is_same_v<Model, HostModel>) return host;
  else return nn::to_device<Model>(host);
}

/// <output_dir>/eval_results.txt: the metrics as `key = value` lines (global_step among
/// them), a blank line, then `tables`; the same printed on stdout under `what`; and an eval
/// record in metrics.jsonl. Rank 0 only.
inline void write_eval_results(const Setup& s, train::RunLog& log, std::map<std::string, double> metrics,
                               std::int64_t global_step, const std::string& tables, const std::string& what) {
  metrics["global_step"] = static_cast<double>(global_step);
  std::string text;
  for (const auto& [k, v] : metrics)
    text += k + " = " + (k == "global_step" ? std::to_string(global_step) : fmt("%.6g", v)) + "\n";
  text += "\n" + tables;
  const std::string path = s.args.output_dir + "/eval_results.txt";
  io::write_file_atomically(path, text);
  std::printf("***** eval results (%s) *****\n%s", what.c_str(), text.c_str());
  io::check_stream_written(stdout, "stdout");
  nlohmann::json rec = {{"type", "eval"}, {"step", global_step}};
  for (const auto& [k, v] : metrics) rec[k] = v;
  log.record(rec);
  log.commit();
  say("wrote " + path);
}

/// Fine-tunes `model` on `cache` (the train split) as the flags say, then saves it (rank 0)
/// into --output_dir; returns the global step it ended at. `log`: rank 0's run log, else
/// nullptr; `rows` and `unit`: what a row of the cache is, for the log (the consensus
/// task's rows are sentences; the NER task's are features, a sentence or a piece of one).
template <class P, class HostModel, class Model>
std::int64_t train_and_save(Model& model, const Setup& s, const data::FeatureCache& cache, train::RunLog* log,
                            const std::string& rows = "rows", const std::string& unit = "sentences") {
  const auto& a = s.args;
  dist::AnyComm& comm = *s.comm;
  const bool lead = comm.rank() == 0;
  constexpr bool on_gpu = ops::on_cuda<nn::device_of_t<Model>>;
  std::int64_t global_step = 0;
  const SavedConfig saved = saved_config(s, lead);
  const std::string& config_file = saved.file;
  const train::FitOptions options = fit_options(s, cache, P::name, config_file);
  train::FitOptions global = options;  // a step of all the ranks
  global.batch_size *= comm.size();
  say(std::string(a.resume ? "resuming training" : "training") + ": " + std::to_string(cache.rows()) + " " + rows + ", " +
      std::to_string(train::training_steps(cache.rows(), global)) + " steps of " +
      std::to_string(global.batch_size * a.gradient_accumulation_steps) + " (" + fmt("%g epochs", a.num_train_epochs) +
      "), peak learning rate " + fmt("%g", a.learning_rate) + ", warmup proportion " + fmt("%g", a.warmup_proportion) +
      (a.save_checkpoints_steps > 0 ? ", a checkpoint every " + std::to_string(a.save_checkpoints_steps) + " steps and at the end"
                                    : ", a checkpoint at the end"));
  // CTDL_TEST_KILL_AFTER_CHECKPOINT=N: SIGKILL right after the N-th checkpoint this
  // process completes (tests/examples/resume_test.sh: a real crash at a known point).
  const char* kill_after = std::getenv("CTDL_TEST_KILL_AFTER_CHECKPOINT");
  std::int64_t checkpoints_written = 0;
  const auto r = train::fit<P>(
      model, cache, options,
      {.say = {},  // fit's lines go to stderr, with a progress bar on a terminal
       .record = [&](const nlohmann::json& rec) { log->record(rec); },  // rank 0 only, as on_checkpoint
       .evaluate = {},
       .on_resume = [&](std::int64_t step) { if (log) log->drop_after(step); },
       .on_checkpoint =
           [&](const std::string& dir, std::int64_t step) {
             log->commit();  // metrics.jsonl up to the checkpoint: a resumed run continues it
             say("checkpoint " + dir + " (step " + std::to_string(step) + ")");
             if (kill_after && ++checkpoints_written == std::atoll(kill_after)) std::raise(SIGKILL);
           }},
      comm, s.device_comm ? *s.device_comm : comm,
      {.bucket_bytes = a.bucket_size_mb << 20, .shard_optimizer = a.shard_optimizer});
  global_step = r.steps;
  say("training done: " + std::to_string(r.steps) + " steps" +
      (r.resumed_from ? " (resumed at step " + std::to_string(r.resumed_from) + ")" : std::string()) + ", " +
      fmt("%.0f ", r.sentences) + unit + " in " + train::format_duration(r.seconds) +
      (r.skipped_steps ? ", " + std::to_string(r.skipped_steps) + " steps skipped (loss scale)" : ""));
  if (r.seconds > 0) say("  throughput with overhead: " + fmt("%.1f ", r.sentences / r.seconds) + unit + "/s");
  if (r.steady_sentences_per_s > 0)
    say("  throughput without overhead (steps 3 on, no data preparation or saving): " +
        fmt("%.1f ", r.steady_sentences_per_s) + unit + "/s");
  if (lead) {
    if constexpr (on_gpu) {
      auto host = nn::to_device<HostModel>(model);
      save_model(host, s, a.output_dir, global_step, config_file);
    } else {
      save_model(model, s, a.output_dir, global_step, config_file);
    }
    log->commit();
  }
  say("saved " + a.output_dir + "/model.safetensors (+ bert_config.json, vocab.txt, labels.txt), metrics.jsonl");
  return global_step;
}

template <class F, class P, class D>
int run(const Setup& s) {
  const auto& a = s.args;
  dist::AnyComm& comm = *s.comm;
  const bool lead = comm.rank() == 0;  // writes every output; the other ranks compute their share
  constexpr bool on_gpu = ops::on_cuda<D>;
  using HostModel = bert::BertForSequenceClassification<float, F, P>;
  using Model = bert::BertForSequenceClassification<float, F, P, D>;
  const auto L = static_cast<index_t>(s.labels->size());
  Model model = build_model<HostModel, Model>(s, L);
  say("model: BERT " + bert::shape_name(s.config) + (F::is_dynamic ? " (runtime-shaped family)" : "") + " x " +
      std::to_string(s.config.num_hidden_layers) + " layers, " +
      std::to_string(nn::count_parameters(model)) + " parameters, precision " + P::name + ", " +
      (on_gpu ? "on " + a.device + " (" + s.device_name + ")" : std::to_string(omp_get_max_threads()) + " threads"));

  std::map<std::string, std::unique_ptr<data::FeatureCache>> caches;
  const auto cache_of = [&](const std::string& split) -> data::FeatureCache& {
    auto& c = caches[split];
    if (!c) c = split_cache(s, split, lead);
    return *c;
  };
  // Every input is read (and prepared) before any output is touched: a bad row in dev.tsv
  // stops the run before training replaces the model, metrics.jsonl or the results of an
  // earlier run in the same --output_dir. (The feature caches are outputs too, but each is
  // replaced only whole, by a cache of the same inputs.)
  const bool have_train = fs::exists(a.data_dir + "/train.tsv");
  const auto prepare = [&] {
    // (A std::array, not a braced list: nvcc 13.0's device front end, cicc, crashes on a
    // range-for over {"train", ...} converting to std::string in the CUDA instantiation.)
    for (const std::string& split : std::array<std::string, 3>{"train", "dev", "test"})
      if ((a.do_prepare && fs::exists(a.data_dir + "/" + split + ".tsv")) || (split == "train" && a.do_train) ||
          (split == "train" && a.do_eval && have_train) || (split == "dev" && a.do_eval) ||
          (split == "test" && a.do_predict))
        cache_of(split);
  };
  // Distributed: rank 0 prepares the caches; the others then find them made (in a shared
  // --output_dir) or make their own (a node's own directory).
  if (lead) prepare();
  if (comm.size() > 1) comm.barrier();
  if (!lead) prepare();
  if (lead && a.do_prepare && a.dump_features)
    for (const auto& [split, c] : caches) dump_features(*c, a.output_dir + "/" + split + "_features.jsonl");

  // A resumed run continues the log its checkpoints committed (rank 0's alone).
  std::optional<train::RunLog> log;
  if (lead) log.emplace(a.output_dir, /*append=*/!a.do_train || a.resume);
  std::int64_t global_step = 0;

  if (a.do_train) global_step = train_and_save<P, HostModel>(model, s, cache_of("train"), log ? &*log : nullptr);

  if (a.do_eval) {
    auto& cache = cache_of("dev");
    const auto t0 = std::chrono::steady_clock::now();
    const auto e = train::evaluate(
        model, cache, a.eval_batch_size, s.labels->names(),
        {.pad_to_max_length = a.pad_to_max_length,
         .progress = inference_progress(lead, "evaluating dev.tsv", a.eval_batch_size * comm.size())},
        comm);
    const double eval_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    require_finite(e.predictions, cache, a.data_dir + "/dev.tsv", s);  // every rank: they all have the whole result
    say("evaluated " + std::to_string(cache.rows()) + " rows in " + fmt("%.2f s", eval_s) + " (" +
        fmt("%.1f sentences/s", static_cast<double>(cache.rows()) / std::max(1e-9, eval_s)) + ", batches of " +
        std::to_string(a.eval_batch_size) + ", scoring included)");
    const auto& r = e.report;
    std::map<std::string, double> kv = e.metrics;
    if (have_train) {
      const auto majority = majority_label(cache_of("train"), s.labels->size());
      kv["majority_baseline"] = r.per_class[static_cast<std::size_t>(majority)].support / static_cast<double>(r.total);
    }
    if (lead)  // the other ranks computed their share; rank 0 writes
      write_eval_results(s, *log, kv, global_step, r.table() + "\n" + r.confusion_table(),
                         std::to_string(cache.rows()) + " rows of " + a.data_dir + "/dev.tsv");
  }

  if (a.do_predict) {
    auto& cache = cache_of("test");
    const auto t0 = std::chrono::steady_clock::now();
    const auto p = train::predict(model, cache, a.predict_batch_size, L,
                                  {.keep_logits = a.write_npy, .keep_pooled = a.write_npy,
                                   .pad_to_max_length = a.pad_to_max_length,
                                   .progress = inference_progress(lead, "predicting test.tsv",
                                                                  a.predict_batch_size * comm.size())},
                                  comm);
    const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    require_finite(p, cache, a.data_dir + "/test.tsv", s);
    if (lead) {
      // Every file is complete before any replaces an earlier run's: they stay a set.
      io::AtomicFile results(a.output_dir + "/test_results.tsv"), labels(a.output_dir + "/test_output_labels.txt");
      std::optional<io::AtomicFile> logits_npy, pooled_npy;
      if (a.write_npy) {
        const index_t rows = static_cast<index_t>(cache.rows());
        logits_npy.emplace(a.output_dir + "/test_logits.npy");
        logits_npy->write(io::npy_bytes(TensorView<const float, Shape<dyn, dyn>>(p.logits.data(), {rows, L})));
        pooled_npy.emplace(a.output_dir + "/test_pooled.npy");
        pooled_npy->write(io::npy_bytes(TensorView<const float, Shape<dyn, dyn>>(p.pooled.data(), {rows, p.hidden})));
        logits_npy->flush();
        pooled_npy->flush();
      }
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
      if (a.write_npy) {
        logits_npy->commit();
        pooled_npy->commit();
      }
    }
    say("predicted " + std::to_string(cache.rows()) + " rows in " + fmt("%.2f s", total_s) + " -> " + a.output_dir +
        "/test_results.tsv, test_output_labels.txt" + (a.write_npy ? ", test_logits.npy, test_pooled.npy" : ""));
    say_latency(p.batch_ms, p.batch_rows, a.predict_batch_size, "sentences");
  }
  if (log) log->commit();
  io::check_stream_written(stdout, "stdout");
  return 0;
}

}  // namespace span_classifier

// run<F, P> is explicitly instantiated for each compiled family, every policy, in a
// translation unit of its own generated from instantiate.cpp.in by examples/CMakeLists.txt;
// run<F, P, Cuda> likewise from instantiate_cuda.cu.in (compiled by nvcc) in a CUDA build.

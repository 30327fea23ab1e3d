#pragma once
// ner_span_classifier --task_name=ner: the NER recipe of BioBERT and NVIDIA (run_ner.py):
// token classification of CoNLL files (BC5CDR's train.tsv, devel.tsv, test.tsv: a word
// and its B/I/O label a line, a blank line between sentences) with
// bert::BertForTokenClassification on the runtime-shaped family (any BERT shape), on the
// CPU or a CUDA device; scored by entities as conlleval.pl scores them. Training,
// checkpoints, resume, --distributed and the device are the consensus task's (run.hpp);
// only the data, the model's head and the outputs differ.

#include "run.hpp"

#include <ctdl/data/conll.hpp>
#include <ctdl/data/token_features.hpp>
#include <ctdl/train/tokens.hpp>

namespace span_classifier {

/// The token feature cache of <data_dir>/<split>.tsv (a CoNLL file), prepared if needed.
/// With --skip_bad_rows, <output_dir>/<split>_skipped_rows.tsv lists each skipped sentence
/// (its first line, the reason, its index).
inline std::unique_ptr<data::FeatureCache> token_cache(const Setup& s, const std::string& split, bool lead) {
  // The tensorflow scheme cuts sentences of more than 30 words after an "O", as its recipe does.
  const bool tensorflow = token_scheme(s.args) == data::TokenScheme::tensorflow;
  const data::TokenFeatureBuilder builder(*s.tokenizer, {.max_seq_length = s.args.max_seq_length,
                                                         .max_words = tensorflow ? std::size_t{30} : 0,
                                                         .cut_label = tensorflow ? *s.labels->find("O") : -1});
  return prepared_cache(s, split, lead, {.row = "features", .rows_of_data = "sentences", .id_column = "sentence"},
                        [&](const std::string& conll, const std::string& cache, const auto& progress, const auto& on_skip) {
                          return data::prepare_token_cache(conll, cache, *s.labels, builder, *s.tokenizer,
                                                           s.args.skip_bad_rows, progress, on_skip);
                        });
}

/// Non-finite logits would come out as the first label for every word: an error naming
/// the sentence of the first such feature.
inline void require_finite(const train::TokenPredictions& p, const data::FeatureCache& cache, const std::string& conll,
                           const Setup& s) {
  if (p.first_non_finite_row < 0) return;
  const auto row = static_cast<std::size_t>(p.first_non_finite_row);
  throw Error(conll + ": sentence " + std::to_string(cache.source_index(row)) +
              " (counting from 0): the model's logits are not finite (NaN or infinite; " +
              std::to_string(p.non_finite_rows) + " of " + std::to_string(cache.rows()) +
              " features): the model is broken (" +
              (s.checkpoint_file.empty() ? std::string("random initialisation") : "weights of " + s.checkpoint_file) +
              ", layer_norm_eps and sizes of " + s.args.bert_config_file + "); its results were not written");
}

/// <output_dir>/NER_result_conll.txt: each word of the test file with its gold and predicted
/// labels ("word gold predicted", a blank line after each sentence): conlleval.pl's input,
/// as BioBERT's ner_detokenize.py writes it. The words are read from the file again.
inline void write_conll_predictions(const Setup& s, const train::TokenPredictions& p, const std::string& conll,
                                    const std::string& path) {
  data::ConllReader reader(conll, s.labels, {.skip_bad_rows = s.args.skip_bad_rows});
  io::AtomicFile out(path);
  data::Sentence sentence;
  std::size_t k = 0;
  const auto changed = [&] {
    return Error(conll + " changed while it was predicted (sentence " + std::to_string(sentence.index) +
                 " is not the one its features came from): run again");
  };
  while (reader.next(sentence)) {
    if (k >= p.sentences() || p.sentence_index[k] != sentence.index ||
        p.sentence_begin[k + 1] - p.sentence_begin[k] != sentence.words.size())
      throw changed();
    for (std::size_t w = 0; w < sentence.words.size(); ++w) {
      const std::size_t at = p.sentence_begin[k] + w;
      out << sentence.words[w] << ' ' << s.labels->name(p.truth[at]) << ' ' << s.labels->name(p.predicted[at]) << '\n';
    }
    out << '\n';
    ++k;
  }
  if (k != p.sentences()) throw changed();
  out.commit();
}

template <class P, class D>
int run_ner(const Setup& s) {
  using F = bert::Dynamic;  // any shape; as fast as a static family at BERT-base (docs/benchmarks.md)
  using HostModel = bert::BertForTokenClassification<float, F, P>;
  using Model = bert::BertForTokenClassification<float, F, P, D>;
  constexpr bool on_gpu = ops::on_cuda<D>;
  const auto& a = s.args;
  dist::AnyComm& comm = *s.comm;
  const bool lead = comm.rank() == 0;
  const data::TokenScheme scheme = token_scheme(a);
  const auto classes = data::token_class_names(scheme, s.labels->names());
  const auto C = static_cast<index_t>(classes.size());
  std::string names;
  for (const auto& n : classes) names += (names.empty() ? "" : ", ") + n;
  Model model = build_model<HostModel, Model>(s, C);
  say("model: BERT " + bert::shape_name(s.config) + " (runtime-shaped family) x " +
      std::to_string(s.config.num_hidden_layers) + " layers, token classification over " + std::to_string(C) +
      (scheme == data::TokenScheme::tensorflow ? " classes (" : " labels (") + names + "), " +
      std::to_string(nn::count_parameters(model)) + " parameters, precision " + P::name +
      ", " + (on_gpu ? "on " + a.device + " (" + s.device_name + ")" : std::to_string(omp_get_max_threads()) + " threads"));

  std::map<std::string, std::unique_ptr<data::FeatureCache>> caches;
  const auto cache_of = [&](const std::string& split) -> data::FeatureCache& {
    auto& c = caches[split];
    if (!c) c = token_cache(s, split, lead);
    return *c;
  };
  // Every input is read (and prepared) before any output is touched (as run() does).
  const auto prepare = [&] {
    for (const std::string& split : std::array<std::string, 3>{"train", "devel", "test"})
      if ((a.do_prepare && fs::exists(a.data_dir + "/" + split + ".tsv")) || (split == "train" && a.do_train) ||
          (split == "devel" && a.do_eval) || (split == "test" && a.do_predict))
        cache_of(split);
  };
  if (lead) prepare();
  if (comm.size() > 1) comm.barrier();
  if (!lead) prepare();

  // The tensorflow scheme's filler for words its reading leaves without a label.
  const std::int32_t outside = scheme == data::TokenScheme::tensorflow ? *s.labels->find("O") : -1;
  std::optional<train::RunLog> log;
  if (lead) log.emplace(a.output_dir, /*append=*/!a.do_train || a.resume);
  std::int64_t global_step = 0;
  if (a.do_train) global_step = train_and_save<P, HostModel>(model, s, cache_of("train"), log ? &*log : nullptr,
                                                    "features (sentences, long ones cut in pieces)", "features");

  if (a.do_eval) {
    auto& cache = cache_of("devel");
    const std::string conll = a.data_dir + "/devel.tsv";
    const auto t0 = std::chrono::steady_clock::now();
    const auto e = train::evaluate_tokens(
        model, cache, a.eval_batch_size, s.labels->names(),
        {.pad_to_max_length = a.pad_to_max_length,
         .progress = inference_progress(lead, "evaluating devel.tsv", a.eval_batch_size * comm.size(), "features"),
         .token_scheme = scheme,
         .outside_label = outside},
        comm);
    const double eval_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    require_finite(e.predictions, cache, conll, s);
    say("evaluated " + std::to_string(e.predictions.sentences()) + " sentences (" +
        std::to_string(e.predictions.words()) + " words, " + std::to_string(cache.rows()) + " features) in " +
        fmt("%.2f s", eval_s) + " (" +
        fmt("%.1f sentences/s", static_cast<double>(e.predictions.sentences()) / std::max(1e-9, eval_s)) +
        ", batches of " + std::to_string(a.eval_batch_size) + " features, scoring included)");
    if (lead)
      write_eval_results(s, *log, e.metrics, global_step,
                         "entities (conlleval):\n" + e.entities.report() + "\nwords:\n" + e.words.table(),
                         std::to_string(e.predictions.sentences()) + " sentences of " + conll);
  }

  if (a.do_predict) {
    auto& cache = cache_of("test");
    const std::string conll = a.data_dir + "/test.tsv";
    const auto t0 = std::chrono::steady_clock::now();
    const auto e = train::evaluate_tokens(
        model, cache, a.predict_batch_size, s.labels->names(),
        {.pad_to_max_length = a.pad_to_max_length,
         .progress = inference_progress(lead, "predicting test.tsv", a.predict_batch_size * comm.size(), "features"),
         .token_scheme = scheme,
         .outside_label = outside},
        comm);
    const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    require_finite(e.predictions, cache, conll, s);
    if (lead) {
      // Both complete before either replaces an earlier run's.
      io::AtomicFile results(a.output_dir + "/test_results.txt");
      results << e.entities.report();
      results.flush();
      write_conll_predictions(s, e.predictions, conll, a.output_dir + "/NER_result_conll.txt");
      results.commit();
    }
    say("predicted " + std::to_string(e.predictions.sentences()) + " sentences (" +
        std::to_string(e.predictions.words()) + " words) in " + fmt("%.2f s", total_s) + " -> " + a.output_dir +
        "/NER_result_conll.txt (word, gold, predicted), test_results.txt (conlleval's report against the file's labels)");
    say_latency(e.predictions.batch_ms, e.predictions.batch_rows, a.predict_batch_size, "features");
  }
  if (log) log->commit();
  io::check_stream_written(stdout, "stdout");
  return 0;
}

}  // namespace span_classifier

// run_ner<P, Cpu> is explicitly instantiated for every policy in run_ner.cpp, and
// run_ner<P, Cuda> in run_ner_cuda.cu (nvcc; a CUDA build), the runtime-shaped family only.

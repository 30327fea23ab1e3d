#pragma once
// Prediction and evaluation of a token classifier (NER: bert::BertForTokenClassification)
// over a token feature cache (data/token_features.hpp), word by word. Training needs
// nothing of its own: train::fit takes a token cache as it takes a span cache (the
// batcher gives B x S labels, -1 where nothing is scored, and cross_entropy skips those).
//
//   predict_tokens    forward without dropout over the cache (batched as predict does,
//                     the results in file order); each word's prediction is the argmax
//                     at its first piece (the one position of the word that carries a
//                     label), or with PredictOptions::token_scheme tensorflow, as the
//                     TensorFlow run_ner.py reads every position (data::
//                     read_tensorflow_labels); gathered sentence by sentence across the
//                     features a long sentence was cut into
//   evaluate_tokens   predict_tokens, then conlleval's entity scores over the words
//                     (metrics/conlleval.hpp: what BioBERT reports) and a per-label
//                     report of the words (metrics/classification.hpp)
//
// Every word of the cache is a word of its CoNLL file, in order, so
// TokenPredictions::predicted lines up with the words that data::ConllReader reads
// (sentence_index says which sentences, when --skip_bad_rows left some out).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/data/batcher.hpp"
#include "ctdl/data/feature_cache.hpp"
#include "ctdl/data/token_scheme.hpp"
#include "ctdl/dist/communicator.hpp"
#include "ctdl/metrics/classification.hpp"
#include "ctdl/metrics/conlleval.hpp"
#include "ctdl/nn/module.hpp"
#include "ctdl/train/classifier.hpp"

namespace ctdl::train {

struct TokenPredictions {
  index_t num_labels = 0;
  /// Sentence k's words are [sentence_begin[k], sentence_begin[k + 1]) of the per-word
  /// vectors (sentences() + 1 entries).
  std::vector<std::size_t> sentence_begin = {0};
  std::vector<std::uint32_t> sentence_index;  ///< each sentence's index in its file
  std::vector<std::int32_t> predicted;        ///< per word, in file order: argmax at its first piece
  std::vector<std::int32_t> truth;            ///< per word: the cache's label
  std::vector<float> probability;             ///< per word: the predicted label's probability
  double mean_loss = 0;                       ///< cross-entropy averaged over every word (the training loss's terms)
  std::vector<double> batch_ms;               ///< wall time of each batch: its forward, its logits on the host and in place
  std::vector<index_t> batch_rows;            ///< the features of each batch
  std::ptrdiff_t first_non_finite_row = -1;   ///< the first feature (cache row) with a NaN or infinite logit at a scored position, or -1
  std::size_t non_finite_rows = 0;            ///< features with one (the other positions' logits are not read)

  std::size_t sentences() const { return sentence_index.size(); }
  std::size_t words() const { return predicted.size(); }
};

/// Runs the token classifier over every feature of `cache` (token features) without
/// dropout; the results are in file order (the batches as PredictOptions says).
/// `options`: how the batches are made (PredictOptions::pad_to_max_length,
/// group_by_length); keep_logits and keep_pooled are predict()'s and an error here.
template <class Model>
TokenPredictions predict_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                index_t num_labels, const PredictOptions& options = {});
/// The same, the features split across the ranks of `comm` as predict() splits rows: each
/// word's logits come from the one rank that ran its feature, and every rank gets one
/// process's TokenPredictions (batch_ms and batch_rows are its own batches').
template <class Model, dist::Communicator C>
TokenPredictions predict_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                index_t num_labels, const PredictOptions& options, C& comm);

struct TokenEvaluation {
  TokenPredictions predictions;
  metrics::ConllScores entities;         ///< conlleval over the words (label names as tags)
  metrics::ClassificationReport words;   ///< each label's precision, recall, F1 over the words
  /// eval_loss; eval_accuracy (words); precision, recall, f1 (entities, as conlleval).
  std::map<std::string, double> metrics;
};

template <class Model>
TokenEvaluation evaluate_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                const std::vector<std::string>& label_names, const PredictOptions& options = {});
template <class Model, dist::Communicator C>
TokenEvaluation evaluate_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                const std::vector<std::string>& label_names, const PredictOptions& options, C& comm);

// ============================================================================

template <class Model>
TokenPredictions predict_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                index_t num_labels, const PredictOptions& options) {
  dist::LocalComm one;
  return predict_tokens(model, cache, batch_size, num_labels, options, one);
}

template <class Model, dist::Communicator C>
TokenPredictions predict_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                index_t num_labels, const PredictOptions& options, C& comm) {
  if (cache.kind() != data::FeatureKind::token)
    throw Error("predict_tokens: " + cache.path() + " holds span features, not token features");
  if (options.keep_logits || options.keep_pooled)
    throw Error("predict_tokens: keep_logits and keep_pooled are predict()'s options (a token classifier has neither)");
  TokenPredictions p;
  p.num_labels = num_labels;
  const std::size_t n = cache.rows();
  const auto M = static_cast<std::size_t>(cache.max_seq_length());
  const auto L = static_cast<std::size_t>(num_labels);
  // Where each feature's words go: its first word's place among all the words.
  std::vector<std::size_t> word_offset(n + 1, 0);
  for (std::size_t r = 0; r < n; ++r) {
    const std::int32_t* labels = cache.label_ids(r);
    word_offset[r + 1] = word_offset[r] + static_cast<std::size_t>(std::count_if(labels, labels + M, [](std::int32_t y) {
                           return y >= 0;
                         }));
  }
  const std::size_t words = word_offset[n];
  std::vector<float> logits(words * L, 0.f);  // the scored positions' logits only
  // The tensorflow scheme: each word's label and its probability as that recipe reads them
  // (data::read_tensorflow_labels), as floats to gather them across ranks with the logits.
  const bool tensorflow = options.token_scheme == data::TokenScheme::tensorflow;
  const index_t word_labels = tensorflow ? num_labels - data::kTensorflowExtraClasses : num_labels;
  if (tensorflow && (word_labels < 1 || options.outside_label < 0 || options.outside_label >= word_labels))
    throw Error("predict_tokens: the tensorflow scheme needs L + 4 classes (the model has " + std::to_string(num_labels) +
                ") and the outside label's id among the L (given " + std::to_string(options.outside_label) + ")");
  std::vector<float> read(tensorflow ? 2 * words : 0, 0.f);  // label, then probability, per word
  const data::TensorflowClasses classes{static_cast<std::int32_t>(word_labels)};  // a word's class: classes.word(label)
  // Checked before any batch, on every rank: one whose share is empty would otherwise wait
  // in the all-reduce below for ranks that threw.
  if constexpr (requires { model.classifier.weight.extent(0); })
    if (model.classifier.weight.extent(0) != num_labels)
      throw Error("predict_tokens: the model classifies " + std::to_string(model.classifier.weight.extent(0)) +
                  " labels, not " + std::to_string(num_labels));

  for_each_inference_batch(cache, batch_size, options, comm, p.batch_ms, p.batch_rows,
                           [&](nn::Context& ctx, const data::Batch& batch) {
    const auto out = model.forward(ctx, batch);  // [B * S, L]; S <= M, the batch's width
    const auto& host = on_host(out.value());
    const auto S = static_cast<std::size_t>(batch.seq_len());
    if (host.extent(0) != batch.size() * static_cast<index_t>(S) || host.extent(1) != num_labels)
      throw Error("predict_tokens: the model gave " + describe<Shape<dyn, dyn>>(host.extents()) + " logits for " +
                  std::to_string(batch.size()) + " features of " + std::to_string(S) + " tokens and " +
                  std::to_string(num_labels) + " labels");
    for (index_t i = 0; i < batch.size(); ++i) {
      const std::size_t row = batch.rows[static_cast<std::size_t>(i)];
      const std::int32_t* labels = cache.label_ids(row);
      std::size_t w = word_offset[row];
      for (std::size_t t = 0; t < S; ++t) {  // the positions past S are [PAD]s, never labelled (the batcher checks)
        if (labels[t] < 0) continue;
        const float* l = host.data() + (static_cast<std::size_t>(i) * S + t) * L;
        std::copy(l, l + L, logits.begin() + static_cast<std::ptrdiff_t>(w++ * L));
      }
      if (tensorflow)
        data::read_tensorflow_labels(host.data() + static_cast<std::size_t>(i) * S * L, S, word_labels,
                                       word_offset[row + 1] - word_offset[row], options.outside_label,
                                       read.data() + word_offset[row], read.data() + words + word_offset[row]);
    }
  });
  if (comm.size() > 1) {  // each word's logits from the rank that computed them, zeros elsewhere
    comm.all_reduce(logits.data(), static_cast<std::int64_t>(logits.size()), dist::ReduceOp::sum);
    if (tensorflow) comm.all_reduce(read.data(), static_cast<std::int64_t>(read.size()), dist::ReduceOp::sum);
  }

  // Sentences, in file order: a feature starts a sentence or continues the one before.
  p.predicted.resize(words);
  p.truth.resize(words);
  p.probability.resize(words);
  for (std::size_t r = 0; r < n; ++r) {
    const std::uint32_t sentence = cache.source_index(r);
    if (p.sentence_index.empty() || p.sentence_index.back() != sentence) {
      if (!p.sentence_index.empty()) p.sentence_begin.push_back(word_offset[r]);
      p.sentence_index.push_back(sentence);
    }
    const std::size_t before = word_offset[r] - p.sentence_begin.back();
    if (cache.first_word(r) != before)
      throw Error(cache.path() + ": feature " + std::to_string(r) + " starts at word " +
                  std::to_string(cache.first_word(r)) + " of sentence " + std::to_string(sentence) + ", but " +
                  std::to_string(before) + " of its words came before it (a corrupt or reordered cache)");
    const std::int32_t* labels = cache.label_ids(r);
    std::size_t w = word_offset[r];
    for (std::size_t t = 0; t < M; ++t)
      if (labels[t] >= 0) p.truth[w++] = labels[t];
  }
  if (!p.sentence_index.empty()) p.sentence_begin.push_back(words);  // sentences() + 1 entries, {0} for none

  double loss_sum = 0;
  for (std::size_t w = 0; w < words; ++w) {
    const float* l = logits.data() + w * L;
    if (!std::all_of(l, l + L, [](float x) { return std::isfinite(x); })) {
      const auto row = static_cast<std::size_t>(std::upper_bound(word_offset.begin(), word_offset.end(), w) -
                                                word_offset.begin() - 1);
      if (p.first_non_finite_row < 0) p.first_non_finite_row = static_cast<std::ptrdiff_t>(row);
    }
    double mx = l[0];
    for (std::size_t k = 1; k < L; ++k) mx = std::max(mx, static_cast<double>(l[k]));
    double z = 0;
    std::size_t best = 0;
    for (std::size_t k = 0; k < L; ++k) {
      z += std::exp(l[k] - mx);
      if (l[k] > l[best]) best = k;
    }
    if (tensorflow) {  // as read above
      p.predicted[w] = static_cast<std::int32_t>(read[w]);
      p.probability[w] = read[words + w];
    } else {
      p.predicted[w] = static_cast<std::int32_t>(best);
      p.probability[w] = static_cast<float>(std::exp(l[best] - mx) / z);
    }
    const auto y = static_cast<std::size_t>(p.truth[w]);
    if (y >= static_cast<std::size_t>(word_labels))
      throw Error(cache.path() + ": a label id " + std::to_string(y) + " of " + std::to_string(word_labels) + " labels");
    const std::size_t k = tensorflow ? static_cast<std::size_t>(classes.word(static_cast<std::int32_t>(y))) : y;
    loss_sum += -(l[k] - mx - std::log(z));
  }
  if (p.first_non_finite_row >= 0) {  // features, not words
    for (std::size_t r = 0; r < n; ++r) {
      const float* l = logits.data() + word_offset[r] * L;
      const float* e = logits.data() + word_offset[r + 1] * L;
      if (!std::all_of(l, e, [](float x) { return std::isfinite(x); })) ++p.non_finite_rows;
    }
  }
  p.mean_loss = words ? loss_sum / static_cast<double>(words) : 0;
  return p;
}

template <class Model>
TokenEvaluation evaluate_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                const std::vector<std::string>& label_names, const PredictOptions& options) {
  dist::LocalComm one;
  return evaluate_tokens(model, cache, batch_size, label_names, options, one);
}

template <class Model, dist::Communicator C>
TokenEvaluation evaluate_tokens(const Model& model, const data::FeatureCache& cache, index_t batch_size,
                                const std::vector<std::string>& label_names, const PredictOptions& options, C& comm) {
  TokenEvaluation e;
  const auto classes = static_cast<index_t>(label_names.size()) +
                       (options.token_scheme == data::TokenScheme::tensorflow ? data::kTensorflowExtraClasses : 0);
  e.predictions = predict_tokens(model, cache, batch_size, classes, options, comm);
  const auto& p = e.predictions;
  metrics::ConllEvaluator conll;
  for (std::size_t k = 0; k < p.sentences(); ++k) {
    for (std::size_t w = p.sentence_begin[k]; w < p.sentence_begin[k + 1]; ++w)
      conll.add(label_names[static_cast<std::size_t>(p.truth[w])], label_names[static_cast<std::size_t>(p.predicted[w])]);
    conll.end_sentence();
  }
  e.entities = conll.scores();
  e.words = metrics::classification_report(p.truth, p.predicted, label_names);
  e.metrics = {{"eval_loss", p.mean_loss},
               {"eval_accuracy", e.entities.accuracy},
               {"precision", e.entities.overall.precision},
               {"recall", e.entities.overall.recall},
               {"f1", e.entities.overall.f1}};
  return e;
}

}  // namespace ctdl::train

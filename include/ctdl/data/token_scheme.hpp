#pragma once
// How a token classifier's classes stand for the words' labels: the two NER recipes.
//
//   first_piece  BioBERT's PyTorch recipe (Hugging Face's run_ner.py): the model has a
//                class per label; each word's first piece carries its label and nothing
//                else is trained or scored (the feature cache's labels as they are: -1
//                elsewhere)
//   tensorflow   the TensorFlow run_ner.py of NVIDIA (DeepLearningExamples) and BioBERT:
//                every position is trained, on L + 4 classes
//                  0          padding
//                  1 .. L     the word labels (a word's first piece: its label + 1)
//                  L + 1      "X", a word's later pieces
//                  L + 2      [CLS]
//                  L + 3      [SEP]
//                and a sentence of more than 30 words is cut after the last "O" among its
//                first 30 (TokenFeatureBuilder::Options::max_words); its predictions are
//                read as that script reads them (read_tensorflow_labels)
//
// The feature cache holds the first_piece labels in both; tensorflow_token_labels makes a
// row's tensorflow labels from them when a batch is assembled (data::Batcher).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"

namespace ctdl::data {

enum class TokenScheme { first_piece, tensorflow };

/// The tensorflow scheme's classes beyond the word labels.
inline constexpr int kTensorflowExtraClasses = 4;

/// The tensorflow scheme's class ids for L word labels (the numbering in the header).
struct TensorflowClasses {
  std::int32_t L;
  static constexpr std::int32_t padding = 0;
  constexpr std::int32_t word(std::int32_t label) const { return label + 1; }
  constexpr std::int32_t x() const { return L + 1; }
  constexpr std::int32_t cls() const { return L + 2; }
  constexpr std::int32_t sep() const { return L + 3; }
};

/// The model's classes for `labels` (the word labels, in id order): the labels themselves,
/// or for the tensorflow scheme "[padding]", the labels, "X", "[CLS]", "[SEP]".
inline std::vector<std::string> token_class_names(TokenScheme scheme, const std::vector<std::string>& labels) {
  if (scheme == TokenScheme::first_piece) return labels;
  std::vector<std::string> names{"[padding]"};
  names.insert(names.end(), labels.begin(), labels.end());
  names.insert(names.end(), {"X", "[CLS]", "[SEP]"});
  return names;
}

/// One row of the tensorflow scheme's labels: `labels` holds the row's first_piece labels
/// (a word's label at its first piece, -1 elsewhere) for its first `width` positions and
/// becomes the tensorflow labels; `length` is the row's tokens up to and including [SEP]
/// (the rest is padding); `word_labels` is L. A first-piece label outside [0, L), or one on
/// [CLS], [SEP] or padding, is an error (a cache made with other labels).
inline void tensorflow_token_labels(std::int32_t* labels, index_t width, index_t length, index_t word_labels) {
  if (length < 2 || length > width)
    throw Error("tensorflow_token_labels: a row of " + std::to_string(length) + " tokens in a batch " +
                std::to_string(width) + " wide (a feature is [CLS] pieces [SEP])");
  const TensorflowClasses c{static_cast<std::int32_t>(word_labels)};
  for (index_t k = 0; k < width; ++k) {
    const std::int32_t y = labels[k];
    const bool word = k > 0 && k < length - 1;
    if (y >= c.L || (y >= 0 && !word))
      throw Error("tensorflow_token_labels: label " + std::to_string(y) + " at position " + std::to_string(k) + " of " +
                  std::to_string(length) + " tokens, with " + std::to_string(c.L) + " word labels");
    labels[k] = k >= length          ? c.padding
                : k == 0             ? c.cls()
                : k == length - 1    ? c.sep()
                : y >= 0             ? c.word(y)
                                     : c.x();
  }
}

/// One feature's word labels as the TensorFlow run_ner.py reads its predictions
/// (result_to_pair): the argmax class of each position in order, padding, [CLS] and X
/// passed over, up to the first [SEP]; a word label's class gives that label, to the
/// feature's words in order; past its words they are dropped; words left over get
/// `outside` ("O") with probability 0. `logits` is the feature's S x (L + 4) block; its
/// positions past S (a batch narrower than M) count as padding. Writes `words` labels (as
/// floats, to be summed across ranks with the logits) to `label` and their positions'
/// softmax probabilities to `probability`.
inline void read_tensorflow_labels(const float* logits, std::size_t S, index_t word_labels, std::size_t words,
                                   std::int32_t outside, float* label, float* probability) {
  const TensorflowClasses c{static_cast<std::int32_t>(word_labels)};
  const auto C = static_cast<std::size_t>(word_labels + kTensorflowExtraClasses);
  std::size_t w = 0;
  for (std::size_t t = 0; t < S && w < words; ++t) {
    const float* l = logits + t * C;
    const auto best = static_cast<std::int32_t>(std::max_element(l, l + C) - l);
    if (best == c.sep()) break;
    if (best == c.padding || best == c.x() || best == c.cls()) continue;
    double z = 0;
    for (std::size_t k = 0; k < C; ++k) z += std::exp(static_cast<double>(l[k]) - l[best]);
    label[w] = static_cast<float>(best - c.word(0));
    probability[w] = static_cast<float>(1.0 / z);
    ++w;
  }
  for (; w < words; ++w) {
    label[w] = static_cast<float>(outside);
    probability[w] = 0.f;
  }
}

}  // namespace ctdl::data

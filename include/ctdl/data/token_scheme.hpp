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
//                read as that script reads them (train/tokens.hpp)
//
// The feature cache holds the first_piece labels in both; tensorflow_token_labels makes a
// row's tensorflow labels from them when a batch is assembled (data::Batcher).

#include <cstdint>
#include <string>
#include <vector>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"

namespace ctdl::data {

enum class TokenScheme { first_piece, tensorflow };

/// The tensorflow scheme's classes beyond the word labels.
inline constexpr int kTensorflowExtraClasses = 4;

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
  const auto L = static_cast<std::int32_t>(word_labels);
  for (index_t k = 0; k < width; ++k) {
    const std::int32_t y = labels[k];
    const bool word = k > 0 && k < length - 1;
    if (y >= L || (y >= 0 && !word))
      throw Error("tensorflow_token_labels: label " + std::to_string(y) + " at position " + std::to_string(k) + " of " +
                  std::to_string(length) + " tokens, with " + std::to_string(L) + " word labels");
    labels[k] = k >= length ? 0 : k == 0 ? L + 2 : k == length - 1 ? L + 3 : y >= 0 ? y + 1 : L + 1;
  }
}

}  // namespace ctdl::data

#pragma once
// Token-classification (NER) features, as BioBERT's PyTorch NER recipe (Hugging Face's
// run_ner.py) builds them.
//
// Each word is split into word pieces; the first piece carries the word's label and the
// others get -1 (excluded from loss and scoring). (The TensorFlow run_ner.py of NVIDIA
// and BioBERT labels every position instead: later pieces "X", [CLS] and [SEP] their own
// classes, padding class 0; docs/span_classifier.md lists what differs.) A sentence whose pieces do not fit
// M - 2 is cut at word boundaries into several features, each [CLS] pieces [SEP] [PAD]...
// Two choices where the recipes silently lose words: a word whose text has no pieces at
// all (only control or zero-width characters) becomes [UNK], so it is still predicted;
// a single word longer than M - 2 pieces keeps its first M - 2 (only the first is scored).
//
// Options::max_words (the TensorFlow recipe's 30, data/token_scheme.hpp) also starts a new
// feature where that recipe cuts a long sentence: while more than max_words words remain,
// after the last word labelled cut_label ("O") among the next max_words, or after the
// first of them when none is (a sentence without labels: after max_words). The features
// of a sentence stay one sentence: every word is still predicted once, in order.

#include <cstdint>
#include <span>
#include <vector>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/data/conll.hpp"
#include "ctdl/data/token_scheme.hpp"
#include "ctdl/text/tokenizer.hpp"

namespace ctdl::data {

/// One feature: M input ids and M label ids (-1 = not scored), and which words it holds.
struct TokenFeature {
  std::vector<std::int32_t> input_ids, label_ids;
  std::uint32_t sentence = 0;    // the sentence's index in its file
  std::uint32_t first_word = 0;  // its first word's index in the sentence
};

class TokenFeatureBuilder {
 public:
  struct Options {
    index_t max_seq_length = 128;
    std::size_t max_words = 0;       ///< > 0: cut sentences of more words as the header says
    std::int32_t cut_label = -1;     ///< the label id after which they are cut ("O")
  };

  TokenFeatureBuilder(const text::FullTokenizer& tokenizer, Options options)
      : tok_(tokenizer), options_(options), special_(tokenizer.vocab().special()) {
    if (options_.max_seq_length < 3)
      throw Error("max_seq_length " + std::to_string(options_.max_seq_length) +
                  " is too small: a token feature needs at least [CLS], one piece and [SEP]");
  }

  index_t max_seq_length() const { return options_.max_seq_length; }
  const Options& options() const { return options_; }

  /// Appends the features of one sentence (label_ids from s.label_ids, or -1 for all
  /// words when the sentence has none) to `out`.
  void build(const Sentence& s, std::vector<TokenFeature>& out) const {
    const auto M = static_cast<std::size_t>(options_.max_seq_length);
    const std::size_t room = M - 2;
    std::vector<std::int32_t> pieces;
    TokenFeature f = start(s, 0);
    std::size_t used = 0;
    std::size_t cut = next_cut(s, 0);
    for (std::size_t w = 0; w < s.words.size(); ++w) {
      pieces.clear();
      tok_.tokenize_ids(s.words[w], pieces);
      if (pieces.empty()) pieces.push_back(special_.unk);
      if (pieces.size() > room) pieces.resize(room);
      const bool at_cut = w == cut;
      if (at_cut) cut = next_cut(s, w);
      if (at_cut || used + pieces.size() > room) {
        out.push_back(finish(std::move(f), used));
        f = start(s, static_cast<std::uint32_t>(w));
        used = 0;
      }
      for (std::size_t k = 0; k < pieces.size(); ++k) {
        f.input_ids[1 + used + k] = pieces[k];
        f.label_ids[1 + used + k] = k == 0 && !s.label_ids.empty() ? s.label_ids[w] : -1;
      }
      used += pieces.size();
    }
    out.push_back(finish(std::move(f), used));
  }

 private:
  /// Where the words from `begin` on are next cut by max_words (the header's rule), or
  /// past the end.
  std::size_t next_cut(const Sentence& s, std::size_t begin) const {
    const std::size_t n = s.words.size(), most = options_.max_words;
    if (most == 0 || n - begin <= most) return n;
    if (s.label_ids.empty()) return begin + most;
    for (std::size_t w = begin + most; w-- > begin;)
      if (s.label_ids[w] == options_.cut_label) return w + 1;
    return begin + 1;
  }

  TokenFeature start(const Sentence& s, std::uint32_t first_word) const {
    const auto M = static_cast<std::size_t>(options_.max_seq_length);
    TokenFeature f{std::vector<std::int32_t>(M, special_.pad), std::vector<std::int32_t>(M, -1),
                   static_cast<std::uint32_t>(s.index), first_word};
    f.input_ids[0] = special_.cls;
    return f;
  }
  TokenFeature finish(TokenFeature f, std::size_t used) const {
    f.input_ids[1 + used] = special_.sep;
    return f;
  }

  const text::FullTokenizer& tok_;
  Options options_;
  text::Vocab::SpecialIds special_;
};

}  // namespace ctdl::data

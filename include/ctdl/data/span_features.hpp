#pragma once
// Span-classification features, exactly as the original pipeline builds them.
//
// With M = max_seq_length and c = M / 2 (integer division):
//   [CLS]
//   the left context's pieces: the last c-1 of them, or all of them after enough [PAD]s
//     to make c-1 (so the span always starts at position c)
//   the span's pieces, or the single replace_span token when one is given
//   the right context's pieces
//   -> if that is M-1 tokens or more, the first M-1 are kept
//   [SEP], then [PAD] up to M.
// input_mask is 0 at every [PAD] (the left padding too) and 1 elsewhere; segment ids are
// all 0. docs/data.md works through an example.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/core/batch.hpp"
#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/text/tokenizer.hpp"

namespace ctdl::data {

class SpanFeatureBuilder {
 public:
  struct Options {
    index_t max_seq_length = 128;
    /// A vocabulary token that stands in for every span (e.g. "[MASK]"); none = the span's pieces.
    std::optional<std::string> replace_span = std::nullopt;
  };

  SpanFeatureBuilder(const text::FullTokenizer& tokenizer, Options options)
      : tok_(tokenizer), options_(std::move(options)), special_(tokenizer.vocab().special()) {
    if (options_.max_seq_length < 3)
      throw Error("max_seq_length " + std::to_string(options_.max_seq_length) +
                  " is too small: a span feature needs at least [CLS], one token and [SEP]");
    if (options_.replace_span)
      replace_id_ = tokenizer.vocab().require(*options_.replace_span, "replace_span token");
  }

  const Options& options() const { return options_; }
  index_t max_seq_length() const { return options_.max_seq_length; }

  /// Writes the M input ids of one row into `ids` (size M). Throws text::InvalidUtf8.
  void build(std::string_view left, std::string_view span, std::string_view right,
             std::span<std::int32_t> ids) const {
    const auto M = static_cast<std::size_t>(options_.max_seq_length);
    if (ids.size() != M) throw Error("SpanFeatureBuilder::build: output has " + std::to_string(ids.size()) +
                                     " ids, max_seq_length is " + std::to_string(M));
    const std::size_t left_len = M / 2 - 1;
    thread_local std::vector<std::int32_t> seq, left_ids;
    seq.clear();
    seq.push_back(special_.cls);
    left_ids.clear();
    tok_.tokenize_ids_tail(left, left_ids, left_len);
    seq.insert(seq.end(), left_len - left_ids.size(), special_.pad);
    seq.insert(seq.end(), left_ids.begin(), left_ids.end());
    if (replace_id_) seq.push_back(*replace_id_);
    else tok_.tokenize_ids_head(span, seq, M - 1);
    tok_.tokenize_ids_head(right, seq, M - 1);
    if (seq.size() > M - 1) seq.resize(M - 1);
    seq.push_back(special_.sep);
    std::copy(seq.begin(), seq.end(), ids.begin());
    std::fill(ids.begin() + static_cast<std::ptrdiff_t>(seq.size()), ids.end(), special_.pad);
  }

  std::vector<std::int32_t> build(std::string_view left, std::string_view span, std::string_view right) const {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(options_.max_seq_length));
    build(left, span, right, ids);
    return ids;
  }

  /// input_mask of a feature: 0 at [PAD], 1 elsewhere.
  std::int32_t mask(std::int32_t id) const { return attention_mask(id, special_.pad); }

 private:
  const text::FullTokenizer& tok_;
  Options options_;
  text::Vocab::SpecialIds special_;
  std::optional<std::int32_t> replace_id_;
};

}  // namespace ctdl::data

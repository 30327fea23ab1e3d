#pragma once
// Token-level NER data in the CoNLL / BC5CDR (BLUE) layout.
//
// One token a line: the first whitespace-separated field is the token, the last is its
// label (B/I/O or B-CHEM, ...); fields between (document id, offset, POS) are ignored. A
// blank line ends a sentence; a -DOCSTART- line (CoNLL-2003) is a boundary too. LF, CRLF
// or CR line endings (lines.hpp). A line with a single field, ill-formed UTF-8, or (when a
// LabelSet is given) an unknown label is a DataError naming file:line; with skip_bad_rows
// the sentence that holds it is skipped, counted and passed to on_skip instead.

#include <string>
#include <string_view>
#include <vector>

#include "ctdl/data/labels.hpp"
#include "ctdl/data/lines.hpp"
#include "ctdl/data/span_tsv.hpp"  // SkippedRow, SkipSink
#include "ctdl/text/unicode.hpp"

namespace ctdl::data {

struct Sentence {
  std::vector<std::string_view> words, labels;
  std::vector<std::int32_t> label_ids;  // filled when the reader has a LabelSet
  std::size_t first_line = 0;
  std::size_t index = 0;  // 0-based position among the file's sentences
};

struct ConllOptions {
  bool skip_bad_rows = false;  ///< skip (and count) sentences with a bad line instead of stopping
  SkipSink on_skip = {};       ///< called for every skipped sentence (its bad line, its index, why)
};

class ConllReader {
 public:
  using Options = ConllOptions;

  /// `labels` may be null: no label check and no label ids (e.g. to collect the labels).
  ConllReader(std::string path, const LabelSet* labels, Options options = {})
      : lines_(std::move(path)), labels_(labels), options_(options) {}

  const std::string& path() const { return lines_.path(); }
  std::size_t size_bytes() const { return lines_.size_bytes(); }
  std::size_t position() const { return lines_.position(); }
  std::size_t sentences() const { return sentences_; }
  std::size_t skipped() const { return skipped_; }
  const std::vector<std::string>& skipped_messages() const { return skipped_messages_; }

  /// The next sentence (views into the file); false at the end.
  bool next(Sentence& s) {
    for (;;) {
      s.words.clear();
      s.labels.clear();
      s.label_ids.clear();
      std::string bad;  // the first problem in this sentence
      std::size_t bad_line = 0;
      std::string_view line;
      bool any = false;
      while (lines_.next(line)) {
        const auto fields = split_fields(line);
        if (fields.first.empty() || fields.first == "-DOCSTART-") {
          if (any) break;
          continue;
        }
        if (!any) s.first_line = lines_.line_number();
        any = true;
        if (!bad.empty()) continue;
        if (auto b = text::find_invalid_utf8(line)) {
          bad = "invalid UTF-8 at byte " + std::to_string(*b + 1) + " of the line";
        } else if (fields.second.empty()) {
          bad = "has 1 field; a token line needs the token first and its label last";
        } else if (labels_ && !labels_->find(fields.second)) {
          bad = "the label '" + std::string(fields.second) + "' is not in " + labels_->source() + " (" +
                labels_->joined() + ")";
        }
        if (!bad.empty()) {
          bad_line = lines_.line_number();
        } else {
          s.words.push_back(fields.first);
          s.labels.push_back(fields.second);
          if (labels_) s.label_ids.push_back(*labels_->find(fields.second));
        }
      }
      if (!any) return false;
      s.index = index_++;
      if (bad.empty()) {
        ++sentences_;
        return true;
      }
      if (!options_.skip_bad_rows) throw DataError(path(), bad_line, bad);
      if (skipped_messages_.size() < 10) skipped_messages_.push_back(path() + ":" + std::to_string(bad_line) + ": " + bad);
      ++skipped_;
      if (options_.on_skip) options_.on_skip({bad_line, std::to_string(s.index), bad});
    }
  }

 private:
  // First and last whitespace-separated fields ({"", ""} for a blank line; second empty
  // when there is one field).
  static std::pair<std::string_view, std::string_view> split_fields(std::string_view line) {
    constexpr std::string_view ws = " \t\r\v\f";
    const auto b = line.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    const auto e = line.find_last_not_of(ws) + 1;
    line = line.substr(b, e - b);
    const auto first_end = line.find_first_of(ws);
    if (first_end == std::string_view::npos) return {line, {}};
    const auto last_begin = line.find_last_of(ws) + 1;
    return {line.substr(0, first_end), line.substr(last_begin)};
  }

  LineReader lines_;
  const LabelSet* labels_;
  Options options_;
  std::size_t sentences_ = 0, skipped_ = 0, index_ = 0;
  std::vector<std::string> skipped_messages_;
};

/// The labels used in a CoNLL file (for data sets without a labels.txt).
inline LabelSet collect_conll_labels(const std::string& path, const ConllOptions& options = {}) {
  ConllReader reader(path, nullptr, options);
  Sentence s;
  std::vector<std::string> seen;
  while (reader.next(s))
    for (auto l : s.labels)
      if (std::find(seen.begin(), seen.end(), l) == seen.end()) seen.emplace_back(l);
  return LabelSet(std::move(seen), path + " (labels found in the data)");
}

}  // namespace ctdl::data

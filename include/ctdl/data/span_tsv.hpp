#pragma once
// The span-classification TSV of the original pipeline.
//
// Tab-separated, no quoting, no header, LF, CRLF or CR line endings (lines.hpp). The last
// four columns of a row are label, left context, span, right context; columns before them
// (document id, entity id, ...) are kept as ids. Blank lines are skipped. A bad row (fewer
// than four columns, ill-formed UTF-8, a label not in labels.txt) is a DataError naming
// file:line and the problem, or, with skip_bad_rows, is counted and skipped: every skipped
// row goes to the on_skip callback (line, ids, reason), and the first few messages are
// kept for the log.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/data/labels.hpp"
#include "ctdl/data/lines.hpp"
#include "ctdl/text/unicode.hpp"

namespace ctdl::data {

struct SpanRow {
  std::vector<std::string_view> ids;  // leading columns, if any
  std::string_view label, left, span, right;
  std::int32_t label_id = -1;
  std::size_t line = 0;  // 1-based line in the file
};

/// A row skipped under skip_bad_rows: where it was and why, so that outputs (which have
/// one line per good row) can be lined up with the input.
struct SkippedRow {
  std::size_t line = 0;  ///< 1-based line in the file (CoNLL: the bad line of the sentence)
  std::string ids;       ///< the row's id columns, tab-joined ("" when it has none or too few columns;
                         ///< CoNLL: the sentence's 0-based index); ill-formed UTF-8 becomes U+FFFD
  std::string reason;    ///< the problem, without the file:line prefix
};
using SkipSink = std::function<void(const SkippedRow&)>;

struct SpanTsvOptions {
  bool skip_bad_rows = false;  ///< count and skip bad rows instead of stopping
  SkipSink on_skip = {};       ///< called for every skipped row, in file order
};

class SpanTsvReader {
 public:
  using Options = SpanTsvOptions;

  SpanTsvReader(std::string path, const LabelSet& labels, Options options = {})
      : lines_(std::move(path)), labels_(labels), options_(options) {}

  const std::string& path() const { return lines_.path(); }
  std::size_t size_bytes() const { return lines_.size_bytes(); }
  std::size_t position() const { return lines_.position(); }

  /// The next good row (views into the file, valid while the reader lives); false at
  /// the end. Throws DataError for a bad row unless skip_bad_rows.
  bool next(SpanRow& row) {
    std::string_view line;
    while (lines_.next(line)) {
      if (line.empty()) continue;
      try {
        parse(line, row);
        ++rows_;
        return true;
      } catch (const DataError& e) {
        if (!options_.skip_bad_rows) throw;
        if (skipped_messages_.size() < kKeptMessages) skipped_messages_.push_back(e.what());
        ++skipped_;
        if (options_.on_skip) options_.on_skip({e.line, ids_of(line), e.problem});
      }
    }
    return false;
  }

  std::size_t rows() const { return rows_; }
  std::size_t skipped() const { return skipped_; }
  /// The first few skipped rows' errors ("file:line: problem").
  const std::vector<std::string>& skipped_messages() const { return skipped_messages_; }

 private:
  static constexpr std::size_t kKeptMessages = 10;

  // The id columns of a bad row (all but the last four), for the skipped-rows list.
  static std::string ids_of(std::string_view line) {
    std::vector<std::string_view> columns;
    for (std::size_t start = 0;;) {
      const std::size_t tab = line.find('\t', start);
      columns.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      start = tab + 1;
    }
    std::string ids;
    for (std::size_t i = 0; i + 4 < columns.size(); ++i) {
      if (i) ids += '\t';
      ids += text::find_invalid_utf8(columns[i]) ? std::string("\xEF\xBF\xBD") : std::string(columns[i]);
    }
    return ids;
  }

  void parse(std::string_view line, SpanRow& row) const {
    const std::size_t n = lines_.line_number();
    if (auto bad = text::find_invalid_utf8(line))
      throw DataError(path(), n, "invalid UTF-8 at byte " + std::to_string(*bad + 1) + " of the line");
    thread_local std::vector<std::string_view> columns;
    columns.clear();
    for (std::size_t start = 0;;) {
      const std::size_t tab = line.find('\t', start);
      columns.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      start = tab + 1;
    }
    if (columns.size() < 4)
      throw DataError(path(), n, "has " + std::to_string(columns.size()) +
                                     (columns.size() == 1 ? " column" : " columns") +
                                     "; a row needs at least 4 (label, left context, span, right context), tab-separated");
    const std::size_t k = columns.size() - 4;
    row.ids.assign(columns.begin(), columns.begin() + static_cast<std::ptrdiff_t>(k));
    row.label = columns[k];
    row.left = columns[k + 1];
    row.span = columns[k + 2];
    row.right = columns[k + 3];
    row.line = n;
    const auto id = labels_.find(row.label);
    if (!id)
      throw DataError(path(), n, "the label '" + std::string(row.label) + "' is not in " + labels_.source() +
                                     " (" + labels_.joined() + ")");
    row.label_id = *id;
  }

  LineReader lines_;
  const LabelSet& labels_;
  Options options_;
  std::size_t rows_ = 0, skipped_ = 0;
  std::vector<std::string> skipped_messages_;
};

}  // namespace ctdl::data

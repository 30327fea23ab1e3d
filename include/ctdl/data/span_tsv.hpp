#pragma once
// The span-classification TSV of the original pipeline.
//
// Tab-separated, no quoting, no header, LF or CRLF. The last four columns of a row are
// label, left context, span, right context; columns before them (document id, entity id,
// ...) are kept as ids. Blank lines are skipped. A bad row (fewer than four columns,
// ill-formed UTF-8, a label not in labels.txt) is a DataError naming file:line and the
// problem, or, with skip_bad_rows, is counted and skipped (the first few messages kept).

#include <cstdint>
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

struct SpanTsvOptions {
  bool skip_bad_rows = false;  ///< count and skip bad rows instead of stopping
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

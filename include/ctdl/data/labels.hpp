#pragma once
// LabelSet: the classes of a classifier, from labels.txt.
//
// One label a line, stripped of surrounding whitespace; blank lines are ignored; a label
// listed twice is an error. Ids follow the sorted order (byte order, which for UTF-8 is
// code point order, as Python's sorted()), whatever the file's order.

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/data/lines.hpp"
#include "ctdl/text/unicode.hpp"
#include "ctdl/text/vocab.hpp"

namespace ctdl::data {

class LabelSet {
 public:
  static LabelSet from_file(const std::string& path) {
    LineReader lines(path);
    std::vector<std::string> labels;
    std::vector<std::size_t> line_of;
    std::string_view line;
    while (lines.next(line)) {
      if (auto bad = text::find_invalid_utf8(line))
        throw DataError(path, lines.line_number(), "invalid UTF-8 at byte " + std::to_string(*bad + 1));
      const auto label = text::strip_python_space(line);
      if (label.empty()) continue;
      for (std::size_t i = 0; i < labels.size(); ++i)
        if (labels[i] == label)
          throw DataError(path, lines.line_number(),
                          "the label '" + std::string(label) + "' is already on line " + std::to_string(line_of[i]));
      labels.emplace_back(label);
      line_of.push_back(lines.line_number());
    }
    return LabelSet(std::move(labels), path);
  }

  /// Labels in any order (sorted here); `source` names them in errors.
  explicit LabelSet(std::vector<std::string> labels, std::string source = "<labels>")
      : labels_(std::move(labels)), source_(std::move(source)) {
    if (labels_.empty()) throw Error(source_ + ": no labels");
    std::sort(labels_.begin(), labels_.end());
    const auto dup = std::adjacent_find(labels_.begin(), labels_.end());
    if (dup != labels_.end()) throw Error(source_ + ": the label '" + *dup + "' is listed twice");
  }

  std::size_t size() const { return labels_.size(); }
  const std::string& source() const { return source_; }
  const std::vector<std::string>& names() const { return labels_; }
  const std::string& name(std::int32_t id) const { return labels_.at(static_cast<std::size_t>(id)); }

  std::optional<std::int32_t> find(std::string_view label) const {
    const auto it = std::lower_bound(labels_.begin(), labels_.end(), label);
    if (it == labels_.end() || *it != label) return std::nullopt;
    return static_cast<std::int32_t>(it - labels_.begin());
  }

  /// "che, dis, ggp, org, out"
  std::string joined() const {
    std::string s;
    for (const auto& l : labels_) s += (s.empty() ? "" : ", ") + l;
    return s;
  }

  std::uint64_t fingerprint() const {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const auto& l : labels_) {
      for (char c : l) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
      h = (h ^ '\n') * 0x100000001b3ull;
    }
    return h;
  }

 private:
  std::vector<std::string> labels_;
  std::string source_;
};

}  // namespace ctdl::data

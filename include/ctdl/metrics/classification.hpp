#pragma once
// Classification metrics as scikit-learn's classification_report defines them.
//
// For each class: precision = tp / (tp + fp), recall = tp / (tp + fn), F1 their harmonic
// mean, each 0 when its denominator is 0 (sklearn's zero_division=0); support = true
// count. Averages: micro (from the summed counts; for single-label data precision,
// recall and F1 all equal accuracy, as the original pipeline reports), macro (the plain
// mean over the L classes) and weighted (the mean weighted by support). The original
// pipeline's tf_metrics averages macro over its classifier's L + 1 classes, the extra
// one never a gold label and so scoring 0: for the same predictions its precision_mac,
// recall_mac and f1-macro are these x L / (L + 1); micro and weighted are the same.
// The confusion matrix has true classes as rows and predicted classes as columns.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"

namespace ctdl::metrics {

struct ClassScores {
  double precision = 0, recall = 0, f1 = 0;
  std::int64_t support = 0;
};

struct ClassificationReport {
  std::vector<std::string> labels;
  std::vector<std::vector<std::int64_t>> confusion;  // [true][predicted]
  std::vector<ClassScores> per_class;
  ClassScores micro, macro, weighted;
  double accuracy = 0;
  std::int64_t total = 0;

  /// The per-class table with the three averages (sklearn's layout).
  std::string table() const {
    std::string s;
    char line[256];
    std::size_t w = 12;
    for (const auto& l : labels) w = std::max(w, l.size());
    std::snprintf(line, sizeof line, "%*s %10s %10s %10s %10s\n", static_cast<int>(w), "", "precision", "recall",
                  "f1-score", "support");
    s += line;
    const auto row = [&](const std::string& name, const ClassScores& c) {
      std::snprintf(line, sizeof line, "%*s %10.4f %10.4f %10.4f %10lld\n", static_cast<int>(w), name.c_str(),
                    c.precision, c.recall, c.f1, static_cast<long long>(c.support));
      s += line;
    };
    for (std::size_t k = 0; k < labels.size(); ++k) row(labels[k], per_class[k]);
    s += "\n";
    row("micro avg", micro);
    row("macro avg", macro);
    row("weighted avg", weighted);
    return s;
  }

  /// The confusion matrix with label headers (rows: true, columns: predicted).
  std::string confusion_table() const {
    std::size_t w = 8;
    for (const auto& l : labels) w = std::max(w, l.size() + 1);
    std::string s = "confusion matrix (rows: true label, columns: predicted)\n";
    char cell[64];
    std::snprintf(cell, sizeof cell, "%*s", static_cast<int>(w), "");
    s += cell;
    for (const auto& l : labels) {
      std::snprintf(cell, sizeof cell, "%*s", static_cast<int>(w), l.c_str());
      s += cell;
    }
    s += "\n";
    for (std::size_t t = 0; t < labels.size(); ++t) {
      std::snprintf(cell, sizeof cell, "%*s", static_cast<int>(w), labels[t].c_str());
      s += cell;
      for (std::size_t p = 0; p < labels.size(); ++p) {
        std::snprintf(cell, sizeof cell, "%*lld", static_cast<int>(w), static_cast<long long>(confusion[t][p]));
        s += cell;
      }
      s += "\n";
    }
    return s;
  }
};

inline double safe_div(double a, double b) { return b == 0 ? 0 : a / b; }
inline double f1_of(double p, double r) { return p + r == 0 ? 0 : 2 * p * r / (p + r); }

/// The report for true and predicted class ids in [0, labels.size()).
inline ClassificationReport classification_report(const std::vector<std::int32_t>& truth,
                                                  const std::vector<std::int32_t>& predicted,
                                                  std::vector<std::string> labels) {
  if (truth.size() != predicted.size())
    throw Error("classification_report: " + std::to_string(truth.size()) + " true labels but " +
                std::to_string(predicted.size()) + " predictions");
  ClassificationReport r;
  const std::size_t L = labels.size();
  r.labels = std::move(labels);
  r.confusion.assign(L, std::vector<std::int64_t>(L, 0));
  for (std::size_t i = 0; i < truth.size(); ++i) {
    const auto t = truth[i], p = predicted[i];
    if (t < 0 || p < 0 || static_cast<std::size_t>(t) >= L || static_cast<std::size_t>(p) >= L)
      throw Error("classification_report: class id out of range at example " + std::to_string(i));
    ++r.confusion[static_cast<std::size_t>(t)][static_cast<std::size_t>(p)];
  }
  r.total = static_cast<std::int64_t>(truth.size());
  std::int64_t tp_sum = 0;
  r.per_class.resize(L);
  for (std::size_t k = 0; k < L; ++k) {
    std::int64_t tp = r.confusion[k][k], predicted_k = 0, true_k = 0;
    for (std::size_t j = 0; j < L; ++j) {
      predicted_k += r.confusion[j][k];
      true_k += r.confusion[k][j];
    }
    auto& c = r.per_class[k];
    c.precision = safe_div(static_cast<double>(tp), static_cast<double>(predicted_k));
    c.recall = safe_div(static_cast<double>(tp), static_cast<double>(true_k));
    c.f1 = f1_of(c.precision, c.recall);
    c.support = true_k;
    tp_sum += tp;
    r.macro.precision += c.precision / static_cast<double>(L);
    r.macro.recall += c.recall / static_cast<double>(L);
    r.macro.f1 += c.f1 / static_cast<double>(L);
    const double weight = safe_div(static_cast<double>(true_k), static_cast<double>(r.total));
    r.weighted.precision += c.precision * weight;
    r.weighted.recall += c.recall * weight;
    r.weighted.f1 += c.f1 * weight;
  }
  r.accuracy = safe_div(static_cast<double>(tp_sum), static_cast<double>(r.total));
  r.micro = {r.accuracy, r.accuracy, r.accuracy, r.total};
  r.macro.support = r.weighted.support = r.total;
  return r;
}

}  // namespace ctdl::metrics

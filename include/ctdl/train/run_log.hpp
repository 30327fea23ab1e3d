#pragma once
// What a training run tells the person watching it.
//
//   ProgressLog   a line (or, on a terminal, a redrawn progress bar on stderr) every N
//                 steps: step, epoch, loss, learning rate, sentences/s, ETA
//   InferenceProgressLog  the same for an evaluation or prediction pass: a line every
//                 30 s (or a bar): batches done, sentences/s, ETA
//   RunLog        metrics.jsonl (one JSON record per logging step and per evaluation,
//                 replaced whole when the run commits it) and training_curves.svg (loss,
//                 learning rate and evaluation metrics against the step), redrawn as the
//                 run goes so it can be opened any time
//   percentile    latency percentiles as numpy's default (linear interpolation)

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/io/atomic_file.hpp"

namespace ctdl::train {

/// The q-th percentile (0..100) of `v`, linearly interpolated (numpy.percentile's default).
inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q / 100 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

inline std::string format_duration(double seconds) {
  char buf[32];
  const auto s = static_cast<long long>(seconds + 0.5);
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s / 60 % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  return buf;
}

class ProgressLog {
 public:
  /// Lines go to `out` when given (then there is no progress bar), else to stderr.
  ProgressLog(std::int64_t total_steps, std::int64_t every, std::int64_t batch_rows,
              std::function<void(const std::string&)> out = {})
      : total_(total_steps), every_(std::max<std::int64_t>(1, every)), rows_(batch_rows),
        terminal_(!out && ::isatty(STDERR_FILENO) != 0), out_(std::move(out)), start_(Clock::now()), last_(start_) {}

  /// Reports step `step` (1-based) if it is a logging step or the last; returns the
  /// record it logged (empty when it did not log).
  nlohmann::json step(std::int64_t step, double epoch, double loss, double lr, double loss_scale = 0) {
    loss_sum_ += loss;
    ++loss_count_;
    if (step % every_ != 0 && step != total_) {
      if (terminal_) bar(step, epoch, loss, lr);
      return {};
    }
    const auto now = Clock::now();
    const double interval = std::chrono::duration<double>(now - last_).count();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double sps = interval > 0 ? static_cast<double>((step - last_step_) * rows_) / interval : 0;
    const double eta = step > 0 ? elapsed / static_cast<double>(step) * static_cast<double>(total_ - step) : 0;
    const double mean_loss = loss_sum_ / static_cast<double>(loss_count_);
    nlohmann::json rec = {{"type", "train"}, {"step", step}, {"epoch", epoch}, {"loss", mean_loss},
                          {"learning_rate", lr}, {"sentences_per_s", sps}, {"elapsed_s", elapsed}};
    if (loss_scale > 0) rec["loss_scale"] = loss_scale;
    char line[256];
    std::snprintf(line, sizeof line, "step %lld/%lld  epoch %.2f  loss %.4f  lr %.3g  %.1f sentences/s  ETA %s%s",
                  static_cast<long long>(step), static_cast<long long>(total_), epoch, mean_loss, lr, sps,
                  format_duration(eta).c_str(), loss_scale > 0 ? ("  loss scale " + fmt(loss_scale)).c_str() : "");
    if (out_) {
      out_(line);
    } else {
      if (terminal_) std::fprintf(stderr, "\r\033[K");
      std::fprintf(stderr, "%s\n", line);
    }
    last_ = now;
    last_step_ = step;
    loss_sum_ = 0;
    loss_count_ = 0;
    return rec;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  void bar(std::int64_t step, double epoch, double loss, double lr) const {
    constexpr int width = 30;
    const int filled = static_cast<int>(width * step / std::max<std::int64_t>(1, total_));
    std::fprintf(stderr, "\r\033[K[%s%s] %lld/%lld epoch %.2f loss %.4f lr %.3g", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), static_cast<long long>(step),
                 static_cast<long long>(total_), epoch, loss, lr);
    std::fflush(stderr);
  }

  std::int64_t total_, every_, rows_;
  bool terminal_;
  std::function<void(const std::string&)> out_;
  Clock::time_point start_, last_;
  std::int64_t last_step_ = 0, loss_count_ = 0;
  double loss_sum_ = 0;
};

/// Progress of an evaluation or prediction pass (PredictOptions::progress): on a terminal
/// a bar redrawn after every batch; otherwise (a log file, a Slurm job's output) a line
/// at most every `every_s` seconds, none for a pass shorter than that:
///   predicting test.tsv: batch 1200/5000 (24%)  412.3 sentences/s  ETA 9m12s
/// The rate counts `batch_rows` (rows per global batch) a batch, the last one too, in
/// `unit`s (sentences; the NER task's features). The
/// batches go from the longest rows to the shortest (grouped by length), so the ETA,
/// which assumes the rate so far, errs long.
class InferenceProgressLog {
 public:
  /// Lines go to `out` when given (then there is no bar), else to stderr.
  InferenceProgressLog(std::string what, std::int64_t batch_rows, std::string unit = "sentences", double every_s = 30,
                       std::function<void(const std::string&)> out = {})
      : what_(std::move(what)), unit_(std::move(unit)), rows_(batch_rows), every_s_(every_s),
        terminal_(!out && ::isatty(STDERR_FILENO) != 0), out_(std::move(out)), start_(Clock::now()), last_(start_) {}
  ~InferenceProgressLog() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");  // the pass's own summary line follows
  }
  InferenceProgressLog(const InferenceProgressLog&) = delete;
  InferenceProgressLog& operator=(const InferenceProgressLog&) = delete;

  void operator()(std::size_t done, std::size_t batches) {
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (!terminal_ && (since < every_s_ || done == batches)) return;  // the pass's summary says the end
    const double rate = elapsed > 0 ? static_cast<double>(done) * static_cast<double>(rows_) / elapsed : 0;
    const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(batches - done) : 0;
    char line[256];
    std::snprintf(line, sizeof line, "%s: batch %zu/%zu (%.0f%%)  %.1f %s/s  ETA %s", what_.c_str(), done, batches,
                  100.0 * static_cast<double>(done) / static_cast<double>(std::max<std::size_t>(1, batches)), rate,
                  unit_.c_str(), format_duration(eta).c_str());
    if (out_) out_(line);
    else if (terminal_) {
      std::fprintf(stderr, "\r\033[K%s", line);
      std::fflush(stderr);
      drawn_ = true;
    } else {
      std::fprintf(stderr, "%s\n", line);
    }
    last_ = now;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string what_, unit_;
  std::int64_t rows_;
  double every_s_;
  bool terminal_, drawn_ = false;
  std::function<void(const std::string&)> out_;
  Clock::time_point start_, last_;
};

/// metrics.jsonl and training_curves.svg of a run in an output directory.
///
/// Nothing is written before the first record, so a run that stops on a bad input leaves
/// an earlier run's logs as they were. The records go to `metrics.jsonl.tmp.<pid>` with
/// checked writes, flushed after each one (`tail -f` it to watch), and commit() moves the
/// complete log over metrics.jsonl (fsync + rename; io::AtomicFile). A run that fails or
/// is killed before commit() leaves metrics.jsonl as it was (the temporary is removed, or
/// swept by the next run). With `append`, the new log starts with the old one's lines.
/// commit() may come more than once (after training, after evaluation): later records
/// continue the same log. training_curves.svg is redrawn from every record so far, each
/// version complete (AtomicFile), so it can be opened any time.
class RunLog {
 public:
  explicit RunLog(std::string output_dir, bool append = false) : dir_(std::move(output_dir)) {
    if (!append) return;
    const std::string path = dir_ + "/metrics.jsonl";
    std::ifstream in(path, std::ios::binary);
    if (!in) return;  // no earlier log
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      text_ += line + "\n";
      // The curves show the earlier records too; a line that is not JSON is kept in the
      // log as it was but not drawn.
      auto rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (rec.is_object()) records_.push_back(std::move(rec));
    }
    if (in.bad()) throw Error(path + ": read failed");
  }

  void record(const nlohmann::json& rec) {
    if (rec.is_null() || rec.empty()) return;
    const std::string line = rec.dump() + "\n";
    if (!jsonl_) {
      jsonl_ = std::make_unique<io::AtomicFile>(dir_ + "/metrics.jsonl");
      jsonl_->write(text_);
    }
    jsonl_->write(line);
    jsonl_->flush();
    text_ += line;
    records_.push_back(rec);
    write_svg();
  }

  /// The records so far replace metrics.jsonl (a no-op when nothing was recorded since the
  /// last commit). Throws naming the file when it cannot be written.
  void commit() {
    if (jsonl_) std::exchange(jsonl_, nullptr)->commit();
  }

  /// Forgets the records of steps after `step`: a run resumed from a checkpoint older
  /// than the log's last commit (the newest checkpoint was torn) repeats those steps.
  /// Lines that are not JSON records with a step stay.
  void drop_after(std::int64_t step) {
    std::string kept;
    std::vector<nlohmann::json> records;
    std::size_t begin = 0;
    while (begin < text_.size()) {
      std::size_t end = text_.find('\n', begin);
      if (end == std::string::npos) end = text_.size();
      const std::string line = text_.substr(begin, end - begin);
      begin = end + 1;
      auto rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      const bool later = rec.is_object() && rec.contains("step") && rec["step"].is_number_integer() &&
                         rec["step"].get<std::int64_t>() > step;
      if (later) continue;
      kept += line + "\n";
      if (rec.is_object()) records.push_back(std::move(rec));
    }
    if (jsonl_) throw Error(dir_ + "/metrics.jsonl: drop_after after this run's first record");
    text_ = std::move(kept);
    records_ = std::move(records);
  }

  /// Where the records of this run are while it runs (for the log line that says so).
  std::string live_path() const { return jsonl_ ? jsonl_->temporary() : dir_ + "/metrics.jsonl"; }

 private:
  struct Series {
    std::string name;
    std::vector<std::pair<double, double>> points;
  };

  void write_svg() const {
    std::vector<Series> panels[3];  // loss, learning rate, eval metrics
    Series loss{"train loss", {}}, lr{"learning rate", {}};
    std::map<std::string, Series> eval;
    for (const auto& r : records_) {
      const double step = r.value("step", 0.0);
      if (r.value("type", "") == "train") {
        loss.points.emplace_back(step, r.value("loss", 0.0));
        lr.points.emplace_back(step, r.value("learning_rate", 0.0));
      } else if (r.value("type", "") == "eval") {
        for (const std::string k : {"eval_accuracy", "f1-macro", "eval_loss"})
          if (r.contains(k)) {
            eval[k].name = k;
            eval[k].points.emplace_back(step, r[k].get<double>());
          }
      }
    }
    panels[0] = {loss};
    if (eval.count("eval_loss")) panels[0].push_back(eval["eval_loss"]);
    panels[1] = {lr};
    for (const std::string k : {"eval_accuracy", "f1-macro"})
      if (eval.count(k)) panels[2].push_back(eval[k]);
    const char* titles[3] = {"loss", "learning rate", "evaluation"};
    const char* colours[3] = {"#1f77b4", "#d62728", "#2ca02c"};
    const int W = 900, H = 260, left = 70, right = 20, top = 30, bottom = 30;
    std::string svg = "<svg xmlns='http://www.w3.org/2000/svg' width='" + std::to_string(W) + "' height='" +
                      std::to_string(3 * H) + "' font-family='sans-serif' font-size='12'>\n"
                      "<rect width='100%' height='100%' fill='white'/>\n";
    for (int p = 0; p < 3; ++p) {
      const int y0 = p * H;
      double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
      for (const auto& s : panels[p])
        for (auto [x, y] : s.points) {
          xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
        }
      svg += "<text x='" + std::to_string(left) + "' y='" + std::to_string(y0 + 18) + "' font-weight='bold'>" +
             titles[p] + "</text>\n";
      svg += "<rect x='" + std::to_string(left) + "' y='" + std::to_string(y0 + top) + "' width='" +
             std::to_string(W - left - right) + "' height='" + std::to_string(H - top - bottom) +
             "' fill='none' stroke='#999'/>\n";
      if (xmin > xmax) continue;
      if (xmax == xmin) xmax = xmin + 1;
      if (ymax == ymin) ymax = ymin + (ymin == 0 ? 1 : std::abs(ymin) * 0.1);
      const auto X = [&](double x) { return left + (x - xmin) / (xmax - xmin) * (W - left - right); };
      const auto Y = [&](double y) { return y0 + top + (ymax - y) / (ymax - ymin) * (H - top - bottom); };
      char buf[160];
      std::snprintf(buf, sizeof buf, "<text x='4' y='%.1f'>%.4g</text><text x='4' y='%.1f'>%.4g</text>\n", Y(ymax) + 4,
                    ymax, Y(ymin), ymin);
      svg += buf;
      std::snprintf(buf, sizeof buf, "<text x='%d' y='%d'>step %.0f</text><text x='%d' y='%d' text-anchor='end'>%.0f</text>\n",
                    left, y0 + H - 10, xmin, W - right, y0 + H - 10, xmax);
      svg += buf;
      int k = 0;
      for (const auto& s : panels[p]) {
        const char* colour = colours[(p + k) % 3];
        svg += "<polyline fill='none' stroke='" + std::string(colour) + "' stroke-width='1.5' points='";
        for (auto [x, y] : s.points) {
          std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(x), Y(y));
          svg += buf;
        }
        svg += "'/>\n";
        if (s.points.size() < 30)
          for (auto [x, y] : s.points) {
            std::snprintf(buf, sizeof buf, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s'/>\n", X(x), Y(y), colour);
            svg += buf;
          }
        std::snprintf(buf, sizeof buf, "<text x='%d' y='%d' fill='%s'>%s</text>\n", W - right - 160, y0 + 18 + 14 * k,
                      colour, s.name.c_str());
        svg += buf;
        ++k;
      }
    }
    svg += "</svg>\n";
    io::write_file_atomically(dir_ + "/training_curves.svg", svg);
  }

  std::string dir_;
  std::string text_;  // the whole log so far (earlier runs' lines when appending, then this run's)
  std::unique_ptr<io::AtomicFile> jsonl_;
  std::vector<nlohmann::json> records_;
};

}  // namespace ctdl::train

// train::RunLog: metrics.jsonl is replaced only whole, and only by a run that got as far
// as logging; training_curves.svg is redrawn as the run goes.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <ctdl/train/run_log.hpp>

#include "../test_util.hpp"

namespace fs = std::filesystem;
using namespace ctdl;

namespace {
std::string fresh_dir(const std::string& name) {
  const std::string d = test::scratch_dir("run_log", name);
  std::ofstream(d + "/metrics.jsonl") << "{\"type\":\"train\",\"step\":10,\"loss\":1.5}\n";
  return d;
}
bool has_temporary(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  return false;
}
const std::string kOld = "{\"type\":\"train\",\"step\":10,\"loss\":1.5}\n";
}  // namespace

TEST_CASE("RunLog: an earlier run's metrics.jsonl is untouched until the new run commits") {
  const std::string d = fresh_dir("untouched");
  { train::RunLog log(d); }  // a run that stopped before logging anything (a bad input)
  CHECK(test::read_file(d + "/metrics.jsonl") == kOld);
  {
    train::RunLog log(d);
    log.record({{"type", "train"}, {"step", 1}, {"loss", 0.9}});
    CHECK(test::read_file(d + "/metrics.jsonl") == kOld);      // still the earlier run's
    CHECK(test::read_file(log.live_path()).find("\"step\":1") != std::string::npos);  // flushed for tail -f
    CHECK(fs::file_size(d + "/training_curves.svg") > 0);
  }  // failed or killed before commit()
  CHECK(test::read_file(d + "/metrics.jsonl") == kOld);
  CHECK(!has_temporary(d));
}

TEST_CASE("RunLog: commit replaces metrics.jsonl whole, and later records continue the log") {
  const std::string d = fresh_dir("commit");
  train::RunLog log(d);
  log.record({{"type", "train"}, {"step", 1}, {"loss", 0.9}});
  log.record(nlohmann::json{});  // a step that did not log
  log.commit();
  CHECK(test::read_file(d + "/metrics.jsonl") == "{\"loss\":0.9,\"step\":1,\"type\":\"train\"}\n");
  log.record({{"type", "eval"}, {"step", 1}, {"eval_accuracy", 0.5}});
  log.commit();
  CHECK(test::read_file(d + "/metrics.jsonl") ==
        "{\"loss\":0.9,\"step\":1,\"type\":\"train\"}\n{\"eval_accuracy\":0.5,\"step\":1,\"type\":\"eval\"}\n");
  CHECK(!has_temporary(d));
}

TEST_CASE("RunLog: appending keeps the earlier lines and draws them too") {
  const std::string d = fresh_dir("append");
  train::RunLog log(d, /*append=*/true);
  log.record({{"type", "eval"}, {"step", 10}, {"eval_accuracy", 0.75}});
  log.commit();
  CHECK(test::read_file(d + "/metrics.jsonl") == kOld + "{\"eval_accuracy\":0.75,\"step\":10,\"type\":\"eval\"}\n");
  const std::string svg = test::read_file(d + "/training_curves.svg");
  CHECK(svg.find("train loss") != std::string::npos);  // the earlier run's training record
  CHECK(svg.find("eval_accuracy") != std::string::npos);
}

TEST_CASE("InferenceProgressLog: a line per interval with batches, rate and ETA, none at the end or within the interval") {
  std::vector<std::string> lines;
  const auto out = [&](const std::string& l) { lines.push_back(l); };
  {
    train::InferenceProgressLog every("predicting test.tsv", 64, "features", 0, out);
    for (std::size_t done = 1; done <= 5; ++done) every(done, 5);
  }
  REQUIRE(lines.size() == 4);  // the last batch is the pass's own summary line's
  for (std::size_t k = 0; k < lines.size(); ++k) {
    INFO(lines[k]);
    CHECK(lines[k].rfind("predicting test.tsv: batch " + std::to_string(k + 1) + "/5 (" + std::to_string((k + 1) * 20) +
                             "%)  ",
                         0) == 0);
    CHECK(lines[k].find(" features/s  ETA ") != std::string::npos);
  }
  lines.clear();
  train::InferenceProgressLog hourly("evaluating dev.tsv", 64, "sentences", 3600, out);
  for (std::size_t done = 1; done <= 100; ++done) hourly(done, 100);
  CHECK(lines.empty());  // a pass shorter than the interval prints nothing of its own
}

// Data pipeline at scale: a generated span TSV of --rows rows (the shared consensus rows,
// cycled), prepared into a feature cache with all threads, then one shuffled epoch read
// through the Batcher. Shows that memory does not grow with the data set.
//
//   build/bin/bench_data --data_dir=../shared/data --rows=2000000 --work_dir=build/bench_data
//
// Prints one JSON line: rows, tsv_mb, cache_mb, prepare_s, prepare_rows_per_s,
// iterate_s, iterate_rows_per_s, peak_rss_mb after preparing and after iterating (the
// process's maximum resident set, getrusage), threads.

#include <CLI/CLI.hpp>
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <ctdl/data/batcher.hpp>

using namespace ctdl;
namespace fs = std::filesystem;

namespace {
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

int main(int argc, char** argv) {
  std::string data_dir = "../shared/data", work_dir = "build/bench_data";
  std::size_t rows = 2000000;
  index_t max_seq_length = 128, batch_size = 32;
  bool keep = false;
  double max_rss_mb = 0;
  CLI::App app{"Feature cache preparation and iteration at scale; prints one JSON line"};
  app.add_option("--data_dir", data_dir, "the shared data (vocab/, consensus-example/)")->capture_default_str();
  app.add_option("--rows", rows, "rows to generate")->capture_default_str();
  app.add_option("--work_dir", work_dir, "where the TSV and the cache go")->capture_default_str();
  app.add_option("--max_seq_length", max_seq_length)->capture_default_str();
  app.add_option("--batch_size", batch_size)->capture_default_str();
  app.add_flag("--keep", keep, "keep the generated TSV and cache (default: delete them)");
  app.add_option("--max_rss_mb", max_rss_mb, "fail (exit 1) when the peak resident set exceeds this (a test)");
  CLI11_PARSE(app, argc, argv);
  try {
    fs::create_directories(work_dir);
    const std::string tsv = work_dir + "/rows.tsv", cache_path = work_dir + "/rows.features";
    fs::remove(cache_path);
    {  // generate: the consensus rows, cycled, with fresh ids
      std::ifstream in(fs::path(data_dir) / "consensus-example" / "dev.tsv");
      if (!in) throw Error(data_dir + "/consensus-example/dev.tsv: cannot open");
      std::vector<std::string> source;
      for (std::string line; std::getline(in, line);) source.push_back(line.substr(line.find('\t') + 1));
      std::ofstream out(tsv, std::ios::binary);
      for (std::size_t i = 0; i < rows; ++i) out << i << '\t' << source[i % source.size()] << '\n';
      if (!out) throw Error(tsv + ": write failed");
    }
    const text::FullTokenizer tok(text::Vocab::from_file(fs::path(data_dir) / "vocab" / "bert-base-cased-vocab.txt"),
                                  {.lower_case = false});
    const auto labels = data::LabelSet::from_file(data_dir + "/consensus-example/labels.txt");
    const data::SpanFeatureBuilder builder(tok, {.max_seq_length = max_seq_length});

    auto t0 = std::chrono::steady_clock::now();
    const auto report = data::prepare_span_cache(tsv, cache_path, labels, builder, tok, false);
    const double prepare_s = since(t0);
    const double rss_prepare = peak_rss_mb();

    const data::FeatureCache cache(cache_path);
    data::Batcher batcher(cache, {.batch_size = batch_size, .shuffle = true, .seed = 1, .drop_remainder = true});
    t0 = std::chrono::steady_clock::now();
    batcher.start_epoch(0);
    data::Batch batch;
    std::size_t seen = 0;
    std::int64_t checksum = 0;
    while (batcher.next(batch)) {
      seen += static_cast<std::size_t>(batch.size());
      checksum += batch.input_ids.data()[0] + batch.labels.data()[0];
    }
    const double iterate_s = since(t0);
    std::printf("{\"rows\": %zu, \"tsv_mb\": %.0f, \"cache_mb\": %.0f, \"prepare_s\": %.2f, \"prepare_rows_per_s\": %.0f, "
                "\"iterate_s\": %.2f, \"iterate_rows_per_s\": %.0f, \"peak_rss_mb_prepare\": %.0f, "
                "\"peak_rss_mb_iterate\": %.0f, \"threads\": %d, \"max_seq_length\": %td, \"checksum\": %lld}\n",
                report.rows, static_cast<double>(fs::file_size(tsv)) / 1048576.0,
                static_cast<double>(fs::file_size(cache_path)) / 1048576.0, prepare_s,
                static_cast<double>(report.rows) / prepare_s, iterate_s, static_cast<double>(seen) / iterate_s,
                rss_prepare, peak_rss_mb(), omp_get_max_threads(), max_seq_length, static_cast<long long>(checksum));
    if (!keep) {
      fs::remove(tsv);
      fs::remove(cache_path);
    }
    if (max_rss_mb > 0 && peak_rss_mb() > max_rss_mb) {
      std::fprintf(stderr, "bench_data: peak RSS %.0f MiB is above the limit of %.0f MiB\n", peak_rss_mb(), max_rss_mb);
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data: %s\n", e.what());
    return 1;
  }
  return 0;
}

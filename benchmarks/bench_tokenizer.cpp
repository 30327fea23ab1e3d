// Tokenizer throughput: FullTokenizer over the lines of a file, in memory.
//
//   build/bin/bench_tokenizer --vocab_file=V --cased=true --input=lines.txt [--threads=N] [--reps=3]
//
// Reads every line first (I/O is not timed), then tokenizes all of them --reps times and
// reports the best repetition as one JSON line: rows, tokens, seconds, rows_per_s,
// tokens_per_s, threads. Rows are split between threads in dynamic chunks of 256.

#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ctdl/text/tokenizer.hpp>

int main(int argc, char** argv) {
  std::string vocab_file, input;
  bool cased = true;
  int threads = 0, reps = 3;
  CLI::App app{"FullTokenizer throughput over the lines of a file; prints one JSON line"};
  app.add_option("--vocab_file", vocab_file, "vocab.txt")->required();
  app.add_option("--cased", cased, "true: cased vocabulary; false: lower-case and strip accents")->required();
  app.add_option("--input", input, "UTF-8 text, one row a line")->required();
  app.add_option("--threads", threads, "threads (default: all cores)");
  app.add_option("--reps", reps, "repetitions; the fastest is reported")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);
  try {
    const ctdl::text::FullTokenizer tok(ctdl::text::Vocab::from_file(vocab_file), {.lower_case = !cased});
    std::ifstream in(input);
    if (!in) throw ctdl::Error(input + ": cannot open");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
    const auto n = static_cast<std::ptrdiff_t>(lines.size());
    double best = 1e30;
    std::size_t tokens = 0;
    for (int r = 0; r < reps; ++r) {
      std::size_t count = 0;
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : count)
      {
        std::vector<std::int32_t> ids;
#pragma omp for schedule(dynamic, 256)
        for (std::ptrdiff_t i = 0; i < n; ++i) {
          ids.clear();
          tok.tokenize_ids(lines[static_cast<std::size_t>(i)], ids);
          count += ids.size();
        }
      }
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      tokens = count;
    }
    std::printf("{\"rows\": %td, \"tokens\": %zu, \"seconds\": %.4f, \"rows_per_s\": %.0f, "
                "\"tokens_per_s\": %.0f, \"threads\": %d}\n",
                n, tokens, best, static_cast<double>(n) / best, static_cast<double>(tokens) / best,
                omp_get_max_threads());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}

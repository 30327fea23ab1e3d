// ctdl-tokenize: BERT WordPiece tokens (or ids) of each line on stdin.
//
//   build/bin/ctdl-tokenize --vocab_file=vocab.txt --cased=true < text.txt
//
// One output line per input line: the tokens space-separated (--ids: the ids), exactly as
// tokenization.py's FullTokenizer: the original pipeline's rules, or Google's first BERT
// release with --tokenizer_rules=google (docs/data.md). Lines are tokenized in parallel,
// in chunks, and written in input order. Ill-formed UTF-8 stops the program with an error naming
// the line and byte. A failed write to stdout (a full disk, > /dev/full) is an error too.

#include <CLI/CLI.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ctdl/io/atomic_file.hpp>
#include <ctdl/text/tokenizer.hpp>

int main(int argc, char** argv) {
  std::string vocab_file;
  bool cased = false, ids = false, stats = false;
  std::size_t max_chars = 0;
  std::string rules_name = "original";
  int threads = 0;
  CLI::App app{"Writes the BERT WordPiece tokens of each line of stdin, space-separated"};
  app.add_option("--vocab_file", vocab_file, "vocab.txt, one token a line")->required();
  app.add_option("--cased", cased,
                 "true for cased vocabularies (BioBERT, bert-base-cased), false for uncased ones "
                 "(lower-case and strip accents)")
      ->required();
  app.add_flag("--ids", ids, "write token ids instead of tokens");
  app.add_option("--tokenizer_rules", rules_name,
                 "original: the original pipeline's tokenization.py ([UNK] above 100 characters; every C* "
                 "category dropped as control); google: Google's first BERT release (200; Cc and Cf only)")
      ->check(CLI::IsMember({"original", "google"}))
      ->capture_default_str();
  app.add_option("--max_chars_per_word", max_chars,
                 "longer words become [UNK] (default: the rules' limit, 100 original, 200 google)");
  app.add_option("--threads", threads, "tokenizer threads (default: all cores)");
  app.add_flag("--stats", stats, "print lines, tokens and lines/s to stderr at the end");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);

  try {
    const ctdl::text::FullTokenizer tok(ctdl::text::Vocab::from_file(vocab_file),
                                        {.lower_case = !cased,
                                         .rules = ctdl::text::parse_tokenizer_rules(rules_name),
                                         .max_input_chars_per_word = max_chars});
    std::ios::sync_with_stdio(false);
    const auto start = std::chrono::steady_clock::now();
    constexpr std::size_t kChunk = 16384;
    std::vector<std::string> lines(kChunk), out(kChunk);
    std::vector<std::ptrdiff_t> bad_byte(kChunk);
    std::size_t line_number = 0, tokens = 0;
    for (;;) {
      std::size_t n = 0;
      while (n < kChunk && std::getline(std::cin, lines[n])) ++n;
      if (n == 0) break;
      std::size_t chunk_tokens = 0;
#pragma omp parallel for schedule(dynamic, 64) reduction(+ : chunk_tokens)
      for (std::size_t i = 0; i < n; ++i) {
        thread_local std::vector<std::int32_t> piece_ids;
        piece_ids.clear();
        out[i].clear();
        bad_byte[i] = -1;
        try {
          tok.tokenize_ids(lines[i], piece_ids);
        } catch (const ctdl::text::InvalidUtf8& e) {
          bad_byte[i] = static_cast<std::ptrdiff_t>(e.byte);
          continue;
        }
        for (std::size_t k = 0; k < piece_ids.size(); ++k) {
          if (k) out[i] += ' ';
          if (ids) out[i] += std::to_string(piece_ids[k]);
          else out[i] += tok.vocab().token(piece_ids[k]);
        }
        out[i] += '\n';
        chunk_tokens += piece_ids.size();
      }
      for (std::size_t i = 0; i < n; ++i) {
        if (bad_byte[i] >= 0) {
          std::cout.flush();
          std::fprintf(stderr, "ctdl-tokenize: stdin:%zu: invalid UTF-8 at byte %td of the line\n",
                       line_number + i + 1, bad_byte[i] + 1);
          return 1;
        }
        std::cout << out[i];
      }
      // A full disk or a closed pipe: stop at once rather than tokenizing the rest for nothing.
      if (!std::cout) ctdl::io::check_stream_written(std::cout, "stdout");
      line_number += n;
      tokens += chunk_tokens;
    }
    // Buffered output fails only when flushed (> /dev/full): without this check the
    // program would exit 0 with its output lost.
    ctdl::io::check_stream_written(std::cout, "stdout");
    if (stats) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "ctdl-tokenize: %zu lines, %zu tokens, %.3f s, %.0f lines/s\n", line_number,
                   tokens, s, static_cast<double>(line_number) / s);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ctdl-tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}

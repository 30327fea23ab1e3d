// The whole of the shared data (consensus dev.tsv fields, BC5CDR sentences) through
// FullTokenizer under both rule sets (TokenizerRules::original, ::google), against goldens
// that tokenization.py made in the build tree under the same rules (ctest runs
// `tools/make_fixtures.py tokenizer-shared` first, as a fixture), plus the tool's texts that
// separate the two rule sets (corpus "separating"; the shared data has none). Goldens for
// one rule set but not the other, or goldens in which the two rule sets never differ (the
// tool's patch to the original's rules did not take), are a failure.
//
// Exit status 0 = all equal, 1 = a mismatch (the first ones are printed), 77 = skipped
// (no shared data, or the goldens could not be made); the reason is printed.
#include <ctdl/text/tokenizer.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

namespace fs = std::filesystem;
using namespace ctdl::text;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " <shared data dir> <goldens dir>\n";
    return 2;
  }
  const fs::path data = argv[1], goldens = argv[2];
  if (!fs::is_directory(data / "vocab")) {
    std::cout << "SKIPPED: no shared data at " << data << " (configure with -DCTDL_SHARED_DATA=...)\n";
    return 77;
  }
  int files = 0, failures = 0;
  std::size_t texts = 0, separating = 0;
  std::map<TokenizerRules, int> files_of;
  // The first rule set's expected ids, keyed by file and line, to count the texts on which
  // the two rule sets differ.
  std::map<std::pair<std::string, std::size_t>, std::vector<std::int32_t>> first_ids;
  for (auto rules : {TokenizerRules::original, TokenizerRules::google}) {
    for (const std::string casing : {"cased", "uncased"}) {
      const FullTokenizer tok(Vocab::from_file(data / "vocab" / ("bert-base-" + casing + "-vocab.txt")),
                              {.lower_case = casing == "uncased", .rules = rules});
      for (const std::string corpus : {"consensus_dev", "bc5cdr_train", "bc5cdr_devel", "separating"}) {
        const std::string key = corpus + "." + casing;
        const fs::path path = goldens / (corpus + "." + std::string(to_string(rules)) + "." + casing + ".jsonl");
        std::ifstream in(path);
        if (!in) continue;
        ++files;
        ++files_of[rules];
        std::string line;
        for (std::size_t n = 1; std::getline(in, line); ++n) {
          const auto j = nlohmann::json::parse(line);
          const std::string text = j["text"];
          const auto expected = j["ids"].get<std::vector<std::int32_t>>();
          const auto got = tok.tokenize_ids(text);
          ++texts;
          if (rules == TokenizerRules::original) {
            first_ids[{key, n}] = expected;
          } else if (auto it = first_ids.find({key, n}); it != first_ids.end()) {
            separating += it->second != expected;
          }
          if (got != expected && ++failures <= 5) {
            std::cout << path.string() << ":" << n << ": tokens differ for: " << text << "\n  expected:";
            for (auto id : expected) std::cout << ' ' << tok.vocab().token(id);
            std::cout << "\n  got:     ";
            for (auto id : got) std::cout << ' ' << tok.vocab().token(id);
            std::cout << '\n';
          }
        }
      }
    }
  }
  if (files == 0) {
    std::cout << "SKIPPED: no goldens in " << goldens
              << " (tools/make_fixtures.py tokenizer-shared could not make them; see its output)\n";
    return 77;
  }
  for (auto rules : {TokenizerRules::original, TokenizerRules::google})
    if (files_of[rules] != files / 2) {
      std::cout << goldens.string() << ": " << files_of[rules] << " golden files for the " << to_string(rules)
                << " rules of " << files << " in all; tools/make_fixtures.py tokenizer-shared makes both sets\n";
      ++failures;
    }
  if (files_of[TokenizerRules::google] > 0 && separating == 0) {
    std::cout << goldens.string() << ": the original and google goldens are the same on every text, even the "
              << "separating ones: they were not made under two different rule sets\n";
    ++failures;
  }
  std::cout << texts << " texts from " << files << " golden files (original and google rules; " << separating
            << " texts tokenized differently by the two): " << failures << " differ\n";
  return failures == 0 ? 0 : 1;
}

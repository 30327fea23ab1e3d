// The whole of the shared data (consensus dev.tsv fields, BC5CDR sentences) through
// FullTokenizer, against goldens that Google's tokenization.py made in the build tree
// (ctest runs `tools/make_fixtures.py tokenizer-shared` first, as a fixture).
//
// Exit status 0 = all equal, 1 = a mismatch (the first ones are printed), 77 = skipped
// (no shared data, or the goldens could not be made); the reason is printed.
#include <ctdl/text/tokenizer.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>

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
  std::size_t texts = 0;
  for (const std::string casing : {"cased", "uncased"}) {
    const FullTokenizer tok(Vocab::from_file(data / "vocab" / ("bert-base-" + casing + "-vocab.txt")),
                            {.lower_case = casing == "uncased"});
    for (const std::string corpus : {"consensus_dev", "bc5cdr_train", "bc5cdr_devel"}) {
      const fs::path path = goldens / (corpus + "." + casing + ".jsonl");
      std::ifstream in(path);
      if (!in) continue;
      ++files;
      std::string line;
      for (std::size_t n = 1; std::getline(in, line); ++n) {
        const auto j = nlohmann::json::parse(line);
        const std::string text = j["text"];
        const auto expected = j["ids"].get<std::vector<std::int32_t>>();
        const auto got = tok.tokenize_ids(text);
        ++texts;
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
  if (files == 0) {
    std::cout << "SKIPPED: no goldens in " << goldens
              << " (tools/make_fixtures.py tokenizer-shared could not make them; see its output)\n";
    return 77;
  }
  std::cout << texts << " texts from " << files << " golden files: " << failures << " differ\n";
  return failures == 0 ? 0 : 1;
}

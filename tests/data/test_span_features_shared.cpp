// Every shared consensus row through the feature cache (TSV reader, tokenizer, span
// features, cache, batcher) against features that tools/make_fixtures.py built in Python
// from the pipeline's rules, under both tokenizer rule sets (the original pipeline's
// tokenization.py and Google's first release; M = 128; 64 with replace_span [MASK]; 16).
// Goldens for one rule set but not the other are a failure.
//
// Exit status 0 = all equal, 1 = a mismatch (the first ones are printed), 77 = skipped.
#include <ctdl/data/batcher.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

namespace fs = std::filesystem;
using namespace ctdl;
using namespace ctdl::data;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " <shared data dir> <goldens dir> <scratch dir>\n";
    return 2;
  }
  const fs::path data = argv[1], goldens = argv[2], scratch = argv[3];
  if (!fs::is_directory(data / "consensus-example")) {
    std::cout << "SKIPPED: no shared data at " << data << " (configure with -DCTDL_SHARED_DATA=...)\n";
    return 77;
  }
  const auto vocab = text::Vocab::from_file(data / "vocab" / "bert-base-cased-vocab.txt");
  const auto labels = LabelSet::from_file((data / "consensus-example" / "labels.txt").string());
  const std::string tsv = (data / "consensus-example" / "dev.tsv").string();
  int files = 0, failures = 0;
  std::size_t rows = 0;
  std::map<text::TokenizerRules, int> files_of;
  for (auto rules : {text::TokenizerRules::original, text::TokenizerRules::google}) {
    for (const auto& [M, replace] : std::vector<std::pair<index_t, std::string>>{{128, ""}, {64, "MASK"}, {16, ""}}) {
      const std::string rules_name(text::to_string(rules));
      const fs::path path = goldens / ("consensus_dev." + rules_name + ".features.M" + std::to_string(M) +
                                       (replace.empty() ? "" : "." + replace) + ".jsonl");
      std::ifstream in(path);
      if (!in) continue;
      ++files;
      ++files_of[rules];
      const text::FullTokenizer tok(vocab, {.lower_case = false, .rules = rules});
      const SpanFeatureBuilder builder(tok, {.max_seq_length = M,
                                             .replace_span = replace.empty() ? std::nullopt : std::optional("[" + replace + "]")});
      const std::string cache_path =
          (scratch / ("consensus_dev." + rules_name + ".M" + std::to_string(M) + ".features")).string();
      prepare_span_cache(tsv, cache_path, labels, builder, tok, false);
      const FeatureCache cache(cache_path);
      Batcher batcher(cache, {.batch_size = 7, .shuffle = false});
      batcher.start_epoch(0);
      Batch batch;
      std::string line;
      index_t i = 0;
      for (std::size_t n = 1; std::getline(in, line); ++n, ++i) {
        if (i == batch.size()) {
          if (!batcher.next(batch)) break;
          i = 0;
        }
        const auto j = nlohmann::json::parse(line);
        const auto ids = j["input_ids"].get<std::vector<std::int32_t>>();
        const auto mask = j["input_mask"].get<std::vector<std::int32_t>>();
        const auto segments = j["segment_ids"].get<std::vector<std::int32_t>>();
        bool same = batch.labels.data()[i] == j["label_id"].get<std::int32_t>() &&
                    cache.source_index(batch.rows[static_cast<std::size_t>(i)]) == j["line"].get<std::uint32_t>();
        for (index_t k = 0; k < M; ++k) {
          same = same && batch.input_ids.data()[i * M + k] == ids[static_cast<std::size_t>(k)] &&
                 batch.attention_mask.data()[i * M + k] == mask[static_cast<std::size_t>(k)] &&
                 batch.token_type_ids.data()[i * M + k] == segments[static_cast<std::size_t>(k)];
        }
        ++rows;
        if (!same && ++failures <= 5) std::cout << path.string() << ":" << n << ": the feature differs\n";
      }
      if (cache.rows() != static_cast<std::size_t>(std::count(std::istreambuf_iterator<char>(std::ifstream(path).rdbuf()), {}, '\n'))) {
        std::cout << path.string() << ": " << cache.rows() << " rows in the cache, a different count in the goldens\n";
        ++failures;
      }
    }
  }
  if (files == 0) {
    std::cout << "SKIPPED: no feature goldens in " << goldens
              << " (tools/make_fixtures.py tokenizer-shared could not make them; see its output)\n";
    return 77;
  }
  for (auto rules : {text::TokenizerRules::original, text::TokenizerRules::google})
    if (files_of[rules] != files / 2) {
      std::cout << goldens.string() << ": " << files_of[rules] << " feature golden files for the "
                << text::to_string(rules) << " rules of " << files
                << " in all; tools/make_fixtures.py tokenizer-shared makes both sets\n";
      ++failures;
    }
  std::cout << rows << " features from " << files << " golden files: " << failures << " differ\n";
  return failures == 0 ? 0 : 1;
}

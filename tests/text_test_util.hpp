#pragma once
// Shared helpers for the text/ and data/ tests (light: no tensor headers).

#include <ctdl/text/tokenizer.hpp>

#include <fstream>
#include <string>
#include <vector>

namespace ctdl::test {

/// Writes `contents` to CTDL_TEST_TMP/name (bytes as given) and returns the path.
inline std::string write_file(const std::string& name, const std::string& contents) {
  const std::string path = std::string(CTDL_TEST_TMP) + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

/// The tokenizer over the committed test vocabulary (tests/fixtures/tiny_vocab.txt).
inline const text::FullTokenizer& tiny_tokenizer(bool lower_case = false) {
  static const text::Vocab vocab = text::Vocab::from_file(std::string(CTDL_FIXTURES_DIR) + "/tiny_vocab.txt");
  static const text::FullTokenizer cased(vocab, {.lower_case = false}), uncased(vocab, {.lower_case = true});
  return lower_case ? uncased : cased;
}

/// Ids as their tokens, space-separated.
inline std::string show(const text::Vocab& v, const std::vector<std::int32_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : " ") + v.token(id);
  return s;
}

}  // namespace ctdl::test

#pragma once
// Shared helpers for the text/ and data/ tests (light: no tensor headers).

#include <ctdl/text/tokenizer.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ctdl::test {

/// Writes `contents` to CTDL_TEST_TMP/name (bytes as given) and returns the path. Whole:
/// under a name of this process's, then renamed into place, so that a test process
/// reading the file while another writes the same contents (ctest -j runs the test cases
/// of one binary side by side) never sees it half written.
inline std::string write_file(const std::string& name, const std::string& contents) {
  const std::string path = std::string(CTDL_TEST_TMP) + "/" + name;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    out << contents;
    if (!out.flush()) throw std::runtime_error(tmp + ": cannot write");
  }
  std::filesystem::rename(tmp, path);
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

// The BERT tokenizers against goldens made with tokenization.py under both rule sets: the
// original pipeline's (keys "original.*") and Google's first release ("google.*")
// (tools/make_fixtures.py tokenizer -> tests/fixtures/tokenizer_goldens.json).
#include <catch2/catch.hpp>

#include <ctdl/text/tokenizer.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

#include "../test_util.hpp"

using namespace ctdl::text;
namespace fs = std::filesystem;

namespace {

const nlohmann::json& goldens() {
  static const nlohmann::json g = [] {
    std::ifstream in(fs::path(CTDL_FIXTURES_DIR) / "tokenizer_goldens.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return g;
}

std::string show(const std::vector<std::string>& tokens) {
  std::string s;
  for (const auto& t : tokens) s += (s.empty() ? "" : " ") + t;
  return s;
}

/// Checks every golden case that has `key` against `tokenize`.
template <class F>
void check_goldens(const std::string& key, F&& tokenize) {
  INFO("golden key " << key);
  int checked = 0;
  for (const auto& c : goldens()["cases"]) {
    if (!c.contains(key)) continue;
    const std::string text = c["text"];
    const auto expected = c[key].get<std::vector<std::string>>();
    INFO(key << " on: " << text);
    CHECK(show(tokenize(text)) == show(expected));
    ++checked;
  }
  CHECK(checked > 20);
}

}  // namespace

TEST_CASE("BasicTokenizer matches tokenization.py on tricky text, both rule sets") {
  for (auto rules : {TokenizerRules::original, TokenizerRules::google}) {
    const std::string name(to_string(rules));
    const auto [limit, control, unicode] = rule_set(rules);
    const BasicTokenizer cased({.lower_case = false, .control = control, .unicode = unicode}),
        uncased({.lower_case = true, .control = control, .unicode = unicode});
    check_goldens(name + ".basic_cased", [&](const std::string& t) { return cased.tokenize(t); });
    check_goldens(name + ".basic_uncased", [&](const std::string& t) { return uncased.tokenize(t); });
  }
  // Default options are the original pipeline's.
  const BasicTokenizer default_cased({.lower_case = false});
  check_goldens("original.basic_cased", [&](const std::string& t) { return default_cased.tokenize(t); });
}

TEST_CASE("FullTokenizer matches tokenization.py with the tiny vocabulary, both rule sets") {
  const auto vocab = Vocab::from_file(fs::path(CTDL_FIXTURES_DIR) / "tiny_vocab.txt");
  for (auto rules : {TokenizerRules::original, TokenizerRules::google}) {
    const std::string name(to_string(rules));
    const FullTokenizer cased(vocab, {.lower_case = false, .rules = rules}),
        uncased(vocab, {.lower_case = true, .rules = rules});
    check_goldens(name + ".tiny_cased", [&](const std::string& t) { return cased.tokenize(t); });
    check_goldens(name + ".tiny_uncased", [&](const std::string& t) { return uncased.tokenize(t); });
  }
  const FullTokenizer default_uncased(vocab, {.lower_case = true});
  check_goldens("original.tiny_uncased", [&](const std::string& t) { return default_uncased.tokenize(t); });
}

TEST_CASE("FullTokenizer matches tokenization.py with the BERT vocabularies, both rule sets") {
  const auto data = ctdl::test::shared_data_dir();
  if (!data) {
    WARN("skipped: no shared data directory (set CTDL_SHARED_DATA)");
    return;
  }
  for (auto rules : {TokenizerRules::original, TokenizerRules::google})
    for (const std::string casing : {"cased", "uncased"}) {
      const FullTokenizer tok(Vocab::from_file(*data / "vocab" / ("bert-base-" + casing + "-vocab.txt")),
                              {.lower_case = casing == "uncased", .rules = rules});
      check_goldens(std::string(to_string(rules)) + ".bert_" + casing, [&](const std::string& t) { return tok.tokenize(t); });
    }
}

TEST_CASE("the goldens separate the two rule sets") {
  // Without texts the two rule sets tokenize differently, the checks above could not tell
  // them apart.
  int separating = 0;
  for (const auto& c : goldens()["cases"])
    separating += c["original.tiny_cased"] != c["google.tiny_cased"] || c["original.basic_cased"] != c["google.basic_cased"];
  CHECK(separating >= 4);
}

TEST_CASE("tokenizer rules: the original pipeline's by default, Google's on request") {
  const auto vocab = Vocab::from_file(fs::path(CTDL_FIXTURES_DIR) / "tiny_vocab.txt");
  const FullTokenizer original(vocab, {.lower_case = false}), google(vocab, {.lower_case = false, .rules = TokenizerRules::google});
  CHECK(original.rules() == TokenizerRules::original);
  CHECK(original.wordpiece().options().max_input_chars_per_word == 100);
  CHECK(google.wordpiece().options().max_input_chars_per_word == 200);
  CHECK(WordPieceTokenizer(vocab).options().max_input_chars_per_word == 100);
  const std::string a100(100, 'a'), a101(101, 'a');
  CHECK(original.tokenize(a100).size() == 100);                                // a ##a ... : at the limit
  CHECK(original.tokenize(a101) == std::vector<std::string>{"[UNK]"});         // one over the original's limit
  CHECK(google.tokenize(a101).size() == 101);                                  // within Google's
  // Private use (Co) and unassigned (Cn) characters are control to the original only.
  CHECK(original.tokenize("a\uE000b c\u0378d") == std::vector<std::string>{"a", "##b", "c", "##d"});
  CHECK(google.tokenize("a\uE000b c\u0378d") == std::vector<std::string>{"[UNK]", "[UNK]"});
  // Tab, newline and carriage return are whitespace under both.
  for (const auto* tok : {&original, &google}) CHECK(tok->tokenize("a\tb\nc\rd").size() == 4);
  // An explicit limit overrides the rules'.
  const FullTokenizer longer(vocab, {.lower_case = false, .max_input_chars_per_word = 150});
  CHECK(longer.tokenize(a101).size() == 101);
  CHECK(parse_tokenizer_rules("google") == TokenizerRules::google);
  CHECK(parse_tokenizer_rules(to_string(TokenizerRules::original)) == TokenizerRules::original);
  CHECK_THROWS_WITH(parse_tokenizer_rules("hf"), Catch::Contains("'hf'") && Catch::Contains("original") &&
                                                     Catch::Contains("google"));
}

TEST_CASE("WordPiece: greedy longest match first, ## pieces, UNK for unmatched or long words") {
  const Vocab vocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "unaff", "a", "##a", "##b"});
  const WordPieceTokenizer wp(vocab, {.max_input_chars_per_word = 5});
  const auto pieces = [&](std::string_view w) {
    std::vector<std::int32_t> ids;
    wp.tokenize(w, ids);
    std::string s;
    for (auto id : ids) s += (s.empty() ? "" : " ") + vocab.token(id);
    return s;
  };
  CHECK(pieces("unaff") == "unaff");            // longest first piece wins
  CHECK(pieces("aaaaa") == "a ##a ##a ##a ##a");  // exactly the limit
  CHECK(pieces("aaaaaa") == "[UNK]");          // one over
  CHECK(pieces("abx") == "[UNK]");             // no piece for "x": the whole word
  CHECK(pieces("ab") == "a ##b");
  CHECK(pieces("") == "");
}

TEST_CASE("invalid UTF-8 is an error with the byte offset") {
  const BasicTokenizer basic;
  try {
    basic.tokenize(std::string_view("fine text \xE4\xB8 broken"));
    FAIL("no error");
  } catch (const InvalidUtf8& e) {
    CHECK(e.byte == 10);
    CHECK_THAT(e.what(), Catch::Contains("invalid UTF-8 at byte 11"));
  }
}

TEST_CASE("tokenizers can be shared between threads") {
  const auto vocab = Vocab::from_file(fs::path(CTDL_FIXTURES_DIR) / "tiny_vocab.txt");
  const FullTokenizer tok(vocab, {.lower_case = true});
  const std::string text = "Hello, World! unaffable Café ΟΔΟΣ 中文";
  const auto expected = tok.tokenize_ids(text);
  std::vector<int> mismatches(4, 0);
#pragma omp parallel for num_threads(4)
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 2000; ++i) mismatches[t] += tok.tokenize_ids(text) != expected;
  CHECK(mismatches == std::vector<int>(4, 0));
}

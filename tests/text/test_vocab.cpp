// Vocab: reading vocab.txt, lookups both ways, and its errors.
#include <catch2/catch.hpp>

#include <ctdl/text/vocab.hpp>

#include <filesystem>
#include <fstream>

#include "../test_util.hpp"

using namespace ctdl::text;
namespace fs = std::filesystem;

namespace {
fs::path write_file(const std::string& name, const std::string& contents) {
  const fs::path path = fs::path(CTDL_TEST_TMP) / name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}
std::string error_of(const fs::path& path) {
  try {
    Vocab::from_file(path);
  } catch (const ctdl::Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("Vocab reads one token a line, LF, CRLF or CR, stripped") {
  const auto lf = Vocab::from_file(write_file("v_lf.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n ##lo \n"));
  const auto crlf = Vocab::from_file(write_file("v_crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n##lo"));
  // Old Mac endings, and all three mixed, as Python's universal newlines read them.
  const auto cr = Vocab::from_file(write_file("v_cr.txt", "[PAD]\r[UNK]\r[CLS]\r[SEP]\rhello\r##lo\r"));
  const auto mixed = Vocab::from_file(write_file("v_mixed.txt", "[PAD]\r[UNK]\r\n[CLS]\n[SEP]\rhello\r\n##lo"));
  for (const auto* v : {&lf, &crlf, &cr, &mixed}) {
    CHECK(v->size() == 6);
    CHECK(v->find("hello") == 4);
    CHECK(v->find("##lo") == 5);
    CHECK(v->token(5) == "##lo");
    CHECK_FALSE(v->find("absent").has_value());
    CHECK(v->special().pad == 0);
    CHECK(v->special().unk == 1);
    CHECK(v->special().cls == 2);
    CHECK(v->special().sep == 3);
  }
  CHECK(lf.fingerprint() == crlf.fingerprint());
  CHECK(lf.fingerprint() == cr.fingerprint());
  CHECK(lf.fingerprint() == mixed.fingerprint());
  CHECK_THROWS_WITH(lf.token(6), Catch::Contains("token id 6 is out of range [0, 6)"));
  CHECK_THROWS_WITH(lf.require("[MASK]", "replace_span token"),
                    Catch::Contains("the replace_span token '[MASK]' is not in the vocabulary"));
}

TEST_CASE("Vocab errors name the file, the line and the problem") {
  CHECK_THAT(error_of(fs::path(CTDL_TEST_TMP) / "no_such_vocab.txt"),
             Catch::Contains("no_such_vocab.txt: cannot open the vocabulary file"));
  CHECK_THAT(error_of(write_file("v_nosep.txt", "[PAD]\n[UNK]\n[CLS]\nx\n")),
             Catch::Contains("v_nosep.txt: has no [SEP] token"));
  CHECK_THAT(error_of(write_file("v_dup.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nx\ny\nx\n")),
             Catch::Contains("v_dup.txt:7: the token 'x' is already on line 5"));
  CHECK_THAT(error_of(write_file("v_utf8.txt", "[PAD]\n[UNK]\nok\nbad\xC3(\n")),
             Catch::Contains("v_utf8.txt:4: invalid UTF-8 at byte 4"));
  CHECK_THAT(error_of(write_file("v_empty.txt", "")), Catch::Contains("v_empty.txt: the vocabulary is empty"));
}

TEST_CASE("the BERT vocabularies load with their documented special ids") {
  const auto data = ctdl::test::shared_data_dir();
  if (!data) {
    WARN("skipped: no shared data directory (set CTDL_SHARED_DATA)");
    return;
  }
  const auto cased = Vocab::from_file(*data / "vocab" / "bert-base-cased-vocab.txt");
  CHECK(cased.size() == 28996);
  CHECK(cased.special().pad == 0);
  CHECK(cased.special().unk == 100);
  CHECK(cased.special().cls == 101);
  CHECK(cased.special().sep == 102);
  CHECK(cased.token(1) == "[unused1]");
  const auto uncased = Vocab::from_file(*data / "vocab" / "bert-base-uncased-vocab.txt");
  CHECK(uncased.size() == 30522);
  CHECK(uncased.fingerprint() != cased.fingerprint());
}

TEST_CASE("Vocab reads a Hugging Face tokenizer.json (WordPiece) with the ids of vocab.txt") {
  // tests/fixtures/tiny_tokenizer.json is tiny_vocab.txt as a tokenizer.json: the same
  // token at the same id, a cased BertNormalizer.
  const std::string fixtures = CTDL_FIXTURES_DIR;
  const auto from_txt = Vocab::from_file(fixtures + "/tiny_vocab.txt");
  const auto from_json = Vocab::from_tokenizer_json(fixtures + "/tiny_tokenizer.json");
  CHECK(from_json.tokens() == from_txt.tokens());
  CHECK(from_json.fingerprint() == from_txt.fingerprint());
  CHECK(from_json.special().cls == from_txt.special().cls);
  CHECK(from_json.source() == fixtures + "/tiny_tokenizer.json");
  CHECK(Vocab::is_tokenizer_json(fixtures + "/tiny_tokenizer.json"));
  CHECK(!Vocab::is_tokenizer_json(fixtures + "/tiny_vocab.txt"));
  // By content as well as by name: a tokenizer.json under another name.
  const auto renamed = write_file("tokenizer_renamed", ctdl::test::read_file(fixtures + "/tiny_tokenizer.json"));
  CHECK(Vocab::is_tokenizer_json(renamed));
  CHECK(Vocab::from_vocab_or_tokenizer_json(renamed).tokens() == from_txt.tokens());
  CHECK(!Vocab::tokenizer_json_lowercases(fixtures + "/tiny_tokenizer.json"));
}

TEST_CASE("Vocab::tokenizer_json_lowercases reads the normalizer") {
  const auto with = [](const std::string& normalizer) {
    return Vocab::tokenizer_json_lowercases(
        write_file("tok_norm.json", R"({"normalizer": )" + normalizer + R"(, "model": {"type": "WordPiece", "vocab": {}}})"));
  };
  CHECK(with(R"({"type": "BertNormalizer", "lowercase": true})"));
  CHECK(with(R"({"type": "BertNormalizer"})"));  // Hugging Face's default
  CHECK(!with(R"({"type": "BertNormalizer", "lowercase": false})"));
  CHECK(with(R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]})"));
  CHECK(!with(R"({"type": "Sequence", "normalizers": [{"type": "NFD"}]})"));
  CHECK(!with("null"));
}

TEST_CASE("Vocab::from_tokenizer_json refuses other models and ids that are not 0..n-1 once each") {
  const auto error_of_json = [](const std::string& json) {
    const auto path = write_file("tok_bad.json", json);
    try {
      Vocab::from_tokenizer_json(path);
    } catch (const ctdl::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string specials = R"("[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3)";
  const std::string path = (fs::path(CTDL_TEST_TMP) / "tok_bad.json").string();
  CHECK(error_of_json(R"({"model": {"type": "WordPiece", "vocab": {)" + specials + R"(, "a": 4}}})") == "no error");
  CHECK(error_of_json(R"({"model": {"type": "BPE", "vocab": {)" + specials + R"(}, "merges": []}})") ==
        path + ": the tokenizer's model is BPE, not WordPiece: ctdl reads the WordPiece vocabularies of BERT models only");
  CHECK(error_of_json(R"({"model": {"type": "WordPiece", "vocab": {)" + specials + R"(, "a": 5}}})") ==
        path + ": model.vocab \"a\" has the id 5; ids must be 0..4 (one per token)");
  CHECK(error_of_json(R"({"model": {"type": "WordPiece", "vocab": {)" + specials + R"(, "a": 3}}})") ==
        path + ": model.vocab gives the id 3 to both \"[SEP]\" and \"a\"; ids must be 0..4, each once");
  CHECK_THAT(error_of_json(R"({"model": {"type": "WordPiece", "vocab": {)" + specials + R"(, "a": -1}}})"),
             Catch::Contains("model.vocab \"a\" has the id -1"));
  CHECK(error_of_json(R"({"model": {"type": "WordPiece", "vocab": [1]}})") == path + ": model.vocab is not an object of token: id");
  CHECK(error_of_json(R"({"version": "1.0"})") == path + ": has no \"model\" object (not a tokenizer.json?)");
  CHECK_THAT(error_of_json("{"), Catch::StartsWith(path + ": not valid JSON"));
  CHECK_THAT(error_of_json(std::string(100000, '[')), Catch::Equals(path + ": the JSON nests more than 64 levels deep (not a tokenizer.json)"));
  CHECK_THAT(error_of_json(R"({"model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2}}})"),
             Catch::Contains(path + ": has no [SEP] token"));
}

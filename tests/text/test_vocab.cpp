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

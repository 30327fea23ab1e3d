// ConllEvaluator against the CoNLL-2000 script conlleval.pl: its reports on the inputs in
// tests/fixtures/conlleval/ (made by tools/make_conlleval_fixture.py, which ran the script),
// byte for byte; and chunk counts worked by hand.
#include <catch2/catch.hpp>

#include <ctdl/metrics/conlleval.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace conlleval_test {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The script's reading of its input: fields split at single spaces; an empty line, or
/// one whose first field is -X-, is a sentence boundary; the last two fields are the
/// gold and predicted tags.
ctdl::metrics::ConllScores score_file(const std::string& path) {
  ctdl::metrics::ConllEvaluator eval;
  std::istringstream in(read_all(path));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> fields;
    std::size_t at = 0;
    for (std::size_t space; (space = line.find(' ', at)) != std::string::npos; at = space + 1)
      fields.push_back(line.substr(at, space - at));
    fields.push_back(line.substr(at));
    if (line.empty() || fields[0] == "-X-") {
      eval.end_sentence();
      continue;
    }
    REQUIRE(fields.size() >= 3);
    eval.add(fields[fields.size() - 2], fields[fields.size() - 1]);
  }
  return eval.scores();
}

}  // namespace conlleval_test

TEST_CASE("conlleval: the script's report on every fixture, byte for byte") {
  const std::string dir = std::string(CTDL_FIXTURES_DIR) + "/conlleval/";
  for (const char* name : {"untyped_bio", "typed_iob2", "every_tag", "open_at_end", "empty"}) {
    INFO(name);
    const auto scores = conlleval_test::score_file(dir + name + ".txt");
    CHECK(scores.report() == conlleval_test::read_all(dir + name + ".expected"));
  }
}

TEST_CASE("conlleval: chunk counts and scores by hand") {
  using ctdl::metrics::ConllEvaluator;
  ConllEvaluator eval;
  // gold:      [Chemical aspirin] and [Disease renal failure]
  // predicted: [Chemical aspirin] and [Disease renal] failure    (the second chunk ends early)
  eval.add("B-Chemical", "B-Chemical");
  eval.add("O", "O");
  eval.add("B-Disease", "B-Disease");
  eval.add("I-Disease", "O");
  eval.end_sentence();
  // gold: [B x y] (IOB1: a chunk may start with I);  predicted the same, then a spurious one
  eval.add("I-Chemical", "I-Chemical");
  eval.add("I-Chemical", "I-Chemical");
  eval.add("O", "B-Disease");
  const auto s = eval.scores();  // the last chunk is still open: scores() closes it
  CHECK(s.words == 7);
  CHECK(s.correct_words == 5);
  CHECK(s.accuracy == Approx(5.0 / 7));
  CHECK(s.overall.gold == 3);
  CHECK(s.overall.predicted == 4);
  CHECK(s.overall.correct == 2);
  CHECK(s.overall.precision == Approx(0.5));
  CHECK(s.overall.recall == Approx(2.0 / 3));
  CHECK(s.overall.f1 == Approx(2 * 0.5 * (2.0 / 3) / (0.5 + 2.0 / 3)));
  REQUIRE(s.per_type.size() == 2);
  CHECK(s.per_type.at("Chemical").correct == 2);
  CHECK(s.per_type.at("Chemical").f1 == Approx(1.0));
  CHECK(s.per_type.at("Disease").gold == 1);
  CHECK(s.per_type.at("Disease").predicted == 2);
  CHECK(s.per_type.at("Disease").correct == 0);
  CHECK(s.per_type.at("Disease").f1 == 0.0);
  CHECK_FALSE(s.untyped_in_both);
}

TEST_CASE("conlleval: a correct chunk needs the same end and the same type throughout") {
  using ctdl::metrics::ConllEvaluator;
  ConllEvaluator longer;  // predicted runs one word past the gold chunk
  longer.add("B", "B");
  longer.add("O", "I");
  CHECK(longer.scores().overall.correct == 0);
  ConllEvaluator retyped;  // same boundaries, the type changes inside the prediction
  retyped.add("B-A", "B-A");
  retyped.add("I-A", "I-B");
  CHECK(retyped.scores().overall.correct == 0);
  ConllEvaluator split;  // a sentence boundary ends every chunk: two gold chunks, not one
  split.add("B", "B");
  split.end_sentence();
  split.add("I", "I");
  const auto s = split.scores();
  CHECK(s.overall.gold == 2);
  CHECK(s.overall.correct == 2);
  CHECK(s.untyped_in_both);
}

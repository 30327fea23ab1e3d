// CoNLL / BC5CDR reader and token (NER) features.
#include <catch2/catch.hpp>

#include <ctdl/data/feature_cache.hpp>

#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "../text_test_util.hpp"

using namespace ctdl;
using namespace ctdl::data;

namespace {
const LabelSet kBio({"B", "I", "O"});
}  // namespace

TEST_CASE("sentences: first field the token, last the label, blank lines between, CRLF") {
  const auto path = test::write_file("ner.tsv",
                               "-DOCSTART- -X- -X- O\r\n\r\n"
                               "Naloxone\t227508\t0\tB\r\nreverses\t-\t9\tO\r\n\r\n\r\n"
                               "the O\r\n  \r\nclonidine\t-\t49\tB");
  ConllReader reader(path, &kBio);
  Sentence s;
  REQUIRE(reader.next(s));
  CHECK(s.words == std::vector<std::string_view>{"Naloxone", "reverses"});
  CHECK(s.labels == std::vector<std::string_view>{"B", "O"});
  CHECK(s.label_ids == std::vector<std::int32_t>{0, 2});
  CHECK(s.first_line == 3);
  CHECK(s.index == 0);
  REQUIRE(reader.next(s));
  CHECK(s.words == std::vector<std::string_view>{"the"});
  REQUIRE(reader.next(s));
  CHECK(s.words == std::vector<std::string_view>{"clonidine"});
  CHECK(s.index == 2);
  CHECK_FALSE(reader.next(s));
  CHECK(collect_conll_labels(path).names() == std::vector<std::string>{"B", "O"});
}

TEST_CASE("bad token lines: errors with file:line, or the sentence is skipped and counted") {
  const auto path = test::write_file("ner_bad.tsv", "a\tB\nb\tO\n\nlonely\nc\tO\n\nd\tX\n\ne\tI\n");
  {
    ConllReader reader(path, &kBio);
    Sentence s;
    REQUIRE(reader.next(s));
    CHECK_THROWS_WITH(reader.next(s), Catch::Contains("ner_bad.tsv:4: has 1 field; a token line needs the token first"));
  }
  ConllReader reader(path, &kBio, {.skip_bad_rows = true});
  Sentence s;
  std::vector<std::string_view> firsts;
  while (reader.next(s)) firsts.push_back(s.words.front());
  CHECK(firsts == std::vector<std::string_view>{"a", "e"});
  CHECK(reader.skipped() == 2);
  CHECK_THAT(reader.skipped_messages().at(1), Catch::Contains("ner_bad.tsv:7: the label 'X' is not in"));
}

TEST_CASE("CoNLL: CR-only line endings end lines, and skipped sentences are reported with line and index") {
  const auto path = test::write_file("ner_cr.tsv", "a\tB\rb\tO\r\rlonely\rc\tO\r\rd\tI\r");
  std::vector<SkippedRow> skipped;
  ConllReader reader(path, &kBio, {.skip_bad_rows = true, .on_skip = [&](const SkippedRow& r) { skipped.push_back(r); }});
  Sentence s;
  REQUIRE(reader.next(s));
  CHECK(s.words == std::vector<std::string_view>{"a", "b"});
  REQUIRE(reader.next(s));
  CHECK(s.words == std::vector<std::string_view>{"d"});
  CHECK(s.first_line == 7);
  CHECK(s.index == 2);
  CHECK_FALSE(reader.next(s));
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].line == 4);
  CHECK(skipped[0].ids == "1");
  CHECK_THAT(skipped[0].reason, Catch::StartsWith("has 1 field"));

  // The token cache passes them on whether it is built or reused.
  const std::string cache_path = std::string(CTDL_TEST_TMP) + "/ner_cr.features";
  std::filesystem::remove(cache_path);
  const TokenFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 8});
  for (const bool reused : {false, true}) {
    std::vector<SkippedRow> listed;
    const auto report = prepare_token_cache(path, cache_path, kBio, builder, test::tiny_tokenizer(), true, {},
                                            [&](const SkippedRow& r) { listed.push_back(r); });
    CHECK(report.rebuilt == !reused);
    CHECK(report.rows == 2);
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].line == 4);
    CHECK(listed[0].ids == "1");
  }
  // Reused without skip_bad_rows, the cache does not hide the bad sentence: it stops the
  // call, as it stops a fresh build.
  CHECK_THROWS_WITH(prepare_token_cache(path, cache_path, kBio, builder, test::tiny_tokenizer(), false),
                    Catch::Contains(":4: has 1 field"));
}

TEST_CASE("token features: first piece labelled, other pieces -1, long sentences split at words") {
  const auto& v = test::tiny_tokenizer().vocab();
  Sentence s;
  s.words = {"unaffable", "hello", "\xE2\x80\x8B", "world"};  // the third is a zero-width space only
  s.label_ids = {0, 2, 2, 1};
  s.index = 7;
  std::vector<TokenFeature> out;
  TokenFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 16}).build(s, out);
  REQUIRE(out.size() == 1);
  CHECK(test::show(v, out[0].input_ids) == "[CLS] un ##aff ##able hello [UNK] world [SEP] [PAD] [PAD] [PAD] [PAD] [PAD] [PAD] [PAD] [PAD]");
  CHECK(out[0].label_ids == std::vector<std::int32_t>{-1, 0, -1, -1, 2, 2, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1});
  CHECK(out[0].sentence == 7);

  out.clear();
  TokenFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 6}).build(s, out);  // 4 pieces a feature
  REQUIRE(out.size() == 2);
  CHECK(test::show(v, out[0].input_ids) == "[CLS] un ##aff ##able hello [SEP]");
  CHECK(test::show(v, out[1].input_ids) == "[CLS] [UNK] world [SEP] [PAD] [PAD]");
  CHECK(out[1].first_word == 2);
  CHECK(out[1].label_ids == std::vector<std::int32_t>{-1, 2, 1, -1, -1, -1});

  out.clear();
  TokenFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 4}).build(s, out);  // a word longer than M-2 keeps M-2 pieces
  REQUIRE(out.size() == 3);
  CHECK(test::show(v, out[0].input_ids) == "[CLS] un ##aff [SEP]");
  CHECK(out[0].label_ids == std::vector<std::int32_t>{-1, 0, -1, -1});
}

TEST_CASE("BC5CDR: every word of every sentence is scored exactly once, at every length") {
  const auto data = test::shared_data_dir();
  if (!data) {
    WARN("skipped: no shared data directory (set CTDL_SHARED_DATA)");
    return;
  }
  const std::string path = (*data / "bc5cdr-chem" / "train.tsv").string();
  const auto labels = collect_conll_labels(path);
  CHECK(labels.names() == std::vector<std::string>{"B", "I", "O"});
  const text::FullTokenizer tok(text::Vocab::from_file(*data / "vocab" / "bert-base-cased-vocab.txt"),
                                {.lower_case = false});
  for (const index_t M : {128, 16}) {
    const std::string cache_path = std::string(CTDL_TEST_TMP) + "/bc5cdr_train.M" + std::to_string(M) + ".features";
    const TokenFeatureBuilder builder(tok, {.max_seq_length = M});
    const auto report = prepare_token_cache(path, cache_path, labels, builder, tok, false);
    const FeatureCache cache(cache_path);
    CHECK(cache.kind() == FeatureKind::token);
    ConllReader reader(path, &labels);
    Sentence s;
    std::size_t words = 0, sentences = 0;
    std::vector<std::size_t> label_count(3);
    while (reader.next(s)) {
      ++sentences;
      words += s.words.size();
      for (auto id : s.label_ids) ++label_count[static_cast<std::size_t>(id)];
    }
    CHECK(sentences == 5234);  // as tools/make_fixtures.py counts them
    std::size_t scored = 0;
    std::vector<std::size_t> scored_count(3);
    for (std::size_t r = 0; r < cache.rows(); ++r) {
      const auto* ids = cache.input_ids(r);
      const auto* lab = cache.label_ids(r);
      REQUIRE(ids[0] == tok.vocab().special().cls);
      index_t sep = 1;
      while (ids[sep] != tok.vocab().special().sep) ++sep;
      REQUIRE(sep <= M - 1);
      for (index_t k = 0; k < M; ++k)
        if (lab[k] >= 0) {
          REQUIRE((k > 0 && k < sep));
          ++scored;
          ++scored_count[static_cast<std::size_t>(lab[k])];
        }
    }
    INFO("M = " << M << ": " << cache.rows() << " features");
    CHECK(scored == words);
    CHECK(scored_count == label_count);
    if (M == 16) CHECK(cache.rows() > sentences);  // long sentences were split
    CHECK(report.skipped == 0);
  }
}

namespace {
/// The word counts of the pieces NVIDIA's TensorFlow run_ner.py (_read_data) cuts a
/// sentence into, written as that code is: while more than 30 words remain, take the first
/// 30 labels, pop from their end up to and including the first "O" popped (or all of them),
/// and cut after what is left plus one word.
std::vector<std::size_t> read_data_pieces(std::vector<std::string> labels) {
  std::vector<std::size_t> pieces;
  while (labels.size() > 30) {
    std::vector<std::string> tmplabel(labels.begin(), labels.begin() + 30);
    for (std::size_t iidx = 0; iidx < 30; ++iidx) {
      const std::string popped = tmplabel.back();
      tmplabel.pop_back();
      if (popped == "O") break;
    }
    const std::size_t n = tmplabel.size() + 1;
    pieces.push_back(n);
    labels.erase(labels.begin(), labels.begin() + static_cast<std::ptrdiff_t>(n));
  }
  if (!labels.empty()) pieces.push_back(labels.size());
  return pieces;
}

/// The word counts of the features of one sentence (its words are one piece each).
std::vector<std::size_t> feature_words(const std::vector<TokenFeature>& features) {
  std::vector<std::size_t> n;
  for (const auto& f : features)
    n.push_back(static_cast<std::size_t>(std::count_if(f.label_ids.begin(), f.label_ids.end(), [](auto y) { return y >= 0; })));
  return n;
}
}  // namespace

TEST_CASE("token features: max_words cuts long sentences where the TensorFlow run_ner.py cuts them") {
  const TokenFeatureBuilder cut(test::tiny_tokenizer(), {.max_seq_length = 128, .max_words = 30, .cut_label = 2});
  const auto sentence = [](const std::vector<std::string>& tags) {
    Sentence s;
    for (const auto& t : tags) {
      s.words.push_back("c");
      s.label_ids.push_back(*kBio.find(t));
    }
    return s;
  };
  // 35 words, O at 10 and 25: cut after 25 (the last O of the first 30), then 9 words.
  std::vector<std::string> tags(35, "B");
  tags[10] = tags[25] = "O";
  std::vector<TokenFeature> out;
  cut.build(sentence(tags), out);
  CHECK(feature_words(out) == std::vector<std::size_t>{26, 9});
  CHECK(feature_words(out) == read_data_pieces(tags));
  CHECK(out[1].first_word == 26);
  // No O at all: one word at a time until 30 are left.
  out.clear();
  cut.build(sentence(std::vector<std::string>(65, "I")), out);
  CHECK(out.size() == 36);
  CHECK(feature_words(out) == read_data_pieces(std::vector<std::string>(65, "I")));
  // An O as the 30th word: 30 words, and exactly 30 are never cut.
  tags.assign(60, "B");
  tags[29] = "O";
  out.clear();
  cut.build(sentence(tags), out);
  CHECK(feature_words(out) == std::vector<std::size_t>{30, 30});
  // Without labels: every 30 words.
  Sentence bare = sentence(std::vector<std::string>(65, "O"));
  bare.label_ids.clear();
  out.clear();
  cut.build(bare, out);
  REQUIRE(out.size() == 3);
  CHECK((out[0].first_word == 0 && out[1].first_word == 30 && out[2].first_word == 60));
  // With too few pieces for 30 words, features are also cut by M - 2 pieces (M = 12 here).
  out.clear();
  TokenFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 12, .max_words = 30, .cut_label = 2})
      .build(sentence(std::vector<std::string>(35, "O")), out);
  CHECK(feature_words(out) == std::vector<std::size_t>{10, 10, 10, 5});  // 30 | 5, each cut by 10 pieces
}

TEST_CASE("BC5CDR: max_words gives every sentence the pieces of the TensorFlow run_ner.py") {
  const auto data = test::shared_data_dir();
  if (!data) {
    WARN("skipped: no shared data directory (set CTDL_SHARED_DATA)");
    return;
  }
  const std::string path = (*data / "bc5cdr-chem" / "train.tsv").string();
  const auto labels = collect_conll_labels(path);
  const text::FullTokenizer tok(text::Vocab::from_file(*data / "vocab" / "bert-base-cased-vocab.txt"),
                                {.lower_case = false});
  // M = 512: no 30 words of this set fill 510 pieces, so the cut alone makes the features.
  const TokenFeatureBuilder builder(tok, {.max_seq_length = 512, .max_words = 30, .cut_label = *labels.find("O")});
  ConllReader reader(path, &labels);
  std::size_t cut_sentences = 0, sentences = 0;
  for (Sentence s; reader.next(s); ++sentences) {
    std::vector<std::string> tags;
    for (auto id : s.label_ids) tags.push_back(labels.name(id));
    std::vector<TokenFeature> out;
    builder.build(s, out);
    const auto want = read_data_pieces(tags);
    INFO("sentence " << s.index << " of " << s.words.size() << " words");
    REQUIRE(feature_words(out) == want);
    cut_sentences += want.size() > 1;
  }
  CHECK(sentences == 5234);
  CHECK(cut_sentences > 500);  // long sentences are common in PubMed abstracts
}

TEST_CASE("tensorflow_token_labels: every position a class, as the TensorFlow run_ner.py labels them") {
  // [CLS] un ##aff hello world [SEP] [PAD] [PAD]: B at "un", O at "hello", I at "world".
  std::vector<std::int32_t> y{-1, 0, -1, 2, 1, -1, -1, -1};
  tensorflow_token_labels(y.data(), 8, 6, 3);
  CHECK(y == std::vector<std::int32_t>{5, 1, 4, 3, 2, 6, 0, 0});  // [CLS]=5, B=1, X=4, O=3, I=2, [SEP]=6, padding 0
  CHECK(token_class_names(TokenScheme::tensorflow, {"B", "I", "O"}) ==
        std::vector<std::string>{"[padding]", "B", "I", "O", "X", "[CLS]", "[SEP]"});
  CHECK(token_class_names(TokenScheme::first_piece, {"B", "I", "O"}) == std::vector<std::string>{"B", "I", "O"});
  std::vector<std::int32_t> on_sep{-1, 0, 1, -1};
  CHECK_THROWS_WITH(tensorflow_token_labels(on_sep.data(), 4, 3, 3), Catch::Contains("label 1 at position 2 of 3 tokens"));
  std::vector<std::int32_t> too_big{-1, 3, -1, -1};
  CHECK_THROWS_WITH(tensorflow_token_labels(too_big.data(), 4, 3, 3), Catch::Contains("label 3 at position 1"));
  CHECK_THROWS_WITH(tensorflow_token_labels(too_big.data(), 4, 5, 3), Catch::Contains("a row of 5 tokens in a batch 4 wide"));
}

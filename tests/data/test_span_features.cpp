// Span features: the original pipeline's rules, a worked example, and the shared rows.
#include <catch2/catch.hpp>

#include <ctdl/data/span_features.hpp>
#include <ctdl/data/span_tsv.hpp>

#include "../test_util.hpp"
#include "../text_test_util.hpp"

using namespace ctdl;
using namespace ctdl::data;

TEST_CASE("worked example (docs/data.md): left padding, truncation to M-1, SEP and PAD") {
  const auto& v = test::tiny_tokenizer().vocab();
  const SpanFeatureBuilder m8(test::tiny_tokenizer(), {.max_seq_length = 8});
  // c = 4: three left slots; "hello world" fills two, so one [PAD] comes first. The
  // sequence reaches 10 tokens before [SEP], so the first 7 are kept.
  const auto ids = m8.build("hello world", "unaffable", "the effect of");
  CHECK(test::show(v, ids) == "[CLS] [PAD] hello world un ##aff ##able [SEP]");
  std::vector<std::int32_t> mask;
  for (auto id : ids) mask.push_back(m8.mask(id));
  CHECK(mask == std::vector<std::int32_t>{1, 0, 1, 1, 1, 1, 1, 1});

  // A long left context keeps its last c-1 pieces; replace_span stands in for the span;
  // a short sequence is padded after [SEP].
  const SpanFeatureBuilder replaced(test::tiny_tokenizer(), {.max_seq_length = 8, .replace_span = "[MASK]"});
  CHECK(test::show(v, replaced.build("a b c d e", "anything at all", "")) == "[CLS] c d e [MASK] [SEP] [PAD] [PAD]");

  // Exactly M-1 tokens before [SEP]: nothing cut, no padding.
  CHECK(test::show(v, m8.build("a b c", "d", "e b")) == "[CLS] a b c d e b [SEP]");
  // Empty everything: c-1 [PAD]s, [SEP], then padding.
  CHECK(test::show(v, m8.build("", "", "")) == "[CLS] [PAD] [PAD] [PAD] [SEP] [PAD] [PAD] [PAD]");
}

TEST_CASE("odd max_seq_length: c = M / 2 rounds down") {
  const SpanFeatureBuilder m9(test::tiny_tokenizer(), {.max_seq_length = 9});  // c = 4
  CHECK(test::show(test::tiny_tokenizer().vocab(), m9.build("a", "b", "c d e f g")) == "[CLS] [PAD] [PAD] a b c d e [SEP]");
}

TEST_CASE("feature builder errors") {
  CHECK_THROWS_WITH(SpanFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 8, .replace_span = "[ENT]"}),
                    Catch::Contains("the replace_span token '[ENT]' is not in the vocabulary"));
  CHECK_THROWS_WITH(SpanFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 2}), Catch::Contains("max_seq_length 2 is too small"));
}

TEST_CASE("the rules hold on every shared consensus row") {
  const auto data = test::shared_data_dir();
  if (!data) {
    WARN("skipped: no shared data directory (set CTDL_SHARED_DATA)");
    return;
  }
  const text::FullTokenizer tok(text::Vocab::from_file(*data / "vocab" / "bert-base-cased-vocab.txt"),
                                {.lower_case = false});
  const auto labels = LabelSet::from_file((*data / "consensus-example" / "labels.txt").string());
  const auto sp = tok.vocab().special();
  for (const index_t M : {16, 64, 128, 256}) {
    const std::size_t c = static_cast<std::size_t>(M) / 2;
    const SpanFeatureBuilder builder(tok, {.max_seq_length = M});
    SpanTsvReader reader((*data / "consensus-example" / "dev.tsv").string(), labels);
    SpanRow row;
    std::size_t rows = 0, cut = 0, left_padded = 0;
    while (reader.next(row)) {
      ++rows;
      const auto ids = builder.build(row.left, row.span, row.right);
      const auto left = tok.tokenize_ids(row.left), span = tok.tokenize_ids(row.span),
                 right = tok.tokenize_ids(row.right);
      INFO("M = " << M << ", line " << row.line);
      REQUIRE(ids.size() == static_cast<std::size_t>(M));
      CHECK(ids[0] == sp.cls);
      // positions 1 .. c-1: the last c-1 left pieces, or [PAD]s then all of them
      const std::size_t kept = std::min(left.size(), c - 1);
      for (std::size_t i = 1; i < c - kept; ++i) CHECK(ids[i] == sp.pad);
      CHECK(std::equal(left.end() - static_cast<std::ptrdiff_t>(kept), left.end(), ids.begin() + static_cast<std::ptrdiff_t>(c - kept)));
      left_padded += left.size() < c - 1;
      // from position c: span then right pieces, cut so that [SEP] is at most at M-1
      std::vector<std::int32_t> rest(span);
      rest.insert(rest.end(), right.begin(), right.end());
      const std::size_t body = std::min(rest.size(), static_cast<std::size_t>(M) - 1 - c);
      cut += rest.size() > body;
      CHECK(std::equal(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(body), ids.begin() + static_cast<std::ptrdiff_t>(c)));
      CHECK(ids[c + body] == sp.sep);
      for (std::size_t i = c + body + 1; i < ids.size(); ++i) CHECK(ids[i] == sp.pad);
    }
    CHECK(rows == 1000);
    CHECK(cut > 0);  // the data exercises truncation ...
    if (M >= 256) CHECK(left_padded > 0);  // ... and, with room, left padding
  }
}

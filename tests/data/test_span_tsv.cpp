// The span-classification TSV reader.
#include <catch2/catch.hpp>

#include <ctdl/data/span_tsv.hpp>

#include <fstream>

#include "../test_util.hpp"
#include "../text_test_util.hpp"

using namespace ctdl::data;

namespace {
const LabelSet kLabels({"che", "dis", "ggp", "org", "out"});

std::vector<SpanRow> read_all(SpanTsvReader& r) {
  std::vector<SpanRow> rows;
  SpanRow row;
  while (r.next(row)) rows.push_back(row);
  return rows;
}
}  // namespace

TEST_CASE("rows: last four columns are label, left, span, right, leading columns are ids, LF and CRLF") {
  const std::string body = "12\tT5\tche\tleft ctx\taspirin\tright ctx\n"
                           "dis\t\tfever\t\n"                      // no ids, empty contexts
                           "\n"                                     // blank: skipped
                           "a\tb\tc\tout\tl\ts\tr";                 // three ids, no final newline
  for (const std::string eol : {"\n", "\r\n"}) {
    std::string text = body;
    if (eol == "\r\n")
      for (std::size_t p = 0; (p = text.find('\n', p)) != std::string::npos; p += 2) text.replace(p, 1, "\r\n");
    SpanTsvReader reader(ctdl::test::write_file("rows" + std::to_string(eol.size()) + ".tsv", text), kLabels);
    const auto rows = read_all(reader);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].ids == std::vector<std::string_view>{"12", "T5"});
    CHECK(rows[0].label == "che");
    CHECK(rows[0].label_id == 0);
    CHECK(rows[0].left == "left ctx");
    CHECK(rows[0].span == "aspirin");
    CHECK(rows[0].right == "right ctx");
    CHECK(rows[0].line == 1);
    CHECK(rows[1].ids.empty());
    CHECK(rows[1].left.empty());
    CHECK(rows[1].right.empty());  // no '\r' left over
    CHECK(rows[1].label_id == 1);
    CHECK(rows[2].ids.size() == 3);
    CHECK(rows[2].right == "r");
    CHECK(rows[2].line == 4);
    CHECK(reader.skipped() == 0);
  }
}

TEST_CASE("bad rows are errors naming file:line, or skipped and counted") {
  const std::string text = "che\tl\ts\tr\n"
                           "only\tthree\tcolumns\n"
                           "xyz\tl\ts\tr\n"
                           "out\tl\t\xC3\x28\tr\n"
                           "org\tl\ts\tr\n";
  const auto path = ctdl::test::write_file("bad.tsv", text);
  {
    SpanTsvReader reader(path, kLabels);
    SpanRow row;
    CHECK(reader.next(row));
    CHECK_THROWS_WITH(reader.next(row), Catch::Contains("bad.tsv:2: has 3 columns; a row needs at least 4"));
  }
  SpanTsvReader reader(path, kLabels, {.skip_bad_rows = true});
  const auto rows = read_all(reader);
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].label == "org");
  CHECK(rows[1].line == 5);
  CHECK(reader.skipped() == 3);
  REQUIRE(reader.skipped_messages().size() == 3);
  CHECK_THAT(reader.skipped_messages()[1],
             Catch::Contains("bad.tsv:3: the label 'xyz' is not in <labels> (che, dis, ggp, org, out)"));
  CHECK_THAT(reader.skipped_messages()[2], Catch::Contains("bad.tsv:4: invalid UTF-8 at byte 7 of the line"));
}

TEST_CASE("CR-only line endings (old Mac) end rows, as LF and CRLF do, also mixed in one file") {
  std::string text;
  for (int i = 0; i < 20; ++i) text += "doc" + std::to_string(i) + "\tche\tl\ts\tr\r";
  SpanTsvReader reader(ctdl::test::write_file("cr_only.tsv", text), kLabels);
  const auto rows = read_all(reader);
  REQUIRE(rows.size() == 20);
  CHECK(rows[19].ids == std::vector<std::string_view>{"doc19"});
  CHECK(rows[19].right == "r");
  CHECK(rows[19].line == 20);
  // LF, CRLF and CR in one file; the line numbers count each ending once.
  SpanTsvReader mixed(ctdl::test::write_file("mixed_eol.tsv", "che\ta\tb\tc\rdis\td\te\tf\r\nout\tg\th\ti\n\rorg\tj\tk\tl\r"),
                      kLabels);
  const auto m = read_all(mixed);
  REQUIRE(m.size() == 4);
  CHECK(m[1].right == "f");
  CHECK(m[2].line == 3);
  CHECK(m[3].label == "org");
  CHECK(m[3].line == 5);  // line 4 is the blank one between "\n" and "\r"
  CHECK(m[3].right == "l");
}

TEST_CASE("skip_bad_rows reports every skipped row: line, id columns, reason") {
  std::string text;
  for (int i = 1; i <= 30; ++i)  // 15 bad rows: more than the kept messages
    text += i % 2 ? "id" + std::to_string(i) + "\tT" + std::to_string(i) + "\tche\tl\ts\tr\n"
                  : "id" + std::to_string(i) + "\tT" + std::to_string(i) + "\tnope\tl\ts\tr\n";
  text += "only\tthree\tcolumns\n";
  text += "\xFF\tT9\tche\tl\t\xC3\x28\tr\n";
  std::vector<SkippedRow> skipped;
  SpanTsvReader reader(ctdl::test::write_file("skipped.tsv", text), kLabels,
                       {.skip_bad_rows = true, .on_skip = [&](const SkippedRow& r) { skipped.push_back(r); }});
  CHECK(read_all(reader).size() == 15);
  REQUIRE(skipped.size() == 17);
  CHECK(reader.skipped() == 17);
  CHECK(reader.skipped_messages().size() == 10);
  CHECK(skipped[0].line == 2);
  CHECK(skipped[0].ids == "id2\tT2");
  CHECK(skipped[0].reason == "the label 'nope' is not in <labels> (che, dis, ggp, org, out)");
  CHECK(skipped[14].line == 30);
  CHECK(skipped[14].ids == "id30\tT30");
  CHECK(skipped[15].line == 31);
  CHECK(skipped[15].ids.empty());
  CHECK_THAT(skipped[15].reason, Catch::StartsWith("has 3 columns"));
  CHECK(skipped[16].line == 32);
  CHECK(skipped[16].ids == "\xEF\xBF\xBD\tT9");  // ill-formed id bytes are not copied out
  CHECK_THAT(skipped[16].reason, Catch::StartsWith("invalid UTF-8 at byte 1"));
}

TEST_CASE("the shared consensus rows read whole") {
  const auto data = ctdl::test::shared_data_dir();
  if (!data) {
    WARN("skipped: no shared data directory (set CTDL_SHARED_DATA)");
    return;
  }
  const auto labels = LabelSet::from_file((*data / "consensus-example" / "labels.txt").string());
  SpanTsvReader reader((*data / "consensus-example" / "dev.tsv").string(), labels);
  const auto rows = read_all(reader);
  REQUIRE(rows.size() == 1000);
  std::vector<int> per_label(labels.size());
  for (const auto& r : rows) {
    CHECK(r.ids.size() == 2);
    ++per_label[static_cast<std::size_t>(r.label_id)];
  }
  CHECK(per_label == std::vector<int>{195, 116, 110, 102, 477});  // data/README.md
}

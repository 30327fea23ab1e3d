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

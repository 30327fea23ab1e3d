// LabelSet: labels.txt rules.
#include <catch2/catch.hpp>

#include <ctdl/data/labels.hpp>

#include <fstream>
#include "../text_test_util.hpp"

using namespace ctdl::data;

TEST_CASE("labels.txt: stripped, blank lines ignored, ids in sorted order") {
  const auto labels = LabelSet::from_file(ctdl::test::write_file("labels_a.txt", "out\r\n che \n\ndis\r\nggp\norg"));
  REQUIRE(labels.size() == 5);
  CHECK(labels.names() == std::vector<std::string>{"che", "dis", "ggp", "org", "out"});
  CHECK(labels.find("che") == 0);
  CHECK(labels.find("out") == 4);
  CHECK_FALSE(labels.find("Che").has_value());
  CHECK(labels.name(2) == "ggp");
  CHECK(labels.joined() == "che, dis, ggp, org, out");
  CHECK(labels.fingerprint() == LabelSet({"che", "dis", "ggp", "org", "out"}).fingerprint());
  CHECK(labels.fingerprint() != LabelSet({"che", "dis", "ggp", "org"}).fingerprint());
}

TEST_CASE("labels.txt errors name the file and line") {
  CHECK_THROWS_WITH(LabelSet::from_file(ctdl::test::write_file("labels_dup.txt", "che\ndis\n che\n")),
                    Catch::Contains("labels_dup.txt:3: the label 'che' is already on line 1"));
  CHECK_THROWS_WITH(LabelSet::from_file(ctdl::test::write_file("labels_empty.txt", "\n  \n")),
                    Catch::Contains("labels_empty.txt: no labels"));
  CHECK_THROWS_WITH(LabelSet::from_file(std::string(CTDL_TEST_TMP) + "/no_labels.txt"),
                    Catch::Contains("no_labels.txt: cannot open"));
  CHECK_THROWS_WITH(LabelSet::from_file(ctdl::test::write_file("labels_utf8.txt", "ok\n\xFF\n")),
                    Catch::Contains("labels_utf8.txt:2: invalid UTF-8"));
}

TEST_CASE("labels.txt with CR-only line endings (old Mac) is one label a line") {
  const auto labels = LabelSet::from_file(ctdl::test::write_file("labels_cr.txt", "out\rche\rdis\r"));
  CHECK(labels.names() == std::vector<std::string>{"che", "dis", "out"});
  CHECK_THROWS_WITH(LabelSet::from_file(ctdl::test::write_file("labels_cr_dup.txt", "out\rche\rout")),
                    Catch::Contains("labels_cr_dup.txt:3: the label 'out' is already on line 1"));
}

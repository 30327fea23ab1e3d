// classification_report against scikit-learn's documented example and by hand.
#include <catch2/catch.hpp>

#include <ctdl/metrics/classification.hpp>

using namespace ctdl::metrics;

TEST_CASE("scikit-learn's classification_report example") {
  // sklearn.metrics.classification_report docs: y_true = [0, 1, 2, 2, 2], y_pred = [0, 0, 2, 2, 1]
  const auto r = classification_report({0, 1, 2, 2, 2}, {0, 0, 2, 2, 1}, {"class 0", "class 1", "class 2"});
  CHECK(r.per_class[0].precision == Approx(0.5));
  CHECK(r.per_class[0].recall == Approx(1.0));
  CHECK(r.per_class[0].f1 == Approx(2.0 / 3));
  CHECK(r.per_class[1].precision == 0.0);  // zero_division = 0
  CHECK(r.per_class[1].f1 == 0.0);
  CHECK(r.per_class[2].precision == Approx(1.0));
  CHECK(r.per_class[2].recall == Approx(2.0 / 3));
  CHECK(r.per_class[2].f1 == Approx(0.8));
  CHECK(r.per_class[2].support == 3);
  CHECK(r.accuracy == Approx(0.6));
  CHECK(r.micro.f1 == Approx(0.6));
  CHECK(r.macro.precision == Approx(0.5));
  CHECK(r.macro.recall == Approx(5.0 / 9));  // 0.56 in the docs
  CHECK(r.macro.f1 == Approx((2.0 / 3 + 0.8) / 3));  // 0.49
  CHECK(r.weighted.precision == Approx(0.7));
  CHECK(r.weighted.recall == Approx(0.6));
  CHECK(r.weighted.f1 == Approx((2.0 / 3 + 3 * 0.8) / 5));  // 0.61
  CHECK(r.confusion[2][1] == 1);
  CHECK(r.confusion[1][0] == 1);
  CHECK_THAT(r.table(), Catch::Contains("weighted avg"));
  CHECK_THAT(r.confusion_table(), Catch::Contains("rows: true label"));
}

TEST_CASE("report errors") {
  CHECK_THROWS_WITH(classification_report({0, 1}, {0}, {"a", "b"}), Catch::Contains("2 true labels but 1 predictions"));
  CHECK_THROWS_WITH(classification_report({0, 2}, {0, 1}, {"a", "b"}), Catch::Contains("out of range at example 1"));
}

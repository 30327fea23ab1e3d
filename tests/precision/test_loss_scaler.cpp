// Dynamic loss scaling: growth after a run of clean steps, backoff on overflow, floor.
#include <catch2/catch.hpp>

#include <ctdl/precision/loss_scaler.hpp>

using ctdl::precision::LossScaler;

TEST_CASE("the loss scale starts at 2^32, halves on overflow and grows after clean steps") {
  LossScaler s;
  CHECK(s.scale() == 4294967296.0);
  CHECK_FALSE(s.update(false));
  CHECK(s.scale() == 2147483648.0);
  CHECK(s.skipped_steps() == 1);
  for (int i = 0; i < 999; ++i) REQUIRE(s.update(true));
  CHECK(s.scale() == 2147483648.0);
  CHECK(s.update(true));  // the 1000th clean step in a row
  CHECK(s.scale() == 4294967296.0);
  CHECK(s.clean_steps() == 0);
  // An overflow restarts the count.
  for (int i = 0; i < 500; ++i) s.update(true);
  s.update(false);
  for (int i = 0; i < 999; ++i) s.update(true);
  CHECK(s.scale() == 2147483648.0);
}

TEST_CASE("the loss scale never goes below 1") {
  LossScaler s({.initial_scale = 4.0});
  for (int i = 0; i < 10; ++i) s.update(false);
  CHECK(s.scale() == 1.0);
  CHECK(s.skipped_steps() == 10);
}

// Dynamic loss scaling: growth after a run of clean steps, backoff after overflows, floor.
// The default rule is the original pipeline's (tf.contrib.mixed_precision's
// ExponentialUpdateLossScaleManager(2^32, incr_every_n_steps=1000,
// decr_every_n_nan_or_inf=2, decr_ratio=0.5)); backoff_interval = 1 is PyTorch's.
#include <catch2/catch.hpp>

#include <ctdl/precision/loss_scaler.hpp>

using ctdl::precision::LossScaler;

TEST_CASE("the loss scale starts at 2^32 and halves at every second overflow since it last changed") {
  LossScaler s;
  CHECK(s.scale() == 4294967296.0);
  CHECK_FALSE(s.update(false));  // skipped, the scale kept
  CHECK(s.scale() == 4294967296.0);
  CHECK(s.overflow_steps() == 1);
  CHECK_FALSE(s.update(false));  // the second: halves
  CHECK(s.scale() == 2147483648.0);
  CHECK(s.overflow_steps() == 0);
  CHECK(s.skipped_steps() == 2);
  // Overflows need not be in a row: clean steps between them do not reset their count
  // (TensorFlow's "does not require the steps to be consecutive").
  CHECK_FALSE(s.update(false));
  for (int i = 0; i < 10; ++i) REQUIRE(s.update(true));
  CHECK(s.scale() == 2147483648.0);
  CHECK_FALSE(s.update(false));
  CHECK(s.scale() == 1073741824.0);
  CHECK(s.skipped_steps() == 4);
}

TEST_CASE("the loss scale grows after 1000 clean steps in a row, which also clears the overflow count") {
  LossScaler s;
  s.update(false);  // one overflow counted
  for (int i = 0; i < 999; ++i) REQUIRE(s.update(true));
  CHECK(s.scale() == 4294967296.0);
  CHECK(s.update(true));  // the 1000th clean step in a row
  CHECK(s.scale() == 8589934592.0);
  CHECK(s.clean_steps() == 0);
  CHECK(s.overflow_steps() == 0);
  CHECK_FALSE(s.update(false));  // so this is the first overflow since the change: kept
  CHECK(s.scale() == 8589934592.0);
  // An overflow restarts the clean count.
  for (int i = 0; i < 500; ++i) s.update(true);
  s.update(false);  // the second: halves
  for (int i = 0; i < 999; ++i) s.update(true);
  CHECK(s.scale() == 4294967296.0);
  CHECK(s.clean_steps() == 999);
}

TEST_CASE("backoff_interval 1 halves at every overflow (PyTorch's GradScaler)") {
  LossScaler s({.backoff_interval = 1});
  CHECK_FALSE(s.update(false));
  CHECK(s.scale() == 2147483648.0);
  CHECK_FALSE(s.update(false));
  CHECK(s.scale() == 1073741824.0);
  CHECK(s.skipped_steps() == 2);
}

TEST_CASE("the loss scale never goes below 1") {
  LossScaler s({.initial_scale = 4.0});
  for (int i = 0; i < 10; ++i) s.update(false);
  CHECK(s.scale() == 1.0);
  CHECK(s.skipped_steps() == 10);
}

TEST_CASE("state() and restore() carry every count: a restored scaler decides as the original") {
  LossScaler a;
  a.update(false);
  for (int i = 0; i < 7; ++i) a.update(true);
  LossScaler b;
  b.restore(a.state());
  CHECK(b.overflow_steps() == 1);
  CHECK(b.clean_steps() == 7);
  CHECK_FALSE(a.update(false));
  CHECK_FALSE(b.update(false));
  CHECK(a.scale() == 2147483648.0);
  CHECK(b.scale() == a.scale());
}

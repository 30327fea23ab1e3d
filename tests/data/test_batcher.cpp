// Batcher: seeded shuffles, drop_remainder, prefetch, and rank slices that add up to the
// one-process batches.
#include <catch2/catch.hpp>

#include <ctdl/data/batcher.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include "../text_test_util.hpp"

using namespace ctdl;
using namespace ctdl::data;

namespace {

/// A cache of n rows whose left context encodes the row number (as that many "a"s mod 9).
const FeatureCache& cache_of(std::size_t n) {
  static std::map<std::size_t, std::unique_ptr<FeatureCache>> caches;
  auto& c = caches[n];
  if (!c) {
    std::string rows;
    for (std::size_t i = 0; i < n; ++i) rows += std::string(i % 2 ? "che" : "dis") + "\thello\t" + std::string(i % 9 + 1, 'a') + "\tworld\n";
    const std::string tsv = test::write_file("batcher_" + std::to_string(n) + ".tsv", rows);
    const LabelSet labels({"che", "dis"});
    const SpanFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 8});
    prepare_span_cache(tsv, tsv + ".features", labels, builder, test::tiny_tokenizer(), false);
    c = std::make_unique<FeatureCache>(tsv + ".features");
  }
  return *c;
}

/// Every batch of one epoch as the list of cache rows it holds.
std::vector<std::vector<std::size_t>> epoch(const FeatureCache& cache, Batcher::Options o, std::uint64_t e = 0) {
  Batcher b(cache, o);
  b.start_epoch(e);
  std::vector<std::vector<std::size_t>> out;
  Batch batch;
  while (b.next(batch)) out.push_back(batch.rows);
  CHECK(out.size() == b.batches_per_epoch());
  return out;
}
}  // namespace

TEST_CASE("epoch_order: a permutation, reproducible, different per epoch and seed") {
  const auto a = epoch_order(1000, true, 42, 0);
  CHECK(std::set<std::uint32_t>(a.begin(), a.end()).size() == 1000);
  CHECK(a == epoch_order(1000, true, 42, 0));
  CHECK(a != epoch_order(1000, true, 42, 1));
  CHECK(a != epoch_order(1000, true, 43, 0));
  const auto file_order = epoch_order(1000, false, 42, 3);
  for (std::uint32_t i = 0; i < 1000; ++i) REQUIRE(file_order[i] == i);
  // Roughly uniform: each of 10 rows lands in position 0 about 1/10 of the time.
  std::vector<int> first(10);
  for (std::uint64_t e = 0; e < 5000; ++e) ++first[epoch_order(10, true, 7, e)[0]];
  for (int f : first) CHECK(std::abs(f - 500) < 100);
}

TEST_CASE("batches carry the cache's ids, masks and labels") {
  const auto& cache = cache_of(10);
  Batcher b(cache, {.batch_size = 4, .shuffle = false, .prefetch = 0});
  b.start_epoch(0);
  Batch batch;
  REQUIRE(b.next(batch));
  REQUIRE(batch.size() == 4);
  CHECK(batch.input_ids.extent(1) == 8);
  for (index_t i = 0; i < 4; ++i)
    for (index_t k = 0; k < 8; ++k) {
      const auto id = cache.input_ids(batch.rows[static_cast<std::size_t>(i)])[k];
      CHECK(batch.input_ids.data()[i * 8 + k] == id);
      CHECK(batch.attention_mask.data()[i * 8 + k] == (id != 0));
      CHECK(batch.token_type_ids.data()[i * 8 + k] == 0);
    }
  CHECK(batch.labels.data()[1] == cache.label_id(1));
  // [CLS] [PAD] [PAD] hello ...: the left padding is masked
  CHECK(batch.attention_mask.data()[1] == 0);
}

TEST_CASE("drop_remainder drops a last partial batch, otherwise it is kept") {
  const auto& cache = cache_of(10);
  CHECK(epoch(cache, {.batch_size = 4, .drop_remainder = true}).size() == 2);
  const auto kept = epoch(cache, {.batch_size = 4, .shuffle = false});
  REQUIRE(kept.size() == 3);
  CHECK(kept[2] == std::vector<std::size_t>{8, 9});
}

TEST_CASE("N ranks with batch b see exactly the batches of one process with batch N*b") {
  const auto& cache = cache_of(103);
  for (const bool drop : {true, false})
    for (const int world : {2, 3, 4})
      for (const int prefetch : {0, 2}) {
        INFO("world " << world << ", drop_remainder " << drop << ", prefetch " << prefetch);
        const auto single = epoch(cache, {.batch_size = 5 * world, .seed = 9, .drop_remainder = drop}, 2);
        std::vector<std::vector<std::vector<std::size_t>>> ranks;
        for (int r = 0; r < world; ++r)
          ranks.push_back(epoch(cache,
                                {.batch_size = 5, .rank = r, .world_size = world, .seed = 9,
                                 .drop_remainder = drop, .prefetch = prefetch},
                                2));
        for (const auto& r : ranks) REQUIRE(r.size() == single.size());
        for (std::size_t g = 0; g < single.size(); ++g) {
          std::vector<std::size_t> joined;
          for (const auto& r : ranks) joined.insert(joined.end(), r[g].begin(), r[g].end());
          CHECK(joined == single[g]);
        }
      }
}

TEST_CASE("a batcher restarted mid-epoch or destroyed with batches queued is clean") {
  const auto& cache = cache_of(103);
  Batcher b(cache, {.batch_size = 4, .prefetch = 3});
  b.start_epoch(0);
  Batch batch;
  REQUIRE(b.next(batch));
  const auto second_epoch_first = epoch(cache, {.batch_size = 4, .prefetch = 0}, 1).front();
  b.start_epoch(1);
  REQUIRE(b.next(batch));
  CHECK(batch.rows == second_epoch_first);
}

namespace batcher_trim_test {
/// A cache of `n` span rows at M = 32 named `stem`: row i's right context is
/// right_words(i) words ("world" repeated), so that the rows end at different positions;
/// the left context is one word (left padding).
template <class Words>
std::unique_ptr<FeatureCache> ragged_rows(const std::string& stem, std::size_t n, Words right_words) {
  std::string rows;
  for (std::size_t i = 0; i < n; ++i) {
    std::string right;
    for (std::size_t k = 0; k < right_words(i); ++k) right += (k ? " " : "") + std::string("world");
    rows += std::string(i % 2 ? "che" : "dis") + "\thello\ta\t" + right + "\n";
  }
  const std::string tsv = test::write_file(stem + ".tsv", rows);
  const SpanFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 32});
  prepare_span_cache(tsv, tsv + ".features", LabelSet({"che", "dis"}), builder, test::tiny_tokenizer(), false);
  return std::make_unique<FeatureCache>(tsv + ".features");
}

/// 40 rows whose right context grows from 0 to 13 words down the file.
const FeatureCache& ragged_cache() {
  static const auto cache = ragged_rows("batcher_ragged", 40, [](std::size_t i) { return (i / 6) * 2 + i % 2; });
  return *cache;
}

/// Where row r's tokens end: one past its last non-[PAD].
index_t row_length(const FeatureCache& cache, std::size_t r) {
  index_t len = cache.max_seq_length();
  while (len > 0 && cache.input_ids(r)[len - 1] == cache.header().pad_id) --len;
  return len;
}
}  // namespace batcher_trim_test

TEST_CASE("trim_padding: each batch as wide as its longest row (rounded up), the same tokens, masks and labels") {
  using namespace batcher_trim_test;
  const auto& cache = ragged_cache();
  const index_t M = cache.max_seq_length();
  for (const index_t multiple : {1, 8})
    for (const bool shuffle : {false, true}) {
      INFO("width_multiple " << multiple << ", shuffle " << shuffle);
      Batcher b(cache, {.batch_size = 6, .shuffle = shuffle, .seed = 3, .trim_padding = true, .width_multiple = multiple});
      b.start_epoch(0);
      Batch batch;
      std::set<index_t> widths;
      while (b.next(batch)) {
        index_t longest = 0;
        for (const std::size_t r : batch.rows) longest = std::max(longest, row_length(cache, r));
        const index_t S = batch.seq_len();
        widths.insert(S);
        CHECK(S == std::min(M, (longest + multiple - 1) / multiple * multiple));
        REQUIRE(batch.attention_mask.extent(1) == S);
        REQUIRE(batch.token_type_ids.extent(1) == S);
        for (index_t i = 0; i < batch.size(); ++i) {
          const std::size_t r = batch.rows[static_cast<std::size_t>(i)];
          for (index_t k = 0; k < S; ++k) {  // the cache's first S tokens, the left padding among them
            CHECK(batch.input_ids.data()[i * S + k] == cache.input_ids(r)[k]);
            CHECK(batch.attention_mask.data()[i * S + k] == (cache.input_ids(r)[k] != 0 ? 1 : 0));
          }
          for (index_t k = S; k < M; ++k) CHECK(cache.input_ids(r)[k] == cache.header().pad_id);  // only [PAD]s cut
          CHECK(batch.labels.data()[i] == cache.label_id(r));
        }
      }
      if (!shuffle) {  // in file order the short rows come together: narrower batches
        CHECK(widths.size() > 1);
        CHECK(*widths.begin() < M);
      }
    }
  // Without trim_padding every batch is M wide, as before.
  Batcher full(cache, {.batch_size = 6, .shuffle = false});
  full.start_epoch(0);
  Batch batch;
  while (full.next(batch)) CHECK(batch.seq_len() == M);
  CHECK_THROWS_WITH(Batcher(cache, {.trim_padding = true, .width_multiple = 0}),
                    Catch::Contains("width_multiple must be at least 1"));
}

namespace batcher_group_test {
/// 230 rows whose right contexts are 0 to 13 words long in a scrambled order.
const FeatureCache& scrambled_cache() {
  static const auto cache =
      batcher_trim_test::ragged_rows("batcher_scrambled", 230, [](std::size_t i) { return (i * 7 + i / 5) % 14; });
  return *cache;
}

/// `order` with each run of `run` positions stably sorted by decreasing row length.
std::vector<std::size_t> sorted_runs(const FeatureCache& cache, std::vector<std::uint32_t> order, std::size_t run) {
  for (std::size_t begin = 0; begin < order.size(); begin += run)
    std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(begin),
                     order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), begin + run)),
                     [&](std::uint32_t a, std::uint32_t b) {
                       return batcher_trim_test::row_length(cache, a) > batcher_trim_test::row_length(cache, b);
                     });
  return {order.begin(), order.end()};
}

std::vector<std::size_t> joined(const std::vector<std::vector<std::size_t>>& batches) {
  std::vector<std::size_t> all;
  for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  return all;
}

/// Token positions computed over an epoch: each batch's rows x width.
index_t positions(const FeatureCache& cache, Batcher::Options o) {
  Batcher b(cache, o);
  b.start_epoch(0);
  Batch batch;
  index_t total = 0;
  while (b.next(batch)) total += batch.size() * batch.seq_len();
  return total;
}
}  // namespace batcher_group_test

TEST_CASE("group_by_length: rows of similar length batched together, every row once, independent of the ranks") {
  using namespace batcher_group_test;
  using batcher_trim_test::row_length;
  const auto& cache = scrambled_cache();
  const std::size_t n = cache.rows();
  REQUIRE(n == 230);

  // File order (inference): the whole order sorted by decreasing length, ties in file order.
  const auto file = epoch(cache, {.batch_size = 6, .shuffle = false, .trim_padding = true, .group_by_length = true});
  const auto rows = joined(file);
  CHECK(rows == sorted_runs(cache, epoch_order(n, false, 0, 0), n));
  CHECK(std::set<std::size_t>(rows.begin(), rows.end()).size() == n);
  CHECK(row_length(cache, rows.front()) > row_length(cache, rows.back()));
  // Each batch as wide as its longest row, the rows' tokens as they are in the cache.
  Batcher b(cache, {.batch_size = 6, .shuffle = false, .trim_padding = true, .width_multiple = 1, .group_by_length = true});
  b.start_epoch(0);
  Batch batch;
  while (b.next(batch)) {
    index_t longest = 0;
    for (const std::size_t r : batch.rows) longest = std::max(longest, row_length(cache, r));
    REQUIRE(batch.seq_len() == longest);
    for (index_t i = 0; i < batch.size(); ++i) {
      const std::size_t r = batch.rows[static_cast<std::size_t>(i)];
      for (index_t k = 0; k < longest; ++k) CHECK(batch.input_ids.data()[i * longest + k] == cache.input_ids(r)[k]);
      CHECK(batch.labels.data()[i] == cache.label_id(r));
    }
  }
  // Less padding than file order's batches, which are already trimmed.
  const index_t grouped = positions(cache, {.batch_size = 6, .shuffle = false, .trim_padding = true, .width_multiple = 1,
                                            .group_by_length = true});
  const index_t in_file_order = positions(cache, {.batch_size = 6, .shuffle = false, .trim_padding = true, .width_multiple = 1});
  const index_t shuffled = positions(cache, {.batch_size = 6, .seed = 1, .trim_padding = true, .width_multiple = 1});
  CHECK(grouped < in_file_order);
  CHECK(grouped < shuffled);

  // Shuffled (training): each run of global batches of the shuffled order sorted; the same for the same seed and epoch, another order for another epoch.
  for (const index_t batch_size : {1, 2}) {
    INFO("batch size " << batch_size);
    const Batcher::Options o{.batch_size = batch_size, .shuffle = true, .seed = 5, .trim_padding = true,
                             .group_by_length = true};
    // Runs of 50 batches, or fewer so that there are 4 runs (Hugging Face's megabatches).
    const std::size_t run = static_cast<std::size_t>(batch_size) * std::min<std::size_t>(50, n / (4 * static_cast<std::size_t>(batch_size)));
    REQUIRE(Batcher(cache, o).group_run_rows() == run);
    REQUIRE(run == (batch_size == 1 ? 50 : 56));
    const auto shuffled = joined(epoch(cache, o, 3));
    CHECK(shuffled == sorted_runs(cache, epoch_order(n, true, 5, 3), run));
    CHECK(shuffled == joined(epoch(cache, o, 3)));
    CHECK(shuffled != joined(epoch(cache, o, 4)));
    CHECK(shuffled.front() != rows.front());
  }

  // N ranks with batch b take one process's batches of N * b, in file order and shuffled.
  for (const bool shuffle : {false, true})
    for (const int world : {2, 3}) {
      INFO("shuffle " << shuffle << ", world " << world);
      const Batcher::Options one{.batch_size = 4 * world, .shuffle = shuffle, .seed = 7, .trim_padding = true,
                                 .group_by_length = true};
      const auto single = epoch(cache, one);
      for (std::size_t g = 0; g < single.size(); ++g) {
        std::vector<std::size_t> all;
        for (int r = 0; r < world; ++r) {
          auto o = one;
          o.batch_size = 4;
          o.rank = r;
          o.world_size = world;
          const auto mine = epoch(cache, o);
          REQUIRE(mine.size() == single.size());
          all.insert(all.end(), mine[g].begin(), mine[g].end());
        }
        CHECK(all == single[g]);
      }
    }

  CHECK_THROWS_WITH(Batcher(cache, {.group_by_length = true}), Catch::Contains("group_by_length needs trim_padding"));
}

TEST_CASE("token_scheme tensorflow: every position of every batch labelled from the cache's first-piece labels") {
  // Sentences of 1 to 9 words, some of several pieces ("unaffable": un ##aff ##able), at M = 16.
  std::string text;
  const char* words[] = {"the", "unaffable", "hello", "world", "c"};
  const char* tags[] = {"O", "B", "B", "I", "O"};
  for (int i = 0; i < 40; ++i) {
    for (int k = 0; k < 1 + (i * 5) % 9; ++k) text += std::string(words[(i + k) % 5]) + "\t" + tags[(i + k) % 5] + "\n";
    text += "\n";
  }
  const std::string conll = test::write_file("batcher_tf.tsv", text);
  const LabelSet labels({"B", "I", "O"});
  prepare_token_cache(conll, conll + ".features", labels, TokenFeatureBuilder(test::tiny_tokenizer(), {.max_seq_length = 16}),
                      test::tiny_tokenizer(), false);
  const FeatureCache cache(conll + ".features");
  const auto& special = test::tiny_tokenizer().vocab().special();
  std::size_t xs = 0;
  for (const bool trim : {false, true}) {
    Batcher b(cache, {.batch_size = 7, .shuffle = true, .seed = 5, .trim_padding = trim,
                      .token_scheme = TokenScheme::tensorflow, .word_labels = 3});
    b.start_epoch(0);
    Batch batch;
    while (b.next(batch)) {
      const index_t S = batch.seq_len();
      for (index_t i = 0; i < batch.size(); ++i) {
        const std::size_t r = batch.rows[static_cast<std::size_t>(i)];
        for (index_t k = 0; k < S; ++k) {
          const std::int32_t id = cache.input_ids(r)[k], first = cache.label_ids(r)[k];
          const std::int32_t want = id == special.pad   ? 0
                                    : id == special.cls ? 5
                                    : id == special.sep ? 6
                                    : first >= 0        ? first + 1
                                                        : 4;
          CHECK(batch.labels.data()[i * S + k] == want);
          xs += want == 4;
        }
      }
    }
  }
  CHECK(xs > 0);  // "unaffable"'s later pieces
  CHECK_THROWS_WITH(Batcher(cache, {.token_scheme = TokenScheme::tensorflow}),
                    Catch::Contains("the tensorflow token scheme needs token features and the number of word labels"));
}

// The feature cache: built once, reused while its inputs match, rebuilt when they change.
#include <catch2/catch.hpp>

#include <ctdl/data/feature_cache.hpp>

#include <filesystem>
#include <fstream>
#include <thread>
#include "../text_test_util.hpp"

using namespace ctdl;
using namespace ctdl::data;
namespace fs = std::filesystem;

namespace {
const LabelSet kCacheLabels({"che", "dis", "out"});

std::string write_rows(const std::string& name, int n, const std::string& extra = "") {
  const std::string path = std::string(CTDL_TEST_TMP) + "/" + name;
  std::ofstream out(path, std::ios::binary);
  const char* labels[] = {"che", "dis", "out"};
  for (int i = 0; i < n; ++i)
    out << "doc" << i << '\t' << labels[i % 3] << '\t' << (i % 2 ? "hello world a b" : "the") << '\t'
        << (i % 5 ? "unaffable" : "c") << '\t' << std::string(static_cast<std::size_t>(i % 7), 'a') << " effect\r\n";
  out << extra;
  return path;
}
}  // namespace

TEST_CASE("prepare builds the records the builder gives, then reuses them") {
  const auto tsv = write_rows("cache_rows.tsv", 20000);  // more than one chunk
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_rows.features";
  fs::remove(cache);
  const SpanFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 16});
  const auto first = prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), false);
  CHECK(first.rebuilt);
  CHECK(first.reason == "no cache yet");
  CHECK(first.rows == 20000);
  const FeatureCache fc(cache);
  REQUIRE(fc.rows() == 20000);
  CHECK(fc.max_seq_length() == 16);
  CHECK(fc.header().pad_id == test::tiny_tokenizer().vocab().special().pad);
  SpanTsvReader reader(tsv, kCacheLabels);
  SpanRow row;
  for (std::size_t i = 0; reader.next(row); ++i) {
    const auto ids = builder.build(row.left, row.span, row.right);
    REQUIRE(std::equal(ids.begin(), ids.end(), fc.input_ids(i)));
    REQUIRE(fc.label_id(i) == row.label_id);
    REQUIRE(fc.source_index(i) == row.line);
  }
  const auto again = prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), false);
  CHECK_FALSE(again.rebuilt);
  CHECK(again.rows == 20000);
}

TEST_CASE("a cache is rebuilt when anything it depends on changes, and says why") {
  const auto tsv = write_rows("cache_change.tsv", 50);
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_change.features";
  fs::remove(cache);
  const SpanFeatureBuilder m16(test::tiny_tokenizer(), {.max_seq_length = 16}), m32(test::tiny_tokenizer(), {.max_seq_length = 32}),
      replaced(test::tiny_tokenizer(), {.max_seq_length = 16, .replace_span = "[MASK]"});
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, m16, test::tiny_tokenizer(), false).rebuilt);
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, m32, test::tiny_tokenizer(), false).reason == "max_seq_length 16, now 32");
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, replaced, test::tiny_tokenizer(), false).reason == "max_seq_length 32, now 16");
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, m16, test::tiny_tokenizer(), false).reason == "another replace_span");
  const text::FullTokenizer uncased(test::tiny_tokenizer().vocab(), {.lower_case = true});
  const SpanFeatureBuilder m16u(uncased, {.max_seq_length = 16});
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, m16u, uncased, false).reason == "other casing");
  CHECK(prepare_span_cache(tsv, cache, LabelSet({"che", "dis", "out", "zzz"}), m16u, uncased, false).reason ==
        "other labels");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_rows("cache_change.tsv", 51);
  CHECK(prepare_span_cache(tsv, cache, LabelSet({"che", "dis", "out", "zzz"}), m16u, uncased, false).reason ==
        "the data file changed");
  // A truncated file is detected and rebuilt.
  fs::resize_file(cache, fs::file_size(cache) - 3);
  const auto r = prepare_span_cache(tsv, cache, LabelSet({"che", "dis", "out", "zzz"}), m16u, uncased, false);
  CHECK_THAT(r.reason, Catch::Contains("truncated or corrupt feature cache"));
  CHECK(FeatureCache(cache).rows() == 51);
}

TEST_CASE("bad rows: an error leaves no cache behind, skip_bad_rows counts them in the header") {
  const auto tsv = write_rows("cache_bad.tsv", 30, "out\tonly three\tcolumns\r\nxyz\ta\tb\tc\r\n");
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_bad.features";
  fs::remove(cache);
  const SpanFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 16});
  CHECK_THROWS_WITH(prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), false),
                    Catch::Contains("cache_bad.tsv:31: has 3 columns"));
  CHECK_FALSE(fs::exists(cache));
  for (const auto& e : fs::directory_iterator(CTDL_TEST_TMP))
    CHECK(e.path().filename().string().find("cache_bad.features.tmp") == std::string::npos);
  const auto report = prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), true);
  CHECK(report.rows == 30);
  CHECK(report.skipped == 2);
  CHECK_THAT(report.skipped_messages.at(1), Catch::Contains("cache_bad.tsv:32: the label 'xyz' is not in"));
  CHECK(FeatureCache(cache).header().skipped_rows == 2);
  // Reused by a call without skip_bad_rows, the cache does not hide the bad rows: the
  // first stops it, as it stops a fresh build; with skip_bad_rows they are listed again.
  CHECK_THROWS_WITH(prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), false),
                    Catch::Contains("cache_bad.tsv:31: has 3 columns"));
  std::vector<std::size_t> lines;
  const auto again = prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), true, {},
                                        [&](const SkippedRow& r) { lines.push_back(r.line); });
  CHECK_FALSE(again.rebuilt);
  CHECK(again.skipped == 2);
  CHECK(lines == std::vector<std::size_t>{31, 32});
}

TEST_CASE("xxh64 is XXH64 (the reference's test values), file_fingerprint hashes a file's bytes") {
  CHECK(xxh64("") == 0xEF46DB3751D8E999ull);
  CHECK(xxh64("abc") == 0x44BC2CF5AD770999ull);
  CHECK(xxh64("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ull);  // > 32 bytes: the lanes
  std::string big(1000003, 'x');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  const std::string path = std::string(CTDL_TEST_TMP) + "/fingerprint.bin";
  std::ofstream(path, std::ios::binary) << big;
  CHECK(file_fingerprint(path) == xxh64(big));
  big[500000] ^= 1;
  CHECK(file_fingerprint(path) != xxh64(big));
}

TEST_CASE("a TSV replaced by other content of the same size, with its timestamp kept, is not reused") {
  const auto tsv = write_rows("cache_same_size.tsv", 40);
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_same_size.features";
  fs::remove(cache);
  const SpanFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 16});
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), false).rebuilt);
  const auto size = fs::file_size(tsv);
  const auto time = fs::last_write_time(tsv);
  std::string text;
  {
    std::ifstream in(tsv, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto at = text.find("\tche\t");
  REQUIRE(at != std::string::npos);
  text.replace(at, 5, "\tdis\t");  // one label changed, the size kept
  std::ofstream(tsv, std::ios::binary | std::ios::trunc) << text;
  fs::last_write_time(tsv, time);
  REQUIRE(fs::file_size(tsv) == size);
  const auto again = prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), false);
  CHECK(again.rebuilt);
  CHECK(again.reason == "the data file changed");
  CHECK(FeatureCache(cache).label_id(0) == *kCacheLabels.find("dis"));
  CHECK(FeatureCache(cache).header().version == kFeatureCacheVersion);
}

TEST_CASE("skipped rows reach on_skip whether the cache is built or reused") {
  const auto tsv = write_rows("cache_skip_list.tsv", 12, "out\tonly three\tcolumns\r\nd13\txyz\ta\tb\tc\r\n");
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_skip_list.features";
  fs::remove(cache);
  const SpanFeatureBuilder builder(test::tiny_tokenizer(), {.max_seq_length = 16});
  for (const bool reused : {false, true}) {
    std::vector<SkippedRow> skipped;
    const auto report = prepare_span_cache(tsv, cache, kCacheLabels, builder, test::tiny_tokenizer(), true, {},
                                           [&](const SkippedRow& r) { skipped.push_back(r); });
    CHECK(report.rebuilt == !reused);
    CHECK(report.skipped == 2);
    CHECK(report.skipped_messages.size() == 2);
    REQUIRE(skipped.size() == 2);
    CHECK(skipped[0].line == 13);
    CHECK(skipped[1].line == 14);
    CHECK(skipped[1].ids == "d13");
    CHECK_THAT(skipped[1].reason, Catch::StartsWith("the label 'xyz' is not in"));
  }
}

TEST_CASE("opening something that is not a cache is a clear error") {
  const std::string path = std::string(CTDL_TEST_TMP) + "/not_a_cache.bin";
  std::ofstream(path, std::ios::binary) << std::string(600, 'x');
  CHECK_THROWS_WITH(FeatureCache(path), Catch::Contains("not_a_cache.bin: not a ctdl feature cache"));
  std::ofstream(path, std::ios::binary) << "short";
  CHECK_THROWS_WITH(FeatureCache(path), Catch::Contains("too short to be a feature cache"));
}

TEST_CASE("a cache made under other tokenizer control-character rules is rebuilt") {
  // Same vocabulary, casing and word-length limit; only the control categories differ
  // (the original pipeline's every C* against Google's Cc/Cf), which changes the ids of
  // text holding private-use or unassigned characters.
  const auto tsv = write_rows("cache_rules.tsv", 30);
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_rules.features";
  fs::remove(cache);
  const text::FullTokenizer original(test::tiny_tokenizer().vocab(), {.lower_case = false}),
      google_control(test::tiny_tokenizer().vocab(),
                     {.lower_case = false, .rules = text::TokenizerRules::google, .max_input_chars_per_word = 100});
  const SpanFeatureBuilder by_original(original, {.max_seq_length = 16}), by_google(google_control, {.max_seq_length = 16});
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, by_original, original, false).rebuilt);
  CHECK_FALSE(prepare_span_cache(tsv, cache, kCacheLabels, by_original, original, false).rebuilt);
  const auto report = prepare_span_cache(tsv, cache, kCacheLabels, by_google, google_control, false);
  CHECK(report.rebuilt);
  CHECK_THAT(report.reason, Catch::Contains("control-character rules"));
  CHECK(FeatureCache(cache).header().control_categories ==
        static_cast<std::uint32_t>(text::ControlCategories::cc_cf));
}

TEST_CASE("a cache made before the tokenizer read Unicode 9.0's categories is rebuilt") {
  // Such a cache's header has 0 where the tokenizer's character database is now recorded;
  // its features may hold characters assigned since 9.0, which the original rules drop.
  const auto tsv = write_rows("cache_unicode.tsv", 30);
  const std::string cache = std::string(CTDL_TEST_TMP) + "/cache_unicode.features";
  fs::remove(cache);
  const auto& tok = test::tiny_tokenizer();
  const SpanFeatureBuilder builder(tok, {.max_seq_length = 16});
  CHECK(prepare_span_cache(tsv, cache, kCacheLabels, builder, tok, false).rebuilt);
  CHECK(FeatureCache(cache).header().unicode_data == static_cast<std::uint32_t>(text::UnicodeData::v9_0));
  {
    std::fstream f(cache, std::ios::in | std::ios::out | std::ios::binary);
    const std::uint32_t older = 0;
    f.seekp(static_cast<std::streamoff>(offsetof(CacheHeader, unicode_data)));
    f.write(reinterpret_cast<const char*>(&older), sizeof older);
  }
  const auto report = prepare_span_cache(tsv, cache, kCacheLabels, builder, tok, false);
  CHECK(report.rebuilt);
  CHECK_THAT(report.reason, Catch::Contains("made before the cache recorded the tokenizer's Unicode database"));
  CHECK(FeatureCache(cache).header().unicode_data == static_cast<std::uint32_t>(text::UnicodeData::v9_0));
  CHECK_FALSE(prepare_span_cache(tsv, cache, kCacheLabels, builder, tok, false).rebuilt);
}

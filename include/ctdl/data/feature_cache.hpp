#pragma once
// The on-disk feature cache: features prepared once, then memory-mapped for training and
// prediction, so memory does not grow with the data set.
//
// File layout (little-endian):
//   a 512-byte header: magic "CTDLFEAT", format version, feature kind, and everything
//     the features depend on -- vocabulary and label-set fingerprints, max_seq_length,
//     casing, max_input_chars_per_word, the control-character rule (TokenizerRules),
//     replace_span, token features' max_words and cut_label, the source file's size and
//     the XXH64 of its content -- then the row count, record size, the [PAD] id and the
//     number of rows (sentences) skip_bad_rows left out (not 0: a reused cache has its
//     source read again, to list them or, without skip_bad_rows, to stop at the first);
//   then fixed-size records, one per row:
//     span  : int32 input_ids[M], int32 label_id, uint32 source line
//     token : int32 input_ids[M], int32 label_ids[M] (-1 = not scored), uint32 sentence,
//             uint32 first word of the chunk
// input_mask (0 at [PAD]) and segment ids (all 0) are not stored: they follow from the ids.
// The file is written under a temporary name and renamed when complete, so a cache that
// exists is whole; one whose header does not match the current inputs is rebuilt.
// Readers map it into memory; shuffled reads use pread instead (see read_record), so
// neither keeps more than a window of it resident.

#include <fcntl.h>
#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/data/fingerprint.hpp"
#include "ctdl/data/labels.hpp"
#include "ctdl/data/span_features.hpp"
#include "ctdl/data/span_tsv.hpp"
#include "ctdl/data/token_features.hpp"
#include "ctdl/io/mapped_file.hpp"

namespace ctdl::data {

enum class FeatureKind : std::uint32_t { span = 1, token = 2 };

// 2: the source file is keyed by its content's XXH64, no longer by its modification time.
inline constexpr std::uint32_t kFeatureCacheVersion = 2;

/// The 512-byte header of a feature cache file.
struct CacheHeader {
  char magic[8] = {'C', 'T', 'D', 'L', 'F', 'E', 'A', 'T'};
  std::uint32_t version = kFeatureCacheVersion;
  FeatureKind kind = FeatureKind::span;
  std::uint64_t vocab_fingerprint = 0;
  std::uint64_t labels_fingerprint = 0;
  std::uint32_t max_seq_length = 0;
  std::uint32_t lower_case = 0;
  std::uint32_t max_chars_per_word = 0;
  std::uint32_t replace_span_bytes = 0;
  std::uint64_t source_size = 0;
  std::uint64_t source_xxh64 = 0;  // the content: a file replaced by one of the same size and time differs here
  std::uint64_t rows = 0;
  std::uint64_t record_bytes = 0;
  std::uint64_t skipped_rows = 0;
  char replace_span[128] = {};
  std::int32_t pad_id = 0;  // the vocabulary's [PAD]: input_mask is 0 where input_ids holds it
  std::uint32_t control_categories = 0;  // the tokenizer's text::ControlCategories (0 in older caches)
  // Token features: TokenFeatureBuilder::Options::max_words and cut_label (the TensorFlow
  // NER recipe's sentence cut; 0: none, as in older caches).
  std::uint32_t max_words = 0;
  std::int32_t cut_label = 0;
  std::uint32_t unicode_data = 0;  // the tokenizer's text::UnicodeData (0 in older caches)
  char reserved[512 - 236] = {};

  std::string replace_span_token() const { return std::string(replace_span, replace_span_bytes); }

  /// True when this header was made from the same inputs as `want` (rows aside).
  bool same_inputs(const CacheHeader& want) const {
    return std::memcmp(magic, want.magic, 8) == 0 && version == want.version && kind == want.kind &&
           vocab_fingerprint == want.vocab_fingerprint && labels_fingerprint == want.labels_fingerprint &&
           max_seq_length == want.max_seq_length && lower_case == want.lower_case &&
           max_chars_per_word == want.max_chars_per_word && control_categories == want.control_categories &&
           unicode_data == want.unicode_data &&
           replace_span_token() == want.replace_span_token() && max_words == want.max_words &&
           (max_words == 0 || cut_label == want.cut_label) &&
           source_size == want.source_size && source_xxh64 == want.source_xxh64;
  }

  /// What differs from `want`, for the log line that says why a cache is rebuilt.
  std::string difference(const CacheHeader& want) const {
    if (std::memcmp(magic, want.magic, 8) != 0) return "not a ctdl feature cache";
    if (version != want.version) return "format version " + std::to_string(version) + ", now " + std::to_string(want.version);
    if (kind != want.kind) return "another kind of features";
    if (vocab_fingerprint != want.vocab_fingerprint) return "another vocabulary";
    if (labels_fingerprint != want.labels_fingerprint) return "other labels";
    if (max_seq_length != want.max_seq_length)
      return "max_seq_length " + std::to_string(max_seq_length) + ", now " + std::to_string(want.max_seq_length);
    if (lower_case != want.lower_case) return "other casing";
    if (max_chars_per_word != want.max_chars_per_word) return "another max_chars_per_word";
    if (control_categories != want.control_categories) return "other control-character rules (--tokenizer_rules)";
    if (unicode_data != want.unicode_data)
      return unicode_data == 0 ? "made before the cache recorded the tokenizer's Unicode database (--tokenizer_rules)"
                               : "another Unicode character database (--tokenizer_rules)";
    if (replace_span_token() != want.replace_span_token()) return "another replace_span";
    if (max_words != want.max_words || (max_words != 0 && cut_label != want.cut_label))
      return max_words == 0 ? "sentences not cut by words, now cut at " + std::to_string(want.max_words) + " (--ner_scheme)"
             : want.max_words == 0 ? "sentences cut at " + std::to_string(max_words) + " words, now not (--ner_scheme)"
                                   : "another sentence cut";
    if (source_size != want.source_size || source_xxh64 != want.source_xxh64) return "the data file changed";
    return "";
  }
};
static_assert(sizeof(CacheHeader) == 512, "the cache header is 512 bytes on disk");

inline std::uint64_t span_record_bytes(std::uint32_t max_seq_length) { return 4ull * max_seq_length + 8; }
inline std::uint64_t token_record_bytes(std::uint32_t max_seq_length) { return 8ull * max_seq_length + 8; }

/// The source-file part of a cache key: size and content hash. Not the modification
/// time: a file replaced by other content of the same size with its timestamp kept
/// (cp -p, rsync -t, an archive) must not reuse the old features. Hashing reads the
/// file (about 4 GB/s from the page cache: 0.1 s for 400 MB).
inline void stamp_source(CacheHeader& h, const std::string& source) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) throw Error(source + ": cannot open (" + std::strerror(errno) + ")");
  h.source_size = static_cast<std::uint64_t>(st.st_size);
  h.source_xxh64 = file_fingerprint(source);
}

/// A feature cache file, memory-mapped.
class FeatureCache {
 public:
  /// Opens and checks a cache file (magic, version, size = header + rows x record).
  explicit FeatureCache(const std::string& path) : file_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    if (file_.size() < sizeof(CacheHeader)) throw Error(path + ": too short to be a feature cache");
    std::memcpy(&header_, file_.data(), sizeof header_);
    if (std::memcmp(header_.magic, "CTDLFEAT", 8) != 0) throw Error(path + ": not a ctdl feature cache");
    if (header_.version != kFeatureCacheVersion)
      throw Error(path + ": feature cache format " + std::to_string(header_.version) + ", this build reads " +
                  std::to_string(kFeatureCacheVersion));
    const auto M = header_.max_seq_length;
    const auto want = header_.kind == FeatureKind::span ? span_record_bytes(M) : token_record_bytes(M);
    if (header_.record_bytes != want || file_.size() != sizeof(CacheHeader) + header_.rows * header_.record_bytes)
      throw Error(path + ": truncated or corrupt feature cache (" + std::to_string(file_.size()) + " bytes for " +
                  std::to_string(header_.rows) + " records of " + std::to_string(header_.record_bytes) + ")");
  }

  ~FeatureCache() {
    if (fd_ >= 0) ::close(fd_);
  }
  FeatureCache(const FeatureCache&) = delete;
  FeatureCache& operator=(const FeatureCache&) = delete;

  const std::string& path() const { return file_.path(); }
  const CacheHeader& header() const { return header_; }
  std::size_t rows() const { return header_.rows; }
  index_t max_seq_length() const { return header_.max_seq_length; }
  FeatureKind kind() const { return header_.kind; }

  const std::int32_t* input_ids(std::size_t row) const { return ints(row, 0); }
  /// span features: the row's label id.
  std::int32_t label_id(std::size_t row) const { return ints(row, header_.max_seq_length)[0]; }
  /// token features: one label id per position, -1 where nothing is scored.
  const std::int32_t* label_ids(std::size_t row) const { return ints(row, header_.max_seq_length); }
  /// span: the row's line in the source file; token: its sentence index.
  std::uint32_t source_index(std::size_t row) const { return tail(row)[0]; }
  /// token features: the sentence's first word in this chunk.
  std::uint32_t first_word(std::size_t row) const { return tail(row)[1]; }

  /// Drops the pages read so far from the resident set (the page cache keeps them).
  void release() const { file_.release(0, file_.size()); }

  /// Copies record `row` (record_bytes) into `dst` with pread, not through the mapping.
  /// For shuffled reads: each read through the mapping would map up to 64 KiB around
  /// the record (the kernel's fault-around), so a shuffled epoch would make the whole
  /// file resident; pread copies from the page cache and the process keeps nothing.
  void read_record(std::size_t row, void* dst) const {
    const auto offset = static_cast<off_t>(sizeof(CacheHeader) + row * header_.record_bytes);
    std::size_t done = 0;
    while (done < header_.record_bytes) {
      const auto n = ::pread(fd_, static_cast<char*>(dst) + done, header_.record_bytes - done,
                             offset + static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(path() + ": cannot read record " + std::to_string(row) + " (" +
                              (n < 0 ? std::strerror(errno) : "end of file") + ")");
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  const unsigned char* record(std::size_t row) const {
    return file_.data() + sizeof(CacheHeader) + row * header_.record_bytes;
  }
  const std::int32_t* ints(std::size_t row, std::size_t offset) const {
    return reinterpret_cast<const std::int32_t*>(record(row)) + offset;
  }
  const std::uint32_t* tail(std::size_t row) const {
    const std::size_t ints_before = header_.kind == FeatureKind::span ? header_.max_seq_length + 1u
                                                                       : 2u * header_.max_seq_length;
    return reinterpret_cast<const std::uint32_t*>(record(row)) + ints_before;
  }

  io::MappedFile file_;
  int fd_ = -1;
  CacheHeader header_;
};

/// Writes a cache under a temporary name; commit() renames it into place.
class CacheWriter {
 public:
  CacheWriter(std::string path, CacheHeader header) : path_(std::move(path)), header_(header) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid());
    out_ = std::fopen(tmp_.c_str(), "wb");
    if (!out_) throw Error(tmp_ + ": cannot create (" + std::strerror(errno) + ")");
    std::setvbuf(out_, nullptr, _IOFBF, 1 << 20);
    write(&header_, sizeof header_);
  }
  ~CacheWriter() {
    if (out_) {
      std::fclose(out_);
      std::remove(tmp_.c_str());
    }
  }
  CacheWriter(const CacheWriter&) = delete;
  CacheWriter& operator=(const CacheWriter&) = delete;

  void append(const void* records, std::size_t count) {
    write(records, count * header_.record_bytes);
    header_.rows += count;
  }

  void commit(std::uint64_t skipped_rows) {
    header_.skipped_rows = skipped_rows;
    if (std::fseek(out_, 0, SEEK_SET) != 0) fail();
    write(&header_, sizeof header_);
    if (std::fclose(std::exchange(out_, nullptr)) != 0) fail();
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) throw Error(path_ + ": cannot move the finished cache into place (" + ec.message() + ")");
  }

 private:
  void write(const void* p, std::size_t n) {
    if (n && std::fwrite(p, 1, n, out_) != n) fail();
  }
  [[noreturn]] void fail() { throw Error(tmp_ + ": write failed (" + std::strerror(errno) + "); is the disk full?"); }

  std::string path_, tmp_;
  CacheHeader header_;
  std::FILE* out_ = nullptr;
};

struct PrepareReport {
  std::size_t rows = 0, skipped = 0;
  double seconds = 0;
  bool rebuilt = false;
  std::string reason;  // why it was (re)built, or "" when reused
  std::vector<std::string> skipped_messages;
};

/// Progress of a preparation: rows so far, bytes of the source read, its size.
using PrepareProgress = std::function<void(std::size_t rows, std::size_t bytes, std::size_t total)>;

namespace detail {

/// The header every cache of `source` built with these inputs has (kind-specific fields
/// and the row count come later).
inline CacheHeader cache_header(FeatureKind kind, const std::string& source, const LabelSet& labels,
                                const text::FullTokenizer& tok, index_t max_seq_length) {
  CacheHeader h;
  h.kind = kind;
  h.vocab_fingerprint = tok.vocab().fingerprint();
  h.labels_fingerprint = labels.fingerprint();
  h.max_seq_length = static_cast<std::uint32_t>(max_seq_length);
  h.lower_case = tok.basic().options().lower_case;
  h.pad_id = tok.vocab().special().pad;
  h.max_chars_per_word = static_cast<std::uint32_t>(tok.wordpiece().options().max_input_chars_per_word);
  h.control_categories = static_cast<std::uint32_t>(tok.basic().options().control);
  h.unicode_data = static_cast<std::uint32_t>(tok.basic().options().unicode);
  h.record_bytes = kind == FeatureKind::span ? span_record_bytes(h.max_seq_length) : token_record_bytes(h.max_seq_length);
  stamp_source(h, source);
  return h;
}

/// True when `path` is a whole cache made from the inputs `want` describes (the report
/// gets its row counts); otherwise the report says why it must be built.
inline bool reuse_cache(const std::string& path, const CacheHeader& want, PrepareReport& report) {
  if (!std::filesystem::exists(path)) {
    report.reason = "no cache yet";
    return false;
  }
  try {
    FeatureCache existing(path);
    if (existing.header().same_inputs(want)) {
      report.rows = existing.rows();
      report.skipped = existing.header().skipped_rows;
      return true;
    }
    report.reason = existing.header().difference(want);
  } catch (const Error& e) {
    report.reason = e.what();
  }
  return false;
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace detail

/// The cache header span features of `tsv` would have.
inline CacheHeader span_cache_header(const std::string& tsv, const LabelSet& labels, const SpanFeatureBuilder& builder,
                                     const text::FullTokenizer& tok) {
  CacheHeader h = detail::cache_header(FeatureKind::span, tsv, labels, tok, builder.max_seq_length());
  const std::string replace = builder.options().replace_span.value_or("");
  if (replace.size() > sizeof h.replace_span) throw Error("replace_span '" + replace + "' is longer than 128 bytes");
  h.replace_span_bytes = static_cast<std::uint32_t>(replace.size());
  std::memcpy(h.replace_span, replace.data(), replace.size());
  return h;
}

/// Makes sure `cache_path` holds the span features of `tsv`: reuses it when its header
/// matches the inputs, otherwise reads the TSV (bad rows: error, or skipped and counted
/// with skip_bad_rows) and builds the features with all threads, in chunks, so memory
/// stays flat whatever the file's size. `on_skip` hears of every skipped row, in file
/// order, whether the cache is built or reused (a reused cache that skipped rows has the
/// TSV read again, without tokenizing, to list them; without skip_bad_rows that reading
/// stops at the first bad row with its error, as a fresh build does).
inline PrepareReport prepare_span_cache(const std::string& tsv, const std::string& cache_path, const LabelSet& labels,
                                        const SpanFeatureBuilder& builder, const text::FullTokenizer& tok,
                                        bool skip_bad_rows, const PrepareProgress& progress = {},
                                        const SkipSink& on_skip = {}) {
  const auto start = std::chrono::steady_clock::now();
  const CacheHeader want = span_cache_header(tsv, labels, builder, tok);
  PrepareReport report;
  if (detail::reuse_cache(cache_path, want, report)) {
    // A cache made with skip_bad_rows left rows out: read the TSV again, without
    // tokenizing, to list them, or, without skip_bad_rows, to stop at the first as a
    // fresh build would.
    if (report.skipped > 0) {
      SpanTsvReader rescan(tsv, labels, {.skip_bad_rows = skip_bad_rows, .on_skip = on_skip});
      for (SpanRow row; rescan.next(row);) {
      }
      report.skipped_messages = rescan.skipped_messages();
    }
    return report;
  }
  report.rebuilt = true;

  SpanTsvReader reader(tsv, labels, {.skip_bad_rows = skip_bad_rows, .on_skip = on_skip});
  CacheWriter writer(cache_path, want);
  const std::size_t M = want.max_seq_length;
  const std::size_t ints_per_record = want.record_bytes / 4;
  constexpr std::size_t kChunk = 8192;
  std::vector<SpanRow> rows(kChunk);
  std::vector<std::int32_t> records(kChunk * ints_per_record);
  for (;;) {
    std::size_t n = 0;
    while (n < kChunk && reader.next(rows[n])) ++n;
    if (n == 0) break;
#pragma omp parallel for schedule(dynamic, 64)
    for (std::size_t i = 0; i < n; ++i) {
      std::int32_t* rec = records.data() + i * ints_per_record;
      builder.build(rows[i].left, rows[i].span, rows[i].right, std::span<std::int32_t>(rec, M));
      rec[M] = rows[i].label_id;
      rec[M + 1] = static_cast<std::int32_t>(static_cast<std::uint32_t>(rows[i].line));
    }
    writer.append(records.data(), n);
    report.rows += n;
    if (progress) progress(report.rows, reader.position(), reader.size_bytes());
  }
  writer.commit(reader.skipped());
  report.skipped = reader.skipped();
  report.skipped_messages = reader.skipped_messages();
  report.seconds = detail::seconds_since(start);
  return report;
}

/// The same for token (NER) features of a CoNLL file; a row of the cache is one feature
/// (a sentence, or a piece of a long one), `skipped` counts sentences (and `on_skip`
/// hears of each skipped sentence).
inline PrepareReport prepare_token_cache(const std::string& conll, const std::string& cache_path,
                                         const LabelSet& labels, const TokenFeatureBuilder& builder,
                                         const text::FullTokenizer& tok, bool skip_bad_rows,
                                         const PrepareProgress& progress = {}, const SkipSink& on_skip = {}) {
  const auto start = std::chrono::steady_clock::now();
  CacheHeader want = detail::cache_header(FeatureKind::token, conll, labels, tok, builder.max_seq_length());
  want.max_words = static_cast<std::uint32_t>(builder.options().max_words);
  want.cut_label = want.max_words ? builder.options().cut_label : 0;
  PrepareReport report;
  if (detail::reuse_cache(cache_path, want, report)) {
    if (report.skipped > 0) {  // as prepare_span_cache: list them, or stop at the first
      ConllReader rescan(conll, &labels, {.skip_bad_rows = skip_bad_rows, .on_skip = on_skip});
      for (Sentence s; rescan.next(s);) {
      }
      report.skipped_messages = rescan.skipped_messages();
    }
    return report;
  }
  report.rebuilt = true;

  ConllReader reader(conll, &labels, {.skip_bad_rows = skip_bad_rows, .on_skip = on_skip});
  CacheWriter writer(cache_path, want);
  const std::size_t M = want.max_seq_length;
  constexpr std::size_t kChunk = 2048;
  std::vector<Sentence> sentences(kChunk);
  std::vector<std::vector<TokenFeature>> features(kChunk);
  std::vector<std::int32_t> record(want.record_bytes / 4);
  for (;;) {
    std::size_t n = 0;
    while (n < kChunk && reader.next(sentences[n])) ++n;
    if (n == 0) break;
#pragma omp parallel for schedule(dynamic, 16)
    for (std::size_t i = 0; i < n; ++i) {
      features[i].clear();
      builder.build(sentences[i], features[i]);
    }
    for (std::size_t i = 0; i < n; ++i)
      for (const auto& f : features[i]) {
        std::copy(f.input_ids.begin(), f.input_ids.end(), record.begin());
        std::copy(f.label_ids.begin(), f.label_ids.end(), record.begin() + static_cast<std::ptrdiff_t>(M));
        record[2 * M] = static_cast<std::int32_t>(f.sentence);
        record[2 * M + 1] = static_cast<std::int32_t>(f.first_word);
        writer.append(record.data(), 1);
        ++report.rows;
      }
    if (progress) progress(report.rows, reader.position(), reader.size_bytes());
  }
  writer.commit(reader.skipped());
  report.skipped = reader.skipped();
  report.skipped_messages = reader.skipped_messages();
  report.seconds = detail::seconds_since(start);
  return report;
}

}  // namespace ctdl::data

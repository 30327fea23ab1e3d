#pragma once
// Batcher: batches of a feature cache for training, evaluation and prediction.
//
// Each epoch has an order of the rows: a Fisher-Yates shuffle driven by Philox keyed by
// (seed, epoch), the same on every machine, or file order with shuffle = false. The order
// is cut into global batches of world_size x batch_size rows, and rank r takes rows
// [r * batch_size, (r + 1) * batch_size) of each global batch. So the sequence of global
// batches does not depend on how many ranks share it: N ranks with batch b see exactly
// what one process with batch N * b sees. drop_remainder (training) drops a last global
// batch that is not full; otherwise it is kept, and a rank whose slice of it is empty
// still gets a batch, of 0 rows, so that all ranks take the same number of steps.
//
// Width: by default every batch is M (the cache's max_seq_length) tokens wide, as the
// original pipeline pads. With trim_padding, a batch is as wide as its longest row (up
// to its last non-[PAD] token), rounded up to a multiple of width_multiple and at most M:
// the columns cut off are [PAD] in every row, which attend to nothing, are attended by
// nothing and carry no label, so the model's outputs for the real tokens are the same
// (up to the rounding of sums over fewer terms) for a fraction of the work when rows are
// short (BC5CDR's sentences: half of M = 128 in a random batch of 32). Only trailing
// [PAD]s go: the span features' left padding keeps each span at its position.
//
// Grouping by length (group_by_length, with trim_padding) puts rows of similar length in
// the same batch, so that little padding is left to compute: in file order (inference)
// the whole order is sorted by decreasing length (ties in file order), and a row's
// outputs, put back in its place through Batch::rows, are the same up to rounding
// (BC5CDR's devel set is predicted 2.7x as fast as in file-order batches, docs/benchmarks.md).
// Shuffled (training, as Hugging Face's group_by_length), the shuffled order is cut into
// runs of global batches and each run sorted by decreasing length: batches still mix the
// whole data set over an epoch, but each holds rows of similar length. A run is
// kGroupBatches global batches, fewer when the data set holds under 4 such runs (as
// Hugging Face's LengthGroupedSampler makes its "megabatches").
// Either way the order is one process's, cut into global batches as above, so it does not
// depend on the number of ranks.
//
// A background thread assembles the next `prefetch` batches while the model runs.
// Memory stays flat whatever the cache's size: in file order records are read through
// the mapping and the pages behind are dropped every 64 MiB; shuffled, each record is
// copied with pread (grouped by length, too).

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ctdl/core/batch.hpp"
#include "ctdl/core/philox.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/data/feature_cache.hpp"
#include "ctdl/data/token_scheme.hpp"

namespace ctdl::data {

/// One rank's batch (core/batch.hpp): [rows, S] ids, masks and segment ids (S = M, or
/// less with trim_padding); labels has one id per row for span features and rows x S,
/// row-major, for token features (-1 = not scored); `rows` holds each example's row in
/// the cache. The model reads it as it is.
using Batch = ctdl::Batch;

/// The order of rows 0..n-1 in `epoch`: file order, or a Philox-driven Fisher-Yates
/// shuffle keyed by (seed, epoch) with unbiased bounded draws (Lemire's method).
inline std::vector<std::uint32_t> epoch_order(std::size_t n, bool shuffle, std::uint64_t seed, std::uint64_t epoch) {
  if (n > 0xFFFFFFFFull) throw Error("epoch_order: more than 2^32 rows");
  std::vector<std::uint32_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<std::uint32_t>(i);
  if (!shuffle || n < 2) return order;
  const Philox::Key key{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
  for (std::size_t j = n - 1; j > 0; --j) {
    const auto bound = static_cast<std::uint32_t>(j + 1);  // rows are uint32 in the cache
    const std::uint32_t threshold = static_cast<std::uint32_t>(0u - bound) % bound;
    for (std::uint32_t attempt = 0;; ++attempt) {
      const auto r = Philox::generate({static_cast<std::uint32_t>(j), static_cast<std::uint32_t>(epoch),
                                       static_cast<std::uint32_t>(epoch >> 32), attempt},
                                      key);
      const std::uint64_t m = std::uint64_t{r[0]} * bound;
      if (static_cast<std::uint32_t>(m) >= threshold) {  // accept: no modulo bias
        std::swap(order[j], order[static_cast<std::size_t>(m >> 32)]);
        break;
      }
    }
  }
  return order;
}

class Batcher {
 public:
  struct Options {
    index_t batch_size = 32;  ///< rows per rank per step
    int rank = 0;
    int world_size = 1;
    bool shuffle = true;
    std::uint64_t seed = 0;
    bool drop_remainder = false;
    int prefetch = 2;  ///< batches assembled ahead by a background thread; 0 = none
    /// Each batch as wide as its longest row, rounded up to a multiple of width_multiple
    /// (at most M), instead of M wide (the header says why that is the same).
    bool trim_padding = false;
    index_t width_multiple = 8;
    /// Rows of similar length batched together (the header says how); needs trim_padding.
    bool group_by_length = false;
    /// Token features: the labels each batch carries (data/token_scheme.hpp). tensorflow
    /// labels every position from the cache's first-piece labels, with word_labels = L.
    TokenScheme token_scheme = TokenScheme::first_piece;
    index_t word_labels = 0;
  };

  /// Shuffled and grouped by length, the runs sorted by length are this many global
  /// batches (at most; group_run_rows()).
  static constexpr std::size_t kGroupBatches = 50;

  Batcher(const FeatureCache& cache, Options options) : cache_(cache), options_(options) {
    if (options_.batch_size < 1) throw Error("batch size must be at least 1");
    if (options_.width_multiple < 1) throw Error("width_multiple must be at least 1");
    if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size)
      throw Error("rank " + std::to_string(options_.rank) + " is not in [0, " + std::to_string(options_.world_size) + ")");
    if (options_.group_by_length && !options_.trim_padding)
      throw Error("group_by_length needs trim_padding (batches M wide gain nothing from it)");
    if (options_.token_scheme == TokenScheme::tensorflow && (cache_.kind() != FeatureKind::token || options_.word_labels < 1))
      throw Error(cache_.path() + ": the tensorflow token scheme needs token features and the number of word labels");
  }
  ~Batcher() { stop(); }
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  const Options& options() const { return options_; }
  std::size_t global_batch_rows() const {
    return static_cast<std::size_t>(options_.batch_size) * static_cast<std::size_t>(options_.world_size);
  }
  /// Shuffled and grouped by length: the rows of each run sorted by length (at least one
  /// global batch, at most kGroupBatches, and under a quarter of the data set when it can).
  std::size_t group_run_rows() const {
    const std::size_t g = global_batch_rows();
    return std::clamp<std::size_t>(cache_.rows() / (4 * g), 1, kGroupBatches) * g;
  }
  /// Steps in one epoch (the same on every rank).
  std::size_t batches_per_epoch() const {
    const std::size_t g = global_batch_rows();
    return options_.drop_remainder ? cache_.rows() / g : (cache_.rows() + g - 1) / g;
  }

  /// Begins an epoch: its row order, and the producer thread when prefetching. A resumed
  /// run starts at `first_batch` (the batches_taken() of the run it continues): the same
  /// order, so the same batches follow.
  void start_epoch(std::uint64_t epoch, std::size_t first_batch = 0) {
    stop();
    if (first_batch > batches_per_epoch())
      throw Error("batch " + std::to_string(first_batch) + " of epoch " + std::to_string(epoch) + ": an epoch has " +
                  std::to_string(batches_per_epoch()) + " batches");
    order_ = epoch_order(cache_.rows(), options_.shuffle, options_.seed, epoch);
    if (options_.group_by_length) group_by_length();
    epoch_ = epoch;
    next_batch_ = first_batch;
    error_ = nullptr;
    stopping_ = false;
    queue_.clear();
    if (options_.prefetch > 0) producer_ = std::thread([this] { produce(); });
  }

  /// The epoch begun last, and how many of its batches next() has handed out: the data
  /// position a checkpoint stores (batches prefetched but not taken do not count).
  std::uint64_t epoch() const { return epoch_; }
  std::size_t batches_taken() const { return next_batch_; }

  /// The next batch of this epoch into `out`; false when the epoch is over.
  bool next(Batch& out) {
    if (next_batch_ >= batches_per_epoch()) return false;
    if (options_.prefetch == 0) {
      assemble(next_batch_++, out);
      return true;
    }
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return !queue_.empty() || error_; });
    if (queue_.empty() && error_) std::rethrow_exception(error_);
    out = std::move(queue_.front());
    queue_.pop_front();
    ++next_batch_;
    space_.notify_one();
    return true;
  }

  /// The epoch's order of the cache's rows (positions 0..rows-1 of it are cut into batches).
  const std::vector<std::uint32_t>& order() const { return order_; }

  /// The rows of global batch `g` that belong to this rank (positions into the order).
  std::pair<std::size_t, std::size_t> slice(std::size_t g) const {
    const std::size_t begin = g * global_batch_rows() + static_cast<std::size_t>(options_.rank) * options_.batch_size;
    const std::size_t end = begin + static_cast<std::size_t>(options_.batch_size);
    const std::size_t n = order_.size();
    return {std::min(begin, n), std::min(end, n)};
  }

 private:
  /// A record's length: the position after its last non-[PAD] token (0 for none).
  static index_t length_of(const std::int32_t* record, index_t M, std::int32_t pad, index_t at_least = 0) {
    index_t len = M;
    while (len > at_least && attention_mask(record[len - 1], pad) == 0) --len;
    return len;
  }

  /// Sorts order_ by decreasing length: all of it in file order; shuffled, each run of
  /// group_run_rows() rows. Stable, so ties keep their order. The lengths are read once,
  /// in one pass through the mapping.
  void group_by_length() {
    const std::size_t n = cache_.rows();
    if (lengths_.size() != n) {
      const index_t M = cache_.max_seq_length();
      const std::int32_t pad = cache_.header().pad_id;
      if (M > 0xFFFF) throw Error(cache_.path() + ": group_by_length: max_seq_length " + std::to_string(M) + " above 65535");
      lengths_.resize(n);
      std::size_t touched = 0;
      for (std::size_t row = 0; row < n; ++row) {
        lengths_[row] = static_cast<std::uint16_t>(length_of(cache_.input_ids(row), M, pad));
        touched += cache_.header().record_bytes;
        if (touched > kReleaseBytes) {
          cache_.release();
          touched = 0;
        }
      }
      cache_.release();
    }
    const auto longer = [&](std::uint32_t a, std::uint32_t b) { return lengths_[a] > lengths_[b]; };
    const std::size_t run = options_.shuffle ? group_run_rows() : n;
    for (std::size_t begin = 0; begin < n; begin += run)
      std::stable_sort(order_.begin() + static_cast<std::ptrdiff_t>(begin),
                       order_.begin() + static_cast<std::ptrdiff_t>(std::min(n, begin + run)), longer);
  }

  bool random_access() const { return options_.shuffle || options_.group_by_length; }

  void assemble(std::size_t g, Batch& b) {
    const auto [begin, end] = slice(g);
    const auto rows = static_cast<index_t>(end - begin);
    const index_t M = cache_.max_seq_length();
    const bool token = cache_.kind() == FeatureKind::token;
    const std::int32_t pad = cache_.header().pad_id;
    // The records first (the width depends on them all). In file order they are read
    // through the mapping (and what is behind is dropped every 64 MiB); in any other order
    // each is copied with pread (FeatureCache::read_record says why).
    const std::size_t words = cache_.header().record_bytes / 4;
    records_.resize(random_access() ? static_cast<std::size_t>(rows) * words : 0);
    record_of_.resize(static_cast<std::size_t>(rows));
    b.rows.resize(static_cast<std::size_t>(rows));
    index_t longest = 0;
    for (index_t i = 0; i < rows; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const std::size_t row = order_[begin + k];
      b.rows[k] = row;
      if (random_access()) {
        cache_.read_record(row, records_.data() + k * words);
        record_of_[k] = records_.data() + k * words;
      } else {
        record_of_[k] = cache_.input_ids(row);
      }
      if (options_.trim_padding) longest = std::max(longest, length_of(record_of_[k], M, pad, longest));
    }
    const index_t S = options_.trim_padding && rows > 0
                          ? std::min(M, std::max<index_t>(1, (longest + options_.width_multiple - 1) /
                                                                 options_.width_multiple * options_.width_multiple))
                          : M;
    b.input_ids = Batch::Ids::uninitialized({rows, S});
    b.attention_mask = Batch::Ids::uninitialized({rows, S});
    b.token_type_ids = Batch::Ids::full({rows, S}, 0);
    b.labels = Tensor<std::int32_t, Shape<dyn>>::uninitialized({token ? rows * S : rows});
    for (index_t i = 0; i < rows; ++i) {
      const std::int32_t* rec = record_of_[static_cast<std::size_t>(i)];
      std::int32_t* dst = b.input_ids.data() + i * S;
      std::int32_t* mask = b.attention_mask.data() + i * S;
      for (index_t k = 0; k < S; ++k) {
        dst[k] = rec[k];
        mask[k] = attention_mask(rec[k], pad);
      }
      if (token) {
        std::copy_n(rec + M, S, b.labels.data() + i * S);
        for (index_t k = S; k < M; ++k)  // cut off: [PAD]s, which never carry a label
          if (rec[M + k] >= 0)
            throw Error(cache_.path() + ": feature " + std::to_string(b.rows[static_cast<std::size_t>(i)]) +
                        " has a label at position " + std::to_string(k) + ", a [PAD] (a corrupt cache)");
        if (options_.token_scheme == TokenScheme::tensorflow)
          tensorflow_token_labels(b.labels.data() + i * S, S, length_of(rec, M, pad), options_.word_labels);
      } else {
        b.labels.data()[i] = rec[M];
      }
    }
    if (!random_access()) {
      touched_ += static_cast<std::size_t>(rows) * cache_.header().record_bytes;
      if (touched_ > kReleaseBytes) {
        cache_.release();
        touched_ = 0;
      }
    }
  }

  void produce() {
    try {
      for (std::size_t g = next_batch_; g < batches_per_epoch(); ++g) {
        Batch b;
        assemble(g, b);
        std::unique_lock lock(mutex_);
        space_.wait(lock, [&] { return stopping_ || queue_.size() < static_cast<std::size_t>(options_.prefetch); });
        if (stopping_) return;
        queue_.push_back(std::move(b));
        ready_.notify_one();
      }
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
      ready_.notify_one();
    }
  }

  void stop() {
    if (!producer_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    producer_.join();
  }

  static constexpr std::size_t kReleaseBytes = std::size_t{64} << 20;

  const FeatureCache& cache_;
  Options options_;
  std::vector<std::uint32_t> order_;
  std::vector<std::uint16_t> lengths_;  // each row's length, when grouping by length
  std::uint64_t epoch_ = 0;
  std::size_t next_batch_ = 0, touched_ = 0;
  std::vector<std::int32_t> records_;         // the batch's records, for shuffled reads
  std::vector<const std::int32_t*> record_of_;  // each row's record (in records_ or the mapping)
  std::thread producer_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stopping_ = false;
};

}  // namespace ctdl::data

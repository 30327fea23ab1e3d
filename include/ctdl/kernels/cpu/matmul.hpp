#pragma once
// CPU matrix multiplication: C[b] = op(A[b]) · op(B[b]) + beta · C[b] for b in batch.
//
// A is M x K (stored K x M when trans_a), B is K x N (stored N x K when trans_b), C is
// M x N, all row-major and contiguous per batch; a batch stride of 0 broadcasts one
// matrix over the batch (shared weights).
//
// Backends:
//   float, bf16 -> oneDNN matmul, 2.x or 3.x (dnnl_compat.hpp; fp32 accumulation; bf16
//                  runs on AMX or AVX512-BF16 where the CPU has them; on a CPU with
//                  neither, oneDNN has no bf16 matmul and bf16 goes through float).
//                  Primitives are created once per problem shape and cached.
//
// Threads: the per-head GEMMs of attention call matmul from inside an OpenMP parallel
// region, so one cached primitive runs on many threads at once. oneDNN allows that only
// with user-managed scratchpads (its library scratchpad is shared by all primitives and
// tied to the thread that created them; reusing a primitive on another thread races on
// it and returns wrong values). Each thread therefore brings its own scratchpad and its
// own stream.
//   double      -> Eigen (oneDNN has no f64 matmul); also every type when ctdl is built
//                  with CTDL_WITH_ONEDNN=OFF (bf16/fp16 through float).
//   fp16        -> converted through float.

#include <array>
#include <cstring>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <omp.h>

#include "ctdl/kernels/matmul_dims.hpp"
#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"

#if defined(CTDL_WITH_ONEDNN)
#include "ctdl/kernels/cpu/dnnl_compat.hpp"
#endif

namespace ctdl::kernels::cpu {

/// The problem of a product (kernels/matmul_dims.hpp; cuBLASLt's GemmDims is the same type).
using MatmulDims = kernels::MatmulDims;

/// C = op(A) op(B) + beta C. TA is the input element type, TC the output's.
template <class TA, class TC>
void matmul(const TA* a, const TA* b, TC* c, const MatmulDims& d, float beta = 0.0f);

/// A diagnostic log of matmul calls (benchmarks use it to time "the step's matmuls
/// alone"). While installed with set_matmul_log, every matmul appends its problem.
struct MatmulLog {
  struct Call {
    MatmulDims dims;
    bool bf16_inputs;
    bool float_output;
    bool in_parallel_region;  // called from inside an OpenMP parallel region (per-head GEMMs)
  };
  std::mutex mutex;
  std::vector<Call> calls;
  std::map<std::string, double> flops_by_implementation;  // 2 m n k per call, by the kernel that ran it
};
inline std::atomic<MatmulLog*>& matmul_log_slot() {
  static std::atomic<MatmulLog*> slot{nullptr};
  return slot;
}
/// Counts a call's flops under the implementation that ran it (while a log is installed;
/// otherwise nothing, not even the name, is made).
inline void log_implementation(const std::string& impl, const MatmulDims& d, bool reordered_weights = false) {
  if (MatmulLog* log = matmul_log_slot().load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(log->mutex);
    log->flops_by_implementation[reordered_weights ? impl + " (reordered weights)" : impl] +=
        2.0 * static_cast<double>(d.batch) * static_cast<double>(d.m) * static_cast<double>(d.n) *
        static_cast<double>(d.k);
  }
}
/// Installs (or, with nullptr, removes) the log.
inline void set_matmul_log(MatmulLog* log) { matmul_log_slot().store(log); }

/// The implementation oneDNN chose for the last float/bf16 problem (for benchmarks and
/// logs), e.g. "brg:avx512_core_bf16"; "eigen" when oneDNN is not used.
std::string matmul_implementation(bool bf16);

/// Whether matmul_reused_weight exists for inputs TA and weights stored as TW (oneDNN:
/// float inputs from float weights, bf16 inputs from float or bf16 weights).
template <class TA, class TW>
inline constexpr bool has_reused_weight_matmul =
#if defined(CTDL_WITH_ONEDNN)
    (std::is_same_v<TA, float> || std::is_same_v<TA, bf16>) && (std::is_same_v<TW, float> || std::is_same_v<TW, TA>);
#else
    false;
#endif

/// y (m x n, float) = x (m x k, TA) W^T, for a weight W (n x k, row-major, stored as TW)
/// that stays the same over many calls (inference; the micro-batches of a training
/// step). W is reordered once — and rounded to TA — into the layout oneDNN's matmul
/// prefers for the problem, and kept in `slot` (an opaque holder the caller owns;
/// created on first use) with `version`; it is made again only when a call passes
/// another version (the weight changed) or a problem wants another layout. Otherwise
/// oneDNN repacks W's blocks on every call (benchmarks/bench_weight_layout: 6-28% of a
/// BERT-base linear layer's time in isolation).
template <class TA, class TW>
void matmul_reused_weight(const TA* x, const TW* w, std::uint64_t version, std::shared_ptr<void>& slot, float* y,
                          index_t m, index_t n, index_t k);

// ============================================================================

namespace detail {

inline MatmulDims packed(MatmulDims d) {
  if (d.lda < 0) d.lda = d.trans_a ? d.m : d.k;
  if (d.ldb < 0) d.ldb = d.trans_b ? d.k : d.n;
  if (d.ldc < 0) d.ldc = d.n;
  if (d.stride_a < 0) d.stride_a = (d.trans_a ? d.k : d.m) * d.lda;
  if (d.stride_b < 0) d.stride_b = (d.trans_b ? d.n : d.k) * d.ldb;
  if (d.stride_c < 0) d.stride_c = d.m * d.ldc;
  return d;
}

template <class T, class TC>
void matmul_eigen(const T* a, const T* b, TC* c, const MatmulDims& d, float beta) {
  log_implementation("eigen", d);
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MatC = Eigen::Matrix<TC, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  for (index_t i = 0; i < d.batch; ++i) {
    Eigen::Map<const Mat, 0, Stride> A(a + i * d.stride_a, d.trans_a ? d.k : d.m, d.trans_a ? d.m : d.k, Stride(d.lda));
    Eigen::Map<const Mat, 0, Stride> B(b + i * d.stride_b, d.trans_b ? d.n : d.k, d.trans_b ? d.k : d.n, Stride(d.ldb));
    Eigen::Map<MatC, 0, Stride> C(c + i * d.stride_c, d.m, d.n, Stride(d.ldc));
    Mat prod;
    if (!d.trans_a && !d.trans_b) prod.noalias() = A * B;
    else if (d.trans_a && !d.trans_b) prod.noalias() = A.transpose() * B;
    else if (!d.trans_a && d.trans_b) prod.noalias() = A * B.transpose();
    else prod.noalias() = A.transpose() * B.transpose();
    if (beta == 0.0f) C = prod.template cast<TC>();
    else C = (C.template cast<T>() * static_cast<T>(beta) + prod).template cast<TC>();
  }
}


/// C *= beta over the stored M x N matrices of the batch.
template <class TC>
void scale_c(TC* c, const MatmulDims& d, float beta) {
  for (index_t b = 0; b < d.batch; ++b)
    for (index_t i = 0; i < d.m; ++i) {
      TC* row = c + b * d.stride_c + i * d.ldc;
      for (index_t j = 0; j < d.n; ++j) row[j] = beta == 0.0f ? TC(0) : convert<TC>(convert<float>(row[j]) * beta);
    }
}

/// Elements spanned by `batch` matrices of rows x cols, rows `ld` apart, matrices
/// `stride` apart: up to the last element of the last row (a strided view may end right
/// there, so reading or writing a full last row of `ld` would leave the buffer).
inline index_t span(index_t batch, index_t stride, index_t rows, index_t cols, index_t ld) {
  const index_t one = rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
  return stride == 0 ? one : (batch - 1) * stride + one;
}

template <class T>
std::vector<float> to_float(const T* p, index_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = convert<float>(p[i]);
  return v;
}

template <class TA, class TC>
void matmul_through_float(const TA* a, const TA* b, TC* c, const MatmulDims& d, float beta);

#if defined(CTDL_WITH_ONEDNN)

template <class T>
constexpr dnnl::memory::data_type dnnl_type() {
  if constexpr (std::is_same_v<T, float>) return dnnl::memory::data_type::f32;
  else if constexpr (std::is_same_v<T, bf16>) return dnnl::memory::data_type::bf16;
  else static_assert(sizeof(T) == 0, "no oneDNN type for this element type");
}

/// The CPU engine (shared) and, per thread, a stream on it and a scratchpad buffer.
struct DnnlCpu {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  static DnnlCpu& get() {
    static DnnlCpu instance;
    return instance;
  }
  /// This thread's stream.
  dnnl::stream& stream() {
    thread_local dnnl::stream s{engine};
    return s;
  }
  /// A scratchpad for one execution of pd on this thread: this thread's buffer, grown to
  /// pd's need (never shared between threads, so concurrent executions cannot collide).
  template <class PrimitiveDesc>
  dnnl::memory scratchpad(const PrimitiveDesc& pd) {
    const dnnl::memory::desc want = pd.scratchpad_desc();
    const std::size_t bytes = want.get_size();
    thread_local std::size_t capacity = 0;
    thread_local std::unique_ptr<dnnl::memory> buffer;
    if (bytes > capacity) {
      capacity = bytes;
      buffer = std::make_unique<dnnl::memory>(
          dnnl::memory::desc({static_cast<dnnl::memory::dim>(bytes)}, dnnl::memory::data_type::u8,
                             dnnl::memory::format_tag::x),
          engine);
    }
    return dnnl::memory(want, engine, bytes == 0 ? nullptr : buffer->get_data_handle());
  }
};

/// Cached matmul primitives, one per problem (dims, transposes, types, beta != 0).
class MatmulCache {
 public:
  using Key = std::tuple<index_t, index_t, index_t, index_t, bool, bool, index_t, index_t, index_t, index_t, index_t,
                         index_t, int, int, bool, bool>;

  static MatmulCache& get() {
    static MatmulCache cache;
    return cache;
  }

  struct Entry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
    std::string impl;  // oneDNN's implementation name, e.g. "brg:avx512_core_bf16"
  };

  /// The cached primitive for this problem, or nullptr when oneDNN has none on this CPU
  /// (bf16 without AVX512-BF16 or AMX; the caller then computes through float). Errors
  /// other than "no implementation" are thrown.

  /// any_weights: B in the layout the primitive prefers (format_tag::any) instead of
  /// the strided one d describes.
  std::shared_ptr<const Entry> find_or_make(const MatmulDims& d, dnnl::memory::data_type ta,
                                             dnnl::memory::data_type tc, bool accumulate, bool any_weights = false) {
    const Key key{d.batch,    d.m,   d.n,   d.k,   d.trans_a,           d.trans_b,           d.stride_a, d.stride_b,
                  d.stride_c, d.lda, d.ldb, d.ldc, static_cast<int>(ta), static_cast<int>(tc), accumulate, any_weights};
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    using dims = dnnl::memory::dims;
    const index_t ba = d.stride_a == 0 ? 1 : d.batch, bb = d.stride_b == 0 ? 1 : d.batch;
    const dnnl::memory::desc a_md(dims{ba, d.m, d.k}, ta,
                                  d.trans_a ? dims{d.stride_a, 1, d.lda} : dims{d.stride_a, d.lda, 1});
    const dnnl::memory::desc b_md = any_weights ? dnnl::memory::desc(dims{bb, d.k, d.n}, ta, dnnl::memory::format_tag::any)
                                                : dnnl::memory::desc(dims{bb, d.k, d.n}, ta,
                                                                     d.trans_b ? dims{d.stride_b, 1, d.ldb} : dims{d.stride_b, d.ldb, 1});
    const dnnl::memory::desc c_md(dims{d.batch, d.m, d.n}, tc, dims{d.stride_c, d.ldc, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    auto& cpu = DnnlCpu::get();
    const bool bf16 = ta == dnnl::memory::data_type::bf16;
    std::shared_ptr<const Entry> entry;
    try {
      const dnnl::matmul::primitive_desc pd = dnnl_compat::matmul_pd(cpu.engine, a_md, b_md, c_md, attr);
      last_impl_[bf16] = pd.impl_info_str();
      entry = std::make_shared<const Entry>(Entry{pd, dnnl::matmul(pd), pd.impl_info_str()});
    } catch (const dnnl::error& e) {
      if (e.status != dnnl_unimplemented || !bf16) throw;
      last_impl_[bf16] = "through float (oneDNN has no bf16 matmul on this CPU)";
    }
    cache_.emplace(key, entry);
    return entry;
  }

  std::string last_impl(bool bf16) {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_impl_[bf16];
  }

 private:
  std::mutex mutex_;
  std::map<Key, std::shared_ptr<const Entry>> cache_;
  std::string last_impl_[2] = {"none", "none"};
};

template <class TA, class TC>
void matmul_through_float(const TA* a, const TA* b, TC* c, const MatmulDims& d, float beta);

template <class TA, class TC>
void matmul_dnnl(const TA* a, const TA* b, TC* c, const MatmulDims& d, float beta) {
  // beta is 0 or 1 on the hot paths (forward; gradient accumulation); others scale first.
  if (beta != 0.0f && beta != 1.0f) {
    scale_c(c, d, beta);
    beta = 1.0f;
  }
  const auto entry = MatmulCache::get().find_or_make(d, dnnl_type<TA>(), dnnl_type<TC>(), beta != 0.0f);
  if (!entry) {
    if constexpr (std::is_same_v<TA, float>) {
      throw Error("matmul: oneDNN has no float matmul for this problem");  // find_or_make rethrows first
    } else {
      matmul_through_float(a, b, c, d, beta);
      return;
    }
  }
  log_implementation(entry->impl, d);
  auto& cpu = DnnlCpu::get();
  dnnl::memory am(entry->pd.src_desc(), cpu.engine, const_cast<TA*>(a));
  dnnl::memory bm(entry->pd.weights_desc(), cpu.engine, const_cast<TA*>(b));
  dnnl::memory cm(entry->pd.dst_desc(), cpu.engine, c);
  dnnl::stream& stream = cpu.stream();
  entry->prim.execute(stream, {{DNNL_ARG_SRC, am},
                               {DNNL_ARG_WEIGHTS, bm},
                               {DNNL_ARG_DST, cm},
                               {DNNL_ARG_SCRATCHPAD, cpu.scratchpad(entry->pd)}});
  stream.wait();
}

/// What matmul_reused_weight keeps in its slot.
struct ReorderedWeight {
  std::uint64_t version = 0;
  dnnl::memory::desc desc;
  std::shared_ptr<dnnl::memory> memory;  // owns its buffer
};

inline std::mutex& reordered_weight_mutex() {
  static std::mutex m;
  return m;
}

/// The weight kept in `slot` in layout `desc`, made (fill writes it) on first use, for
/// another layout, or when `version` changed. A new version reuses the buffer (training:
/// every step), whose pages are already mapped; the weight changed, so no call still
/// reads the old contents. The returned memory stays alive through the caller's product
/// even if another thread replaces the slot's.
template <class Fill>
std::shared_ptr<dnnl::memory> kept_weight(std::shared_ptr<void>& slot, std::uint64_t version,
                                          const dnnl::memory::desc& desc, Fill&& fill) {
  std::lock_guard<std::mutex> lock(reordered_weight_mutex());
  auto* held = static_cast<ReorderedWeight*>(slot.get());
  bool stale = !held || held->version != version;
  if (!held || held->desc != desc) {  // first use, or another layout
    auto fresh = std::make_shared<ReorderedWeight>(
        ReorderedWeight{version, desc, std::make_shared<dnnl::memory>(desc, DnnlCpu::get().engine)});
    slot = fresh;
    held = fresh.get();
    stale = true;
  }
  if (stale) {
    fill(*held->memory);
    held->version = version;
  }
  return held->memory;
}

#endif

template <class TA, class TC>
void matmul_through_float(const TA* a, const TA* b, TC* c, const MatmulDims& d, float beta) {
  const auto af = to_float(a, span(d.batch, d.stride_a, d.trans_a ? d.k : d.m, d.trans_a ? d.m : d.k, d.lda));
  const auto bf = to_float(b, span(d.batch, d.stride_b, d.trans_b ? d.n : d.k, d.trans_b ? d.k : d.n, d.ldb));
  auto cf = to_float(c, span(d.batch, d.stride_c, d.m, d.n, d.ldc));
  // The float kernel directly (not matmul(), which would log this problem twice).
#if defined(CTDL_WITH_ONEDNN)
  matmul_dnnl(af.data(), bf.data(), cf.data(), d, beta);
#else
  matmul_eigen(af.data(), bf.data(), cf.data(), d, beta);
#endif
  // Only C's own elements go back: between its rows may lie other matrices' elements
  // (per-head views), which other threads may be writing.
  for (index_t bb = 0; bb < d.batch; ++bb)
    for (index_t i = 0; i < d.m; ++i) {
      const index_t row = bb * d.stride_c + i * d.ldc;
      for (index_t j = 0; j < d.n; ++j) c[row + j] = convert<TC>(cf[static_cast<std::size_t>(row + j)]);
    }
}

}  // namespace detail

template <class TA, class TC>
void matmul(const TA* a, const TA* b, TC* c, const MatmulDims& dims, float beta) {
  const MatmulDims d = detail::packed(dims);
  if (MatmulLog* log = matmul_log_slot().load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(log->mutex);
    log->calls.push_back({d, std::is_same_v<TA, bf16>, std::is_same_v<TC, float>, omp_in_parallel() != 0});
  }
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  if (d.k == 0) {
    detail::scale_c(c, d, beta);
    return;
  }
  if constexpr (std::is_same_v<TA, double> || std::is_same_v<TC, double>) {
    static_assert(std::is_same_v<TA, TC>, "double matmul: inputs and output must all be double");
    detail::matmul_eigen(a, b, c, d, beta);
  } else if constexpr (std::is_same_v<TA, float> && std::is_same_v<TC, float>) {
#if defined(CTDL_WITH_ONEDNN)
    detail::matmul_dnnl(a, b, c, d, beta);
#else
    detail::matmul_eigen(a, b, c, d, beta);
#endif
  } else if constexpr (std::is_same_v<TA, bf16> && (std::is_same_v<TC, float> || std::is_same_v<TC, bf16>)) {
#if defined(CTDL_WITH_ONEDNN)
    detail::matmul_dnnl(a, b, c, d, beta);
#else
    detail::matmul_through_float(a, b, c, d, beta);
#endif
  } else {
    // fp16 (no fp16 matmul on this CPU class) and other mixes: compute in float.
    detail::matmul_through_float(a, b, c, d, beta);
  }
}

template <class TA, class TW>
void matmul_reused_weight(const TA* x, const TW* w, std::uint64_t version, std::shared_ptr<void>& slot, float* y,
                          index_t m, index_t n, index_t k) {
  static_assert(has_reused_weight_matmul<TA, TW>, "matmul_reused_weight: not available for these types");
#if defined(CTDL_WITH_ONEDNN)
  const MatmulDims d = detail::packed(MatmulDims{1, m, n, k, false, true});
  if (MatmulLog* log = matmul_log_slot().load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(log->mutex);
    log->calls.push_back({d, std::is_same_v<TA, bf16>, true, omp_in_parallel() != 0});
  }
  if (m == 0 || n == 0) return;
  using detail::dnnl_type;
  const auto entry = detail::MatmulCache::get().find_or_make(d, dnnl_type<TA>(), dnnl::memory::data_type::f32, false, true);
  auto& cpu = detail::DnnlCpu::get();
  dnnl::stream& stream = cpu.stream();
  using dims = dnnl::memory::dims;
  if (!entry) {
    // bf16 on a CPU without a oneDNN bf16 matmul: through float, with the weight rounded
    // to TA (as oneDNN's reorder would) and kept, as stored, per version.
    const dnnl::memory::desc kept(dims{1, k, n}, dnnl::memory::data_type::f32, dims{n * k, 1, k});
    const auto weights = detail::kept_weight(slot, version, kept, [&](dnnl::memory& mem) {
      float* dst = static_cast<float*>(mem.get_data_handle());
      for (index_t i = 0; i < n * k; ++i) dst[i] = convert<float>(convert<TA>(w[i]));
    });
    std::vector<float> xf(static_cast<std::size_t>(m * k));
    for (std::size_t i = 0; i < xf.size(); ++i) xf[i] = convert<float>(x[i]);
    detail::matmul_dnnl(xf.data(), static_cast<const float*>(weights->get_data_handle()), y, d, 0.0f);
    return;
  }
  log_implementation(entry->impl, d, /*reordered_weights=*/true);
  const auto weights = detail::kept_weight(slot, version, entry->pd.weights_desc(), [&](dnnl::memory& mem) {
    // W^T as stored (a k x n view of the row-major n x k W), into the kept buffer.
    const dnnl::memory::desc plain(dims{1, k, n}, dnnl_type<TW>(), dims{n * k, 1, k});
    dnnl::memory src(plain, cpu.engine, const_cast<TW*>(w));
    dnnl::reorder(src, mem).execute(stream, src, mem);
    stream.wait();
  });
  dnnl::memory xm(entry->pd.src_desc(), cpu.engine, const_cast<TA*>(x));
  dnnl::memory ym(entry->pd.dst_desc(), cpu.engine, y);
  entry->prim.execute(stream, {{DNNL_ARG_SRC, xm},
                               {DNNL_ARG_WEIGHTS, *weights},
                               {DNNL_ARG_DST, ym},
                               {DNNL_ARG_SCRATCHPAD, cpu.scratchpad(entry->pd)}});
  stream.wait();
#else
  (void)x, (void)w, (void)version, (void)slot, (void)y, (void)m, (void)n, (void)k;
#endif
}

inline std::string matmul_implementation(bool bf16) {
#if defined(CTDL_WITH_ONEDNN)
  return detail::MatmulCache::get().last_impl(bf16);
#else
  (void)bf16;
  return "eigen";
#endif
}

}  // namespace ctdl::kernels::cpu

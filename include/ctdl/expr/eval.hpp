#pragma once
// Evaluation of an expression into a destination: one fused loop over the output.
//
// When no operand is broadcast, the loop runs over flat indices, which the compiler
// vectorises. Otherwise it runs row by row over the last axis, each operand reading its
// row through broadcast strides (0 along broadcast axes). Above kParallelThreshold
// elements the loop is split among OpenMP threads in contiguous blocks, so each thread
// streams through its own part of memory.
//
// A destination may appear in its own expression elementwise (t = t * 2: evaluated in
// place); an expression that reads the destination's storage at other positions (its
// own row broadcast, t = t - t[0]; a shifted view) is evaluated into a temporary first.

#include <omp.h>

#include <algorithm>
#include <array>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "ctdl/expr/expression.hpp"

namespace ctdl::expr {

/// Below this many output elements an evaluation runs on one thread.
inline constexpr index_t kParallelThreshold = index_t{1} << 15;

template <StoreOp Op, class T, class C>
CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE void store(T& dst, C v) {
  using CT = compute_t<T>;
  if constexpr (Op == StoreOp::assign) dst = convert<T>(v);
  else if constexpr (Op == StoreOp::add) dst = convert<T>(convert<CT>(dst) + static_cast<CT>(v));
  else if constexpr (Op == StoreOp::sub) dst = convert<T>(convert<CT>(dst) - static_cast<CT>(v));
  else dst = convert<T>(convert<CT>(dst) * static_cast<CT>(v));
}

/// Splits [0, n) into `parts` contiguous blocks and returns block `k`.
inline std::pair<index_t, index_t> block_range(index_t n, index_t parts, index_t k) {
  const index_t base = n / parts, extra = n % parts;
  const index_t begin = k * base + std::min(k, extra);
  return {begin, begin + base + (k < extra ? 1 : 0)};
}

/// Number of threads an evaluation of `total` elements uses.
inline int eval_threads(index_t total) { return total >= kParallelThreshold ? omp_get_max_threads() : 1; }

/// Runs run(begin, end) over [0, total): on one thread below kParallelThreshold,
/// otherwise one contiguous block per OpenMP thread.
template <class Run>
void in_blocks(index_t total, Run&& run) {
  const int threads = eval_threads(total);
  if (threads == 1) {
    run(index_t{0}, total);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const auto [b, en] = block_range(total, omp_get_num_threads(), omp_get_thread_num());
    run(b, en);
  }
}

/// How many contiguous blocks (threads) for_each_row_in_parts should split the rows of
/// `extents` into: one unless `parallel`, there is more than one row and the work is
/// large enough.
template <std::size_t R>
int row_parts(const std::array<index_t, R>& extents, bool parallel = true) {
  if constexpr (R == 0) {
    return 1;
  } else {
    const index_t total = numel(extents);
    if (total == 0) return 1;
    return parallel && total / extents[R - 1] > 1 ? eval_threads(total) : 1;
  }
}

/// Runs fn(part, ev, row, inner) for every row (along the last axis) of `extents`, with
/// `ev` a private evaluator of e already positioned on that row, the rows split into at
/// most `parts` contiguous blocks run by as many threads. `part`, in [0, parts), names
/// the block (the thread) running the row: per-thread buffers are sized `parts` and
/// indexed by it, never by omp_get_thread_num(), which inside a caller's parallel region
/// is the caller's thread number even where this loop runs serially.
template <class E, std::size_t R, class Fn>
void for_each_row_in_parts(const E& e, const std::array<index_t, R>& extents, int parts, Fn&& fn) {
  const index_t total = numel(extents);
  if (total == 0) return;
  if constexpr (R == 0) {
    auto ev = e.template make_eval<0>(extents);
    fn(0, ev, index_t{0}, index_t{1});
  } else {
    const auto ev0 = e.template make_eval<R>(extents);
    const index_t inner = extents[R - 1], rows = total / inner;
    auto run = [&](int part, index_t row_begin, index_t row_end) {
      auto ev = ev0;
      std::array<index_t, (R > 1 ? R - 1 : 1)> idx{};  // multi-index over the outer axes
      index_t r = row_begin;
      for (std::size_t d = R - 1; d-- > 0;) {
        idx[d] = r % extents[d];
        r /= extents[d];
      }
      for (index_t row = row_begin; row < row_end; ++row) {
        ev.seek(idx.data());
        fn(part, ev, row, inner);
        for (std::size_t d = R - 1; d-- > 0;) {  // odometer increment
          if (++idx[d] < extents[d]) break;
          idx[d] = 0;
        }
      }
    };
    if (parts <= 1) {
      run(0, 0, rows);
    } else {
      // The team may be smaller than asked (nested in a caller's region it has one
      // thread); its thread numbers are below `parts` either way.
#pragma omp parallel num_threads(parts)
      {
        const int part = omp_get_thread_num();
        const auto [b, en] = block_range(rows, omp_get_num_threads(), part);
        run(part, b, en);
      }
    }
  }
}

/// Runs fn(ev, row, inner) for every row (along the last axis) of `extents`, with `ev`
/// a private evaluator of e already positioned on that row. Rows are split among threads
/// in contiguous blocks when `parallel` and the work is large enough.
template <class E, std::size_t R, class Fn>
void for_each_row(const E& e, const std::array<index_t, R>& extents, Fn&& fn, bool parallel = true) {
  for_each_row_in_parts(e, extents, row_parts(extents, parallel),
                        [&](int, auto& ev, index_t row, index_t inner) { fn(ev, row, inner); });
}

/// Whether evaluating e into `out` (extents `out_extents`) reads the destination's
/// storage anywhere but at the element being written: an operand overlapping it that is
/// broadcast, shifted, or of another element type. Such an evaluation must go through a
/// temporary (t = t - t[0] would otherwise read row 0 after overwriting it); an operand
/// that is the destination itself, read elementwise (t = t * 2), is safe in place.
template <class E, class T, std::size_t R>
bool reads_destination_elsewhere(const E& e, const T* out, const std::array<index_t, R>& out_extents) {
  if constexpr (requires { e.args; }) {
    return std::apply([&](const auto&... a) { return (reads_destination_elsewhere(a, out, out_extents) || ...); },
                      e.args);
  } else if constexpr (requires { e.terms; }) {
    return std::apply([&](const auto&... a) { return (reads_destination_elsewhere(a, out, out_extents) || ...); },
                      e.terms);
  } else if constexpr (requires { e.data; e.ext; }) {
    using L = std::remove_cvref_t<decltype(*e.data)>;
    const index_t n = numel(e.ext), out_n = numel(out_extents);
    if (n == 0 || out_n == 0) return false;
    const auto* lb = reinterpret_cast<const unsigned char*>(e.data);
    const auto* ob = reinterpret_cast<const unsigned char*>(out);
    const std::less<const unsigned char*> before;
    const bool overlap = before(lb, ob + out_n * static_cast<index_t>(sizeof(T))) &&
                         before(ob, lb + n * static_cast<index_t>(sizeof(L)));
    if (!overlap) return false;
    // Same storage, same element type, not broadcast (an operand that broadcasts to the
    // destination with as many elements has its extents): read where it is written.
    return !(lb == ob && std::is_same_v<L, T> && n == out_n);
  } else {
    return false;  // scalars and constants read no memory
  }
}

template <StoreOp Op, class E, class T, std::size_t R>
void evaluate(const E& e, T* out, const std::array<index_t, R>& out_extents) {
  static_assert(E::rank <= R, "assign: the expression has a higher rank than the destination");
  std::array<index_t, R> bext = out_extents;
  if (!broadcast_into(bext, e.extents()) || bext != out_extents) {
    throw ShapeError("assign: the expression's " + describe<typename E::shape_type>(e.extents()) +
                     " does not broadcast to the destination's extents " + format_extents(out_extents));
  }
  const index_t total = numel(out_extents);
  if (total == 0) return;
  const auto ev0 = e.template make_eval<R>(out_extents);
  if (reads_destination_elsewhere(e, out, out_extents)) {
    // Evaluate into a temporary of the expression's compute type, then store it: the
    // result is what it would be with no aliasing, rounded once.
    using C = std::remove_cvref_t<decltype(ev0.at_flat(0))>;
    auto tmp = Tensor<C, Shape<dyn>>::uninitialized({total});
    evaluate<StoreOp::assign>(e, tmp.data(), out_extents);
    const C* t = tmp.data();
    in_blocks(total, [&](index_t begin, index_t end) {
      for (index_t i = begin; i < end; ++i) store<Op>(out[i], t[i]);
    });
    return;
  }
  if (!ev0.flat_ok()) {
    for_each_row(e, out_extents, [&](const auto& ev, index_t row, index_t inner) {
      T* o = out + row * inner;
      for (index_t j = 0; j < inner; ++j) store<Op>(o[j], ev.at(j));
    });
    return;
  }
  auto run = [&](index_t begin, index_t end) {
    const auto ev = ev0;
    for (index_t i = begin; i < end; ++i) store<Op>(out[i], ev.at_flat(i));
  };
  in_blocks(total, run);
}

/// Evaluates several rank-1 expressions of n elements in one loop and assigns each to
/// its destination: `outs` is a tuple of destination pointers, the i-th for the i-th
/// expression (assign_together(n, std::tuple{m.data(), w.data()}, m_new, w_new)). At
/// every element all expressions are read before any is stored, so an expression may
/// read the destinations themselves. This is the fused multi-tensor update of the
/// optimizers (Adam's m, v and w in one pass). Every expression must have exactly n
/// elements and not broadcast (flat evaluation); ShapeError otherwise.
template <class... T, class... E>
void assign_together(index_t n, std::tuple<T*...> outs, const E&... es) {
  static_assert(sizeof...(T) == sizeof...(E), "assign_together: one destination per expression");
  static_assert(((E::rank == 1) && ...), "assign_together: rank-1 expressions only");
  if (n == 0) return;
  const std::array<index_t, 1> ext{n};
  const auto evs = std::make_tuple(es.template make_eval<1>(ext)...);
  const bool flat = std::apply([](const auto&... ev) { return (ev.flat_ok() && ...); }, evs);
  const bool sized = ((es.extents()[0] == n) && ...);
  if (!flat || !sized) throw ShapeError("assign_together: every expression must have exactly " + std::to_string(n) + " elements, unbroadcast");
  auto run = [&](index_t begin, index_t end) {
    const auto local = evs;
    for (index_t i = begin; i < end; ++i) {
      std::apply([&](const auto&... ev) {
        const auto values = std::make_tuple(ev.at_flat(i)...);
        [&]<std::size_t... K>(std::index_sequence<K...>) {
          (store<StoreOp::assign>(std::get<K>(outs)[i], std::get<K>(values)), ...);
        }(std::index_sequence_for<E...>{});
      }, local);
    }
  };
  in_blocks(n, run);
}

}  // namespace ctdl::expr

namespace ctdl {
template <class Derived>
template <StoreOp Op, class T, std::size_t R>
void ExprBase<Derived>::eval_into(T* out, const std::array<index_t, R>& out_extents) const {
  expr::evaluate<Op>(static_cast<const Derived&>(*this), out, out_extents);
}
}  // namespace ctdl

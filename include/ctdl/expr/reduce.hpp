#pragma once
// Reductions over all elements or over the last axis: sum, mean, max.
//
//   sum(e), mean(e), max(e)                      -> Tensor<T, Shape<>>
//   sum(e, last_axis), mean(..), max(..)         -> Tensor<T, Shape<..., 1>> (keeps the
//                                                   axis, so the result broadcasts
//                                                   against e: x - max(x, last_axis))
//
// The operand is evaluated inside the reduction loop (no temporary). Sums accumulate in
// accumulate_t<T>: float for bf16/fp16/float, double for double; eight interleaved
// partial sums per thread keep the loop vectorisable and the rounding error low.

#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "ctdl/expr/eval.hpp"
#include "ctdl/expr/functions.hpp"

namespace ctdl {

struct LastAxis {};
/// Selects reduction over the last axis.
inline constexpr LastAxis last_axis{};

namespace expr {

enum class ReduceKind { sum, max };

/// Reduces one row of `n` elements read through `ev`.
template <ReduceKind K, class A, class Ev>
A reduce_row(const Ev& ev, index_t n) {
  constexpr int lanes = 8;
  A acc[lanes];
  const A init = K == ReduceKind::sum ? A(0) : -std::numeric_limits<A>::infinity();
  for (A& a : acc) a = init;
  index_t j = 0;
  for (; j + lanes <= n; j += lanes) {
    for (int l = 0; l < lanes; ++l) {
      const A v = static_cast<A>(ev.at(j + l));
      acc[l] = K == ReduceKind::sum ? acc[l] + v : std::max(acc[l], v);
    }
  }
  for (; j < n; ++j) {
    const A v = static_cast<A>(ev.at(j));
    acc[0] = K == ReduceKind::sum ? acc[0] + v : std::max(acc[0], v);
  }
  A r = acc[0];
  for (int l = 1; l < lanes; ++l) r = K == ReduceKind::sum ? r + acc[l] : std::max(r, acc[l]);
  return r;
}

template <ReduceKind K, bool Mean, class E>
auto reduce_all(const E& e) {
  using T = typename E::value_type;
  using A = accumulate_t<T>;
  const index_t total = numel(e.extents());
  if (K == ReduceKind::max && total == 0) throw ShapeError("max: empty " + describe<typename E::shape_type>(e.extents()));
  // One partial result per block of rows (per thread of this reduction's own loop).
  const int parts = row_parts(e.extents());
  std::vector<A> partial(static_cast<std::size_t>(parts), K == ReduceKind::sum ? A(0) : -std::numeric_limits<A>::infinity());
  for_each_row_in_parts(e, e.extents(), parts, [&](int part, const auto& ev, index_t, index_t inner) {
    A& p = partial[static_cast<std::size_t>(part)];
    const A r = reduce_row<K, A>(ev, inner);
    p = K == ReduceKind::sum ? p + r : std::max(p, r);
  });
  A r = partial[0];
  for (std::size_t i = 1; i < partial.size(); ++i) r = K == ReduceKind::sum ? r + partial[i] : std::max(r, partial[i]);
  if constexpr (Mean) r /= static_cast<A>(total);
  Tensor<T, Shape<>> out;
  out.item() = convert<T>(r);
  return out;
}

template <ReduceKind K, bool Mean, class E>
auto reduce_last(const E& e) {
  using T = typename E::value_type;
  using A = accumulate_t<T>;
  using S = typename E::shape_type;
  static_assert(S::rank >= 1, "reduction over the last axis needs rank >= 1");
  auto ext = e.extents();
  const index_t inner = ext[S::rank - 1];
  if (K == ReduceKind::max && inner == 0) throw ShapeError("max over the last axis: empty " + describe<S>(ext));
  ext[S::rank - 1] = 1;
  auto out = Tensor<T, last_to_one_t<S>>::uninitialized(ext);
  T* o = out.data();
  if (inner == 0) {  // empty rows (no row is visited below): a sum of nothing is 0, a mean 0 / 0
    std::fill(o, o + out.size(), convert<T>(Mean ? std::numeric_limits<A>::quiet_NaN() : A(0)));
    return out;
  }
  for_each_row(e, e.extents(), [&](const auto& ev, index_t row, index_t n) {
    A r = reduce_row<K, A>(ev, n);
    if constexpr (Mean) r /= static_cast<A>(n);
    o[row] = convert<T>(r);
  });
  return out;
}

/// out += e, summed over the axes along which `out_extents` broadcast to e's extents
/// (the adjoint of broadcasting: how a gradient flows back to a broadcast operand).
template <class E, class T, std::size_t r>
void sum_to(const E& e, T* out, const std::array<index_t, r>& out_extents) {
  constexpr std::size_t R = E::rank;
  static_assert(r <= R, "sum_to: the destination has a higher rank than the expression");
  const auto& ext = e.extents();
  if constexpr (r == R) {
    if (ext == out_extents) {
      evaluate<StoreOp::add>(e, out, out_extents);
      return;
    }
  }
  std::array<index_t, R> check;
  check.fill(1);
  broadcast_into(check, out_extents);
  if (!broadcast_into(check, ext) || check != ext) {
    throw ShapeError("sum_to: extents " + format_extents(out_extents) + " do not broadcast to " + format_extents(ext));
  }
  using A = accumulate_t<T>;
  const auto ostr = broadcast_strides(out_extents, ext);
  const auto out_n = static_cast<std::size_t>(numel(out_extents));
  // Each block of e's rows (one per thread of this loop) is summed into a private
  // accumulator; then they are added up (rows of e map onto overlapping rows of out).
  const int parts = row_parts(ext);
  std::vector<std::vector<A>> partial(static_cast<std::size_t>(parts), std::vector<A>(out_n, A(0)));
  for_each_row_in_parts(e, ext, parts, [&](int part, const auto& ev, index_t row, index_t inner) {
    A* acc = partial[static_cast<std::size_t>(part)].data();
    index_t base = 0, step = 0;
    if constexpr (R > 0) {
      for (std::size_t d = R - 1; d-- > 0;) {
        base += (row % ext[d]) * ostr[d];
        row /= ext[d];
      }
      step = ostr[R - 1];
    }
    if (step == 1) {
      for (index_t j = 0; j < inner; ++j) acc[base + j] += static_cast<A>(ev.at(j));
    } else {
      for (index_t j = 0; j < inner; ++j) acc[base + j * step] += static_cast<A>(ev.at(j));
    }
  });
  std::vector<A>& acc = partial[0];
  for (std::size_t t = 1; t < partial.size(); ++t)
    for (std::size_t i = 0; i < out_n; ++i) acc[i] += partial[t][i];
  for (std::size_t i = 0; i < acc.size(); ++i) out[i] = convert<T>(convert<A>(out[i]) + acc[i]);
}

/// The eager reductions refuse autograd Vars: they evaluate now and return a Tensor, which
/// a tape would take as a constant (`tape.record(x - mean(x, last_axis))` would compute
/// the wrong gradient, silently). Checked in each of them below.
template <class A>
constexpr void refuse_var_operand() {
  static_assert(!holds_var_v<expr_t<A>>,
                "ctdl::sum/mean/max of an autograd Var (or of an expression of one) evaluates now and returns a "
                "Tensor, a constant to the tape: use ops::sum/mean/max(tape, x) to differentiate through the "
                "reduction, or reduce x.value() for a number");
}

}  // namespace expr

template <class A>
  requires expr::ExprOperand<A>
auto sum(A&& a) {
  expr::refuse_var_operand<A>();
  return expr::reduce_all<expr::ReduceKind::sum, false>(expr::as_expr(std::forward<A>(a)));
}
template <class A>
  requires expr::ExprOperand<A>
auto mean(A&& a) {
  expr::refuse_var_operand<A>();
  return expr::reduce_all<expr::ReduceKind::sum, true>(expr::as_expr(std::forward<A>(a)));
}
template <class A>
  requires expr::ExprOperand<A>
auto max(A&& a) {
  expr::refuse_var_operand<A>();
  return expr::reduce_all<expr::ReduceKind::max, false>(expr::as_expr(std::forward<A>(a)));
}
template <class A>
  requires expr::ExprOperand<A>
auto sum(A&& a, LastAxis) {
  expr::refuse_var_operand<A>();
  return expr::reduce_last<expr::ReduceKind::sum, false>(expr::as_expr(std::forward<A>(a)));
}
template <class A>
  requires expr::ExprOperand<A>
auto mean(A&& a, LastAxis) {
  expr::refuse_var_operand<A>();
  return expr::reduce_last<expr::ReduceKind::sum, true>(expr::as_expr(std::forward<A>(a)));
}
template <class A>
  requires expr::ExprOperand<A>
auto max(A&& a, LastAxis) {
  expr::refuse_var_operand<A>();
  return expr::reduce_last<expr::ReduceKind::max, false>(expr::as_expr(std::forward<A>(a)));
}

}  // namespace ctdl

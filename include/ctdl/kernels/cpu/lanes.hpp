#pragma once
// Reductions of a row of values in 16 interleaved lanes, so that the loops vectorise
// without -ffast-math: one running accumulator is a dependency chain the compiler may
// not reorder. Used by the row-wise kernels (softmax in attention, LayerNorm).

#include <limits>

#include "ctdl/core/shape.hpp"

namespace ctdl::kernels::cpu {

/// The sum of x[0..n).
template <class Sc>
Sc lane_sum(const Sc* x, index_t n) {
  Sc acc[16] = {};
  index_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += x[j + l];
  Sc s = 0;
  for (; j < n; ++j) s += x[j];
  for (Sc a : acc) s += a;
  return s;
}
/// The max of x[0..n) (-inf for n = 0).
template <class Sc>
Sc lane_max(const Sc* x, index_t n) {
  Sc acc[16];
  for (Sc& a : acc) a = -std::numeric_limits<Sc>::infinity();
  index_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] = acc[l] > x[j + l] ? acc[l] : x[j + l];
  Sc m = -std::numeric_limits<Sc>::infinity();
  for (; j < n; ++j) m = m > x[j] ? m : x[j];
  for (Sc a : acc) m = m > a ? m : a;
  return m;
}
/// The dot product of x[0..n) and y[0..n).
template <class Sc>
Sc lane_dot(const Sc* x, const Sc* y, index_t n) {
  Sc acc[16] = {};
  index_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) acc[l] += x[j + l] * y[j + l];
  Sc s = 0;
  for (; j < n; ++j) s += x[j] * y[j];
  for (Sc a : acc) s += a;
  return s;
}

}  // namespace ctdl::kernels::cpu

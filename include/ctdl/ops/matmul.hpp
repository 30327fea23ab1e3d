#pragma once
// matmul: C = op(A) · op(B), plain (rank 2) or batched (rank 3, same batch in A and B).
//
// Shape contract (op(A) is M x K, op(B) is K x N; transposes are compile-time options):
//   matmul(tape, a, b)                               Shape<M, K> x Shape<K, N> -> Shape<M, N>
//   matmul<MatmulOptions{.transpose_b = true}>(...)  Shape<M, K> x Shape<N, K> -> Shape<M, N>
//   rank 3:                                          Shape<B, M, K> x Shape<B, K, N> -> Shape<B, M, N>
// Static inner extents that differ fail to compile, naming both shapes; runtime ones
// throw ShapeError.
//
// Backward, with G = dC:
//   C = A B       dA += G B^T        dB += A^T G
//   C = A^T B     dA += B G^T        dB += A G
//   C = A B^T     dA += G B          dB += G^T A
//   C = A^T B^T   dA += B^T G^T      dB += G^T A^T
// Each is one GEMM accumulating straight into the gradient (beta = 1).
//
// Kernel: kernels/cpu/matmul.hpp (oneDNN for float/bf16, Eigen for double).
// matmul<Opt, G>: the products take inputs rounded to G (bf16 under Bf16Mixed) and
// accumulate in T; the rounded operands are kept for backward.

#include <array>
#include <memory>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/kernels/cpu/matmul.hpp"

namespace ctdl::ops {

struct MatmulOptions {
  bool transpose_a = false;
  bool transpose_b = false;
};

/// Marks "the products take inputs of the operands' own element type" (the default G
/// of matmul, linear and attention; Bf16Mixed passes bf16).
struct SameAsInput {};
template <class G, class T>
using gemm_input_t = std::conditional_t<std::is_same_v<G, SameAsInput>, T, G>;

/// The elements of `t` as G: t's own storage when G is T, else those of `rounded` (t
/// rounded to G, made by the caller and kept for backward).
template <class G, class T, class S>
const G* gemm_data(const Tensor<T, S>& t, const Tensor<G, S>& rounded) {
  if constexpr (std::is_same_v<G, T>) {
    (void)rounded;
    return t.data();
  } else {
    return rounded.data();
  }
}

/// `t` with its elements rounded to G (the same tensor when G is T).
template <class G, class T, class S>
decltype(auto) as_gemm_input(const Tensor<T, S>& t) {
  if constexpr (std::is_same_v<G, T>) return (t);
  else return Tensor<G, S>(cast<G>(t));
}

template <class SA, class SB, MatmulOptions Opt>
struct matmul_shapes {
  static_assert(SA::rank == SB::rank && (SA::rank == 2 || SA::rank == 3),
                "matmul takes two rank-2 or two rank-3 (batched) operands");
  static constexpr std::size_t r = SA::rank;
  static constexpr index_t m = SA::static_extents[Opt.transpose_a ? r - 1 : r - 2];
  static constexpr index_t ka = SA::static_extents[Opt.transpose_a ? r - 2 : r - 1];
  static constexpr index_t kb = SB::static_extents[Opt.transpose_b ? r - 1 : r - 2];
  static constexpr index_t n = SB::static_extents[Opt.transpose_b ? r - 2 : r - 1];
  static constexpr index_t batch = r == 3 ? (SA::static_extents[0] != dyn ? SA::static_extents[0] : SB::static_extents[0]) : 1;
  static constexpr bool batch_ok = r == 2 || SA::static_extents[0] == dyn || SB::static_extents[0] == dyn ||
                                   SA::static_extents[0] == SB::static_extents[0];
  using out = std::conditional_t<r == 2, Shape<m, n>, Shape<batch, m, n>>;
};

/// True when the static inner extents of op(A) and op(B) agree (the compiler's note
/// names both shapes when they do not).
template <class SA, class SB, MatmulOptions Opt>
inline constexpr bool matmul_inner_extents_agree =
    (matmul_shapes<SA, SB, Opt>::ka == dyn || matmul_shapes<SA, SB, Opt>::kb == dyn ||
     matmul_shapes<SA, SB, Opt>::ka == matmul_shapes<SA, SB, Opt>::kb) &&
    matmul_shapes<SA, SB, Opt>::batch_ok;

template <MatmulOptions Opt = MatmulOptions{}, class G = SameAsInput, class T, class SA, class SB>
auto matmul(Tape& tape, const Var<T, SA>& a, const Var<T, SB>& b);

/// The forward product alone, on tensors (no tape).
template <MatmulOptions Opt = MatmulOptions{}, class T, class SA, class SB>
auto matmul(const Tensor<T, SA>& a, const Tensor<T, SB>& b);

// ============================================================================

namespace detail {

template <MatmulOptions Opt, class SA, class SB>
kernels::cpu::MatmulDims matmul_dims(const Extents<SA>& ea, const Extents<SB>& eb) {
  constexpr std::size_t r = SA::rank;
  kernels::cpu::MatmulDims d;
  d.batch = r == 3 ? ea[0] : 1;
  d.m = ea[Opt.transpose_a ? r - 1 : r - 2];
  d.k = ea[Opt.transpose_a ? r - 2 : r - 1];
  const index_t kb = eb[Opt.transpose_b ? r - 1 : r - 2];
  d.n = eb[Opt.transpose_b ? r - 2 : r - 1];
  d.trans_a = Opt.transpose_a;
  d.trans_b = Opt.transpose_b;
  if (kb != d.k || (r == 3 && eb[0] != ea[0])) {
    throw ShapeError(std::string("matmul") + (Opt.transpose_a ? " (A transposed)" : "") +
                     (Opt.transpose_b ? " (B transposed)" : "") + ": " + describe<SA>(ea) + " and " + describe<SB>(eb) +
                     " do not multiply");
  }
  return d;
}

template <MatmulOptions Opt, class TC = void, class T, class SA, class SB>
auto matmul_forward(const Tensor<T, SA>& a, const Tensor<T, SB>& b) {
  static_assert(matmul_inner_extents_agree<SA, SB, Opt>, "matmul: static inner extents differ");
  using Out = std::conditional_t<std::is_void_v<TC>, T, TC>;
  using SO = typename matmul_shapes<SA, SB, Opt>::out;
  const auto d = matmul_dims<Opt, SA, SB>(a.extents(), b.extents());
  Extents<SO> eo;
  if constexpr (SO::rank == 3) eo = {d.batch, d.m, d.n};
  else eo = {d.m, d.n};
  auto c = Tensor<Out, SO>::uninitialized(eo);
  kernels::cpu::matmul(a.data(), b.data(), c.data(), d, 0.0f);
  return c;
}

template <MatmulOptions Opt, class G, class T, class SA, class SB, class SO>
struct MatmulEntry final : TapeEntry {
  Var<T, SA> a;
  Var<T, SB> b;
  Var<T, SO> c;
  Tensor<G, SA> ag;  // the operands rounded to G, when G is not T
  Tensor<G, SB> bg;
  MatmulEntry(Var<T, SA> a_, Var<T, SB> b_, Var<T, SO> c_, Tensor<G, SA> ag_, Tensor<G, SB> bg_)
      : a(std::move(a_)), b(std::move(b_)), c(std::move(c_)), ag(std::move(ag_)), bg(std::move(bg_)) {}
  const char* name() const override { return "matmul"; }

  void backward() override {
    if (!c.has_grad()) return;
    decltype(auto) gt = as_gemm_input<G>(c.grad());
    const G* g = gt.data();
    const auto d = matmul_dims<Opt, SA, SB>(a.extents(), b.extents());
    const G* av = gemm_data(a.value(), ag);
    const G* bv = gemm_data(b.value(), bg);
    using kernels::cpu::MatmulDims;
    if (a.requires_grad()) {
      // dA has A's stored layout: M x K, or K x M when A is transposed.
      MatmulDims da{d.batch, Opt.transpose_a ? d.k : d.m, Opt.transpose_a ? d.m : d.k, d.n, false, false};
      const G *x = g, *y = bv;
      if (!Opt.transpose_a) {  // dA = G op(B)^T: G (M x N) times (N x K)
        da.trans_b = !Opt.transpose_b;
      } else {  // dA = op(B) G^T: (K x N) times (N x M)
        x = bv;
        y = g;
        da.trans_a = Opt.transpose_b;
        da.trans_b = true;
      }
      kernels::cpu::matmul(x, y, a.node_ptr()->grad_data(), da, 1.0f);
    }
    if (b.requires_grad()) {
      // dB has B's stored layout: K x N, or N x K when B is transposed.
      MatmulDims db{d.batch, Opt.transpose_b ? d.n : d.k, Opt.transpose_b ? d.k : d.n, d.m, false, false};
      const G *x = av, *y = g;
      if (!Opt.transpose_b) {  // dB = op(A)^T G: (K x M) times (M x N)
        db.trans_a = !Opt.transpose_a;
      } else {  // dB = G^T op(A): (N x M) times (M x K)
        x = g;
        y = av;
        db.trans_a = true;
        db.trans_b = Opt.transpose_a;
      }
      kernels::cpu::matmul(x, y, b.node_ptr()->grad_data(), db, 1.0f);
    }
  }
};

}  // namespace detail

template <MatmulOptions Opt, class T, class SA, class SB>
auto matmul(const Tensor<T, SA>& a, const Tensor<T, SB>& b) {
  return detail::matmul_forward<Opt>(a, b);
}

template <MatmulOptions Opt, class GIn, class T, class SA, class SB>
auto matmul(Tape& tape, const Var<T, SA>& a, const Var<T, SB>& b) {
  using G = gemm_input_t<GIn, T>;
  Tensor<G, SA> ag;
  Tensor<G, SB> bg;
  auto value = [&] {
    if constexpr (std::is_same_v<G, T>) {
      return detail::matmul_forward<Opt>(a.value(), b.value());
    } else {
      ag = Tensor<G, SA>(cast<G>(a.value()));
      bg = Tensor<G, SB>(cast<G>(b.value()));
      return detail::matmul_forward<Opt, T>(ag, bg);
    }
  }();
  using SO = typename decltype(value)::shape_type;
  const bool needs_grad = tape.recording() && (a.requires_grad() || b.requires_grad());
  auto c = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    tape.push(std::make_unique<detail::MatmulEntry<Opt, G, T, SA, SB, SO>>(a, b, c, std::move(ag), std::move(bg)));
  }
  return c;
}

}  // namespace ctdl::ops

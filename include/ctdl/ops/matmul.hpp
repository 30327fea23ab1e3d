#pragma once
// matmul: C = op(A) · op(B), plain (rank 2) or batched (rank 3, same batch in A and B).
//
// Shape contract (op(A) is M x K, op(B) is K x N; transposes are compile-time options;
// a and b are Vars on one device D, Cpu or Cuda):
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
// Kernels (gemm_on picks one): CPU kernels/cpu/matmul.hpp (oneDNN for float/bf16, Eigen
// for double); CUDA kernels/cuda/blas.cuh (cuda::gemm on cuBLASLt, fp32 accumulation,
// TF32 off), the same dims. Vars on Cuda: float, bf16 or fp16.
// matmul<Opt, G>: the products take inputs rounded to G (bf16 under Bf16Mixed) and
// accumulate in T; backward keeps the rounded operands, not the T-typed ones.

#include <array>
#include <memory>
#include <optional>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/kernels/cpu/matmul.hpp"
#include "ctdl/ops/dispatch.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/blas.cuh"
#endif

namespace ctdl::ops {

struct MatmulOptions {
  bool transpose_a = false;
  bool transpose_b = false;
};

/// Marks "the products take inputs of the operands' own element type" (the default G
/// of matmul, linear and attention; Bf16Mixed passes bf16).
struct SameAsInput {};
/// G = Tf32Products (precision::Tf32): float inputs, which a CUDA device's products read
/// with TF32's 10-bit significand (tensor cores), accumulating in fp32; on the CPU the
/// plain fp32 products (CPUs have no TF32).
template <class G, class T>
using gemm_input_t =
    std::conditional_t<std::is_same_v<G, SameAsInput> || std::is_same_v<G, Tf32Products>, T, G>;
/// Whether the products of G run on TF32 tensor cores (on a CUDA device).
template <class G>
inline constexpr bool tf32_products = std::is_same_v<G, Tf32Products>;

/// `t` with its elements rounded to G (the same tensor when G is T), on t's device: a
/// new tensor rounded to nearest even (on Cuda by cuda::copy_converted).
template <class G, class T, class S, Device D>
decltype(auto) as_gemm_input(const Tensor<T, S, D>& t) {
  require_kernels<D>();
  if constexpr (std::is_same_v<G, T>) {
    return (t);
  } else if constexpr (on_cuda<D>) {
    auto g = Tensor<G, S, D>::uninitialized(t.extents());
#if CTDL_CUDA_OPS
    cuda::copy_converted(t.data(), g.data(), static_cast<std::int64_t>(t.size()));
#endif
    return g;
  } else {
    return Tensor<G, S>(cast<G>(t));
  }
}

/// An operand of a product as its backward needs it: when G is T, the operand's Var
/// (its value is read again); otherwise only the operand rounded to G, and a GradRef for
/// its gradient, so the T-typed value is freed as soon as the forward drops it.
template <class G, class T, class S, Device D = Cpu>
class GemmOperand {
 public:
  GemmOperand() = default;
  explicit GemmOperand(const Var<T, S, D>& v) : ref_(v) {
    if constexpr (std::is_same_v<G, T>) value_ = v;
    else rounded_ = as_gemm_input<G>(v.value());
  }
  /// With the operand already rounded to G (G is not T).
  GemmOperand(const Var<T, S, D>& v, Tensor<G, S, D> rounded) : ref_(v), rounded_(std::move(rounded)) {
    static_assert(!std::is_same_v<G, T>);
  }
  /// The elements as G.
  const G* data() const {
    if constexpr (std::is_same_v<G, T>) return value_.value().data();
    else return rounded_->data();
  }
  const Extents<S>& extents() const { return ref_.extents(); }
  bool requires_grad() const { return ref_.requires_grad(); }
  /// The operand's gradient storage (zero-filled on first use).
  T* grad_data() const { return ref_.node_ptr()->grad_data(); }

 private:
  GradRef<T, S, D> ref_;
  Var<T, S, D> value_;  // when G is T
  // When G is not T. Optional: a default Tensor of a static shape would allocate (and
  // zero) memory that no default-constructed operand uses.
  std::optional<Tensor<G, S, D>> rounded_;
};

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

template <MatmulOptions Opt = MatmulOptions{}, class G = SameAsInput, class T, class SA, class SB, Device D>
auto matmul(Tape& tape, const Var<T, SA, D>& a, const Var<T, SB, D>& b);

/// The forward product alone, on tensors (no tape).
template <MatmulOptions Opt = MatmulOptions{}, class T, class SA, class SB>
auto matmul(const Tensor<T, SA>& a, const Tensor<T, SB>& b);

// ============================================================================

namespace detail {

/// C = op(A) op(B) + beta C on device D: the CPU matmul kernel, or cuda::gemm with the
/// same dims (cuda::GemmDims is kernels::MatmulDims). tf32: CUDA only (CPUs have no TF32).
template <class D, class TA, class TC>
void gemm_on(const TA* a, const TA* b, TC* c, const kernels::MatmulDims& d, float beta,
             [[maybe_unused]] bool tf32 = false) {
  require_kernels<D>();
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    cuda::gemm<TA, TC>(a, b, c, d, cuda::GemmOptions{.beta = beta, .tf32 = tf32});
#endif
  } else {
    kernels::cpu::matmul(a, b, c, d, beta);
  }
}

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

template <MatmulOptions Opt, class TC = void, class T, class SA, class SB, class D>
auto matmul_forward(const Tensor<T, SA, D>& a, const Tensor<T, SB, D>& b, bool tf32 = false) {
  static_assert(matmul_inner_extents_agree<SA, SB, Opt>, "matmul: static inner extents differ");
  using Out = std::conditional_t<std::is_void_v<TC>, T, TC>;
  using SO = typename matmul_shapes<SA, SB, Opt>::out;
  const auto d = matmul_dims<Opt, SA, SB>(a.extents(), b.extents());
  Extents<SO> eo;
  if constexpr (SO::rank == 3) eo = {d.batch, d.m, d.n};
  else eo = {d.m, d.n};
  auto c = Tensor<Out, SO, D>::uninitialized(eo);
  gemm_on<D>(a.data(), b.data(), c.data(), d, 0.0f, tf32);
  return c;
}

template <MatmulOptions Opt, class G, class T, class SA, class SB, class SO, class D>
struct MatmulEntry final : TapeEntry {
  GemmOperand<G, T, SA, D> a;
  GemmOperand<G, T, SB, D> b;
  GradRef<T, SO, D> c;
  MatmulEntry(GemmOperand<G, T, SA, D> a_, GemmOperand<G, T, SB, D> b_, GradRef<T, SO, D> c_)
      : a(std::move(a_)), b(std::move(b_)), c(std::move(c_)) {}
  bool tf32 = false;  // the products on TF32 tensor cores (a CUDA device, G = Tf32Products)
  const char* name() const override { return "matmul"; }

  void backward() override {
    if (!c.has_grad()) return;
    decltype(auto) gt = as_gemm_input<G>(c.grad());
    const G* g = gt.data();
    const auto d = matmul_dims<Opt, SA, SB>(a.extents(), b.extents());
    const G* av = a.data();
    const G* bv = b.data();
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
      gemm_on<D>(x, y, a.grad_data(), da, 1.0f, tf32);
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
      gemm_on<D>(x, y, b.grad_data(), db, 1.0f, tf32);
    }
  }
};

}  // namespace detail

template <MatmulOptions Opt, class T, class SA, class SB>
auto matmul(const Tensor<T, SA>& a, const Tensor<T, SB>& b) {
  return detail::matmul_forward<Opt>(a, b);
}

template <MatmulOptions Opt, class GIn, class T, class SA, class SB, Device D>
auto matmul(Tape& tape, const Var<T, SA, D>& a, const Var<T, SB, D>& b) {
  using G = gemm_input_t<GIn, T>;
  require_kernels<D>();
  const bool needs_grad = tape.recording() && (a.requires_grad() || b.requires_grad());
  if constexpr (std::is_same_v<G, T>) {
    auto c = make_result(detail::matmul_forward<Opt>(a.value(), b.value(), tf32_products<GIn>), needs_grad);
    using SO = typename decltype(c)::shape_type;
    if (needs_grad) {
      auto entry = std::make_unique<detail::MatmulEntry<Opt, G, T, SA, SB, SO, D>>(GemmOperand<G, T, SA, D>(a),
                                                                                   GemmOperand<G, T, SB, D>(b), c);
      entry->tf32 = tf32_products<GIn>;
      tape.push(std::move(entry));
    }
    return c;
  } else {
    Tensor<G, SA, D> ag = as_gemm_input<G>(a.value());
    Tensor<G, SB, D> bg = as_gemm_input<G>(b.value());
    auto c = make_result(detail::matmul_forward<Opt, T>(ag, bg), needs_grad);
    using SO = typename decltype(c)::shape_type;
    if (needs_grad) {
      tape.push(std::make_unique<detail::MatmulEntry<Opt, G, T, SA, SB, SO, D>>(
          GemmOperand<G, T, SA, D>(a, std::move(ag)), GemmOperand<G, T, SB, D>(b, std::move(bg)), c));
    }
    return c;
  }
}

}  // namespace ctdl::ops

#pragma once
// Scaled dot-product attention over heads, as BERT's self-attention, fused per head.
//
// Shape contract (every operand on one device, Cpu or Cuda): q, k, v are
// Var<T, Shape<dyn, H>> with B*S rows (sequence-major per example: row b*S + i);
// additive_mask is a Tensor<T, Shape<dyn, dyn>> [B, S], added to every query's scores for
// key j of example b (BERT: (1 - attention_mask) * -10000); `heads` divides H,
// D = H / heads. The result has q's shape: the heads' contexts side by side, as BERT's
// context_layer after its transpose back.
//
// For each example b and head a, with Q, K, V the D-wide column blocks of head a:
//   P = softmax(Q K^T / sqrt(D) + mask[b])        (S x S, row-wise)
//   Pd = P * keep / (1 - p)                        (attention dropout; keep from Philox)
//   C = Pd V
// Backward, recomputing P (nothing S x S is stored between forward and backward):
//   dV += Pd^T dC,   dPd = dC V^T,   dP = dPd * keep / (1 - p)
//   dZ = P * (dP - rowsum(dP * P)) / sqrt(D)
//   dQ += dZ K,      dK += dZ^T Q
// CPU: each thread works on one (b, a) at a time and holds only that head's S x S scores.
// Scores and softmax run in float for bf16/fp16 (double for double); products on the
// matmul kernel (oneDNN). attention<G>: the products take q, k, v, P and the gradients
// rounded to G (bf16 under Bf16Mixed); scores, softmax and results stay in T.
// CUDA: kernels/cuda/attention.cuh (cuda::attention_forward/backward), the same math and
// rounding points and the same Philox dropout masks, cuBLASLt products strided-batched over
// every (example, head) pair on head-major copies of q, k, v; the scores of all heads and
// the copies live in a workspace taken from the device pool for the call
// (attention_forward_workspace / attention_backward_workspace bytes).

#include <omp.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/core/math.hpp"
#include "ctdl/core/philox.hpp"
#include "ctdl/kernels/cpu/lanes.hpp"
#include "ctdl/kernels/cpu/matmul.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/ops/dropout.hpp"
#include "ctdl/ops/matmul.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/attention.cuh"
#endif

namespace ctdl::ops {

struct AttentionOptions {
  index_t heads = 1;
  float dropout = 0.0f;  // attention_probs_dropout_prob; 0 in evaluation
  RandomStream stream{};
};

template <class G = SameAsInput, class T, index_t H, Device D>
Var<T, Shape<dyn, H>, D> attention(Tape& tape, const Var<T, Shape<dyn, H>, D>& q, const Var<T, Shape<dyn, H>, D>& k,
                                   const Var<T, Shape<dyn, H>, D>& v,
                                   const Tensor<T, Shape<dyn, dyn>, D>& additive_mask, const AttentionOptions& opt);

// ============================================================================

namespace detail {

struct AttentionDims {
  index_t batch, seq, hidden, heads, head_dim;
};

#if CTDL_CUDA_OPS
inline cuda::AttentionShape cuda_shape(const AttentionDims& d) { return {d.batch, d.seq, d.hidden, d.heads}; }
/// tf32: the products on TF32 tensor cores (G = Tf32Products); off, the CPU's fp32 products.
inline cuda::AttentionParams cuda_params(const AttentionOptions& opt, bool tf32) {
  return {opt.dropout, opt.stream, tf32};
}
/// Device scratch of `bytes`, from the stream-ordered pool (freed in stream order).
inline Tensor<unsigned char, Shape<dyn>, Cuda> cuda_workspace(std::size_t bytes) {
  return Tensor<unsigned char, Shape<dyn>, Cuda>::uninitialized({static_cast<index_t>(bytes)});
}
#endif

/// One head's probabilities: P (row softmax of scaled scores + mask) and Pd (after
/// dropout), both S x S in the scratch type Sc.
template <class G, class T, class Sc>
void attention_probs(const G* q, const G* k, const T* mask_row, const AttentionDims& d, index_t b, index_t a,
                     const AttentionOptions& opt, Sc* p, Sc* pd) {
  const index_t s = d.seq, hd = d.hidden;
  kernels::cpu::matmul(q, k, p, {1, s, s, d.head_dim, false, true, -1, -1, -1, hd, hd, s}, 0.0f);
  const Sc scale = Sc(1) / std::sqrt(static_cast<Sc>(d.head_dim));
  const Sc keep_scale = opt.dropout > 0 ? Sc(1) / (Sc(1) - static_cast<Sc>(opt.dropout)) : Sc(1);
  const std::uint64_t base = static_cast<std::uint64_t>((b * d.heads + a) * s) * static_cast<std::uint64_t>(s);
  Sc mask[1024];
  Sc* mk = s <= 1024 ? mask : nullptr;
  std::vector<Sc> mask_heap;
  if (!mk) {
    mask_heap.resize(static_cast<std::size_t>(s));
    mk = mask_heap.data();
  }
  for (index_t j = 0; j < s; ++j) mk[j] = convert<Sc>(mask_row[j]);
  for (index_t i = 0; i < s; ++i) {
    Sc* row = p + i * s;
    for (index_t j = 0; j < s; ++j) row[j] = row[j] * scale + mk[j];
    const Sc m = kernels::cpu::lane_max(row, s);
    for (index_t j = 0; j < s; ++j) row[j] = math::exp(row[j] - m);
    const Sc inv = Sc(1) / kernels::cpu::lane_sum(row, s);
    Sc* drow = pd + i * s;
    for (index_t j = 0; j < s; ++j) drow[j] = row[j] *= inv;
    if (opt.dropout > 0) {
      for_each_keep(opt.stream, opt.dropout, base + static_cast<std::uint64_t>(i * s), s,
                    [&](index_t j, bool keep) { drow[j] = keep ? row[j] * keep_scale : Sc(0); });
    }
  }
}

/// A T-typed view of scratch values (a copy for bf16/fp16, the same memory otherwise).
template <class T, class Sc>
const T* as_type(const Sc* src, std::vector<T>& buf, index_t n) {
  if constexpr (std::is_same_v<T, Sc>) {
    (void)buf;
    (void)n;
    return src;
  } else {
    buf.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) buf[static_cast<std::size_t>(i)] = convert<T>(src[i]);
    return buf.data();
  }
}

template <class G, class T, index_t H, class D>
struct AttentionEntry final : TapeEntry {
  using Operand = GemmOperand<G, T, Shape<dyn, H>, D>;
  Operand q, k, v;  // as the products take them (rounded to G, when G is not T)
  GradRef<T, Shape<dyn, H>, D> out;
  Tensor<T, Shape<dyn, dyn>, D> mask;
  AttentionOptions opt;
  AttentionDims d;
  bool tf32 = false;  // the products on TF32 tensor cores (a CUDA device, G = Tf32Products)
  AttentionEntry(Operand q_, Operand k_, Operand v_, GradRef<T, Shape<dyn, H>, D> o_,
                 Tensor<T, Shape<dyn, dyn>, D> m_, AttentionOptions opt_, AttentionDims d_)
      : q(std::move(q_)), k(std::move(k_)), v(std::move(v_)), out(std::move(o_)), mask(std::move(m_)), opt(opt_),
        d(d_) {}
  const char* name() const override { return "attention"; }

  void backward() override {
    if (!out.has_grad()) return;
    decltype(auto) dc_t = as_gemm_input<G>(out.grad());
    const G* dc = dc_t.data();
    const G* qv = q.data();
    const G* kv = k.data();
    const G* vv = v.data();
    T* dq = q.requires_grad() ? q.grad_data() : nullptr;
    T* dk = k.requires_grad() ? k.grad_data() : nullptr;
    T* dv = v.requires_grad() ? v.grad_data() : nullptr;
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      auto workspace = cuda_workspace(cuda::attention_backward_workspace<G>(d.batch, d.seq, d.heads, d.hidden));
      cuda::attention_backward<G, T>(qv, kv, vv, mask.data(), dc, dq, dk, dv, cuda_shape(d), cuda_params(opt, tf32),
                                     workspace.data());
#endif
    } else {
      backward_cpu(dc, qv, kv, vv, dq, dk, dv);
    }
  }

  /// The CPU loops: per (b, a), P recomputed, then the products into the gradients.
  void backward_cpu(const G* dc, const G* qv, const G* kv, const G* vv, T* dq, T* dk, T* dv) {
    using Sc = compute_t<T>;
    const index_t s = d.seq, hd = d.hidden, dh = d.head_dim;
    const Sc scale = Sc(1) / std::sqrt(static_cast<Sc>(dh));
    const Sc keep_scale = opt.dropout > 0 ? Sc(1) / (Sc(1) - static_cast<Sc>(opt.dropout)) : Sc(1);
#pragma omp parallel
    {
      std::vector<Sc> p(static_cast<std::size_t>(s * s)), pd(p.size()), dp(p.size());
      std::vector<G> buf;
#pragma omp for schedule(static)
      for (index_t ba = 0; ba < d.batch * d.heads; ++ba) {
        const index_t b = ba / d.heads, a = ba % d.heads;
        const index_t off = b * s * hd + a * dh;
        attention_probs(qv + off, kv + off, mask.data() + b * s, d, b, a, opt, p.data(), pd.data());
        if (dv) kernels::cpu::matmul(as_type<G>(pd.data(), buf, s * s), dc + off, dv + off,
                                     {1, s, dh, s, true, false, -1, -1, -1, s, hd, hd}, 1.0f);
        // dPd = dC V^T
        kernels::cpu::matmul(dc + off, vv + off, dp.data(), {1, s, s, dh, false, true, -1, -1, -1, hd, hd, s}, 0.0f);
        const std::uint64_t base = static_cast<std::uint64_t>(ba * s) * static_cast<std::uint64_t>(s);
        for (index_t i = 0; i < s; ++i) {
          Sc* dpr = dp.data() + i * s;
          const Sc* pr = p.data() + i * s;
          if (opt.dropout > 0) {
            for_each_keep(opt.stream, opt.dropout, base + static_cast<std::uint64_t>(i * s), s,
                          [&](index_t j, bool keep) { dpr[j] = keep ? dpr[j] * keep_scale : Sc(0); });
          }
          const Sc dot = kernels::cpu::lane_dot(dpr, pr, s);
          for (index_t j = 0; j < s; ++j) dpr[j] = pr[j] * (dpr[j] - dot) * scale;
        }
        const G* dz = as_type<G>(dp.data(), buf, s * s);
        if (dq) kernels::cpu::matmul(dz, kv + off, dq + off, {1, s, dh, s, false, false, -1, -1, -1, s, hd, hd}, 1.0f);
        if (dk) kernels::cpu::matmul(dz, qv + off, dk + off, {1, s, dh, s, true, false, -1, -1, -1, s, hd, hd}, 1.0f);
      }
    }
  }
};

}  // namespace detail

template <class GIn, class T, index_t H, Device D>
Var<T, Shape<dyn, H>, D> attention(Tape& tape, const Var<T, Shape<dyn, H>, D>& q, const Var<T, Shape<dyn, H>, D>& k,
                                   const Var<T, Shape<dyn, H>, D>& v,
                                   const Tensor<T, Shape<dyn, dyn>, D>& additive_mask, const AttentionOptions& opt) {
  using G = gemm_input_t<GIn, T>;
  require_kernels<D>();
  const index_t batch = additive_mask.extent(0), seq = additive_mask.extent(1), hidden = q.extents()[1];
  if (q.extents() != k.extents() || q.extents() != v.extents() || q.extents()[0] != batch * seq) {
    throw ShapeError("attention: q " + describe<Shape<dyn, H>>(q.extents()) + ", k " +
                     describe<Shape<dyn, H>>(k.extents()) + ", v " + describe<Shape<dyn, H>>(v.extents()) +
                     " do not fit the mask's batch x sequence " + format_extents(additive_mask.extents()));
  }
  if (opt.heads <= 0 || hidden % opt.heads != 0) {
    throw ShapeError("attention: " + std::to_string(opt.heads) + " heads do not divide the hidden width " +
                     std::to_string(hidden));
  }
  if (!(opt.dropout >= 0.0f && opt.dropout < 1.0f)) throw Error("attention: dropout probability not in [0, 1)");
  const detail::AttentionDims d{batch, seq, hidden, opt.heads, hidden / opt.heads};
  using Operand = GemmOperand<G, T, Shape<dyn, H>, D>;
  Operand qg(q), kg(k), vg(v);
  const G* qv = qg.data();
  const G* kv = kg.data();
  const G* vv = vg.data();
  auto value = Tensor<T, Shape<dyn, H>, D>::uninitialized(q.extents());
  if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
    auto workspace = detail::cuda_workspace(cuda::attention_forward_workspace<G>(batch, seq, opt.heads, hidden));
    cuda::attention_forward<G, T>(qv, kv, vv, additive_mask.data(), value.data(), detail::cuda_shape(d),
                                  detail::cuda_params(opt, tf32_products<GIn>), workspace.data());
#endif
  } else {
    using Sc = compute_t<T>;
#pragma omp parallel
    {
      std::vector<Sc> p(static_cast<std::size_t>(seq * seq)), pd(p.size());
      std::vector<G> buf;
#pragma omp for schedule(static)
      for (index_t ba = 0; ba < batch * opt.heads; ++ba) {
        const index_t b = ba / opt.heads, a = ba % opt.heads;
        const index_t off = b * seq * hidden + a * d.head_dim;
        detail::attention_probs(qv + off, kv + off, additive_mask.data() + b * seq, d, b, a, opt, p.data(), pd.data());
        kernels::cpu::matmul(detail::as_type<G>(pd.data(), buf, seq * seq), vv + off, value.data() + off,
                             {1, seq, d.head_dim, seq, false, false, -1, -1, -1, seq, hidden, hidden}, 0.0f);
      }
    }
  }
  const bool needs_grad = tape.recording() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  auto out = make_result(std::move(value), needs_grad);
  if (needs_grad) {
    auto entry = std::make_unique<detail::AttentionEntry<G, T, H, D>>(
        std::move(qg), std::move(kg), std::move(vg), out, Tensor<T, Shape<dyn, dyn>, D>(additive_mask), opt, d);
    entry->tf32 = tf32_products<GIn>;
    tape.push(std::move(entry));
  }
  return out;
}

}  // namespace ctdl::ops

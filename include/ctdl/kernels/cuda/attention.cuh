#pragma once
// BERT's self-attention on the GPU: the CUDA sibling of the loops in ops/attention.hpp,
// computing exactly what that op computes, as strided-batched cuBLASLt products
// (kernels/cuda/blas.cuh) and two row kernels of ctdl's own. Scores are materialised in
// a caller-provided workspace; a flash-style kernel that never writes them is the
// next issue's.
//
// Shape contract (as ops::attention): q, k, v are [B*S, H] row-major, row b*S + i the
// token i of example b; head a owns columns a*D .. a*D + D - 1 (D = H / heads); mask is
// [B, S], added to every query's score for key j of example b; out, dq, dk, dv are
// [B*S, H]. For each example b and head a, with Q, K, V head a's D-wide column blocks:
//   P  = softmax(Q K^T * scale + mask[b])      scale = 1 / sqrt(D), row-wise, in float
//   Pd = P * keep / (1 - p)                    keep = stream.uniform(e) >= p
//   C  = Pd V
// where e = ((b * heads + a) * S + i) * S + j, the flat index of score (i, j) of (b, a)
// in [B, heads, S, S]: the CPU's Philox element indexing, so both devices drop the same
// probabilities. Backward (recomputing P, as the CPU does; nothing S x S is kept):
//   dV += Pd^T dC,   dPd = dC V^T,   dP = dPd * keep / (1 - p)
//   dZ = P * (dP - rowsum(dP * P)) * scale
//   dQ += dZ K,      dK += dZ^T Q
//
// Types: G is the products' input type (q, k, v, dout as the products take them: bf16
// under Bf16Mixed, rounded by the caller, e.g. with cuda::copy_converted); T the mask's, the
// output's and the gradients' type. Scores, softmax and dZ are float; Pd and dZ are
// rounded to G for the products that take them, as the CPU's as_type<G>. Gradients
// accumulate (+=) into dq, dk, dv (any may be null). tf32: float products on TF32 cores.
//
// Workspace (device memory, caller-provided, no alignment needed beyond cudaMalloc's):
//   forward:  attention_forward_workspace<G>(batch, seq, heads) bytes:
//             scores/P [B, heads, S, S] float, then Pd in G
//   backward: attention_backward_workspace<G>(batch, seq, heads) bytes:
//             P and dPd [B, heads, S, S] float each, then Pd / dZ in G
// (BERT-base, batch 64 x 128: 12.6 M scores; 113 MiB forward, 164 MiB backward in bf16).
//
// Launches: per head one strided-batched product over the batch for each of the
// products (a head's columns of q, k, v are one matrix per example, S*H apart), and one
// block per score row for the softmax kernels: asynchronous on `stream`.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "ctdl/core/error.hpp"
#include "ctdl/core/math.hpp"
#include "ctdl/core/philox.hpp"
#include "ctdl/kernels/cuda/blas.cuh"
#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::cuda {

struct AttentionShape {
  index_t batch = 0, seq = 0, hidden = 0, heads = 1;
};

struct AttentionParams {
  float dropout = 0.0f;  // attention_probs_dropout_prob; 0 in evaluation
  RandomStream stream{};  // the op's stream (AttentionOptions::stream)
  bool tf32 = false;      // float products on TF32 tensor cores
};

template <class G>
std::size_t attention_forward_workspace(index_t batch, index_t seq, index_t heads);
template <class G>
std::size_t attention_backward_workspace(index_t batch, index_t seq, index_t heads);

/// out = the heads' contexts side by side (see the header).
template <class G, class T>
void attention_forward(const G* q, const G* k, const G* v, const T* mask, T* out, const AttentionShape& shape,
                       const AttentionParams& params, void* workspace, cudaStream_t stream = current_stream());

/// dq += dL/dq, dk += dL/dk, dv += dL/dv from dout = dL/dout rounded to G (null
/// gradients are skipped).
template <class G, class T>
void attention_backward(const G* q, const G* k, const G* v, const T* mask, const G* dout, T* dq, T* dk, T* dv,
                        const AttentionShape& shape, const AttentionParams& params, void* workspace,
                        cudaStream_t stream = current_stream());

// ============================================================================

namespace attention_detail {

inline constexpr int kAttentionRowThreads = 128;

inline std::size_t round_up_256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
inline std::size_t score_count(index_t batch, index_t seq, index_t heads) {
  return static_cast<std::size_t>(batch) * static_cast<std::size_t>(heads) * static_cast<std::size_t>(seq) *
         static_cast<std::size_t>(seq);
}

/// One block per score row r (of B * heads * S): z = scores * scale + mask, P = softmax(z)
/// written over the scores, Pd = P * keep / (1 - p) written as G. Row r is (b, a, i) with
/// b = r / (heads * S); its element j has the Philox index r * S + j.
template <class G, class T>
__global__ void attention_softmax_kernel(float* scores, G* dropped, const T* mask, std::int64_t heads_seq,
                                         std::int64_t seq, float scale, float p, float keep_scale,
                                         RandomStream stream) {
  __shared__ float scratch[32];
  const std::int64_t r = blockIdx.x;
  const std::int64_t b = r / heads_seq;
  float* row = scores + r * seq;
  float m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    const float z = row[j] * scale + load(mask, b * seq + j);
    row[j] = z;
    m = fmaxf(m, z);
  }
  m = block_max(m, scratch);
  float sum = 0.0f;
  for (std::int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    const float e = math::exp(row[j] - m);  // ctdl's exp, the CPU's own (math.hpp)
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_sum(sum, scratch);
  for (std::int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    const float prob = row[j] * inv;
    row[j] = prob;
    float kept = prob;
    if (p > 0.0f) kept = stream.uniform(static_cast<std::uint64_t>(r * seq + j)) >= p ? prob * keep_scale : 0.0f;
    store(dropped, r * seq + j, kept);
  }
}

/// One block per score row r: dP = dPd * keep / (1 - p) (in place), then
/// dZ = P * (dP - rowsum(dP * P)) * scale, written as G.
template <class G>
__global__ void attention_softmax_backward_kernel(const float* probs, float* dprobs, G* dscores, std::int64_t seq,
                                                  float scale, float p, float keep_scale, RandomStream stream) {
  __shared__ float scratch[32];
  const std::int64_t r = blockIdx.x;
  const float* prow = probs + r * seq;
  float* drow = dprobs + r * seq;
  float dot = 0.0f;
  for (std::int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    float dp = drow[j];
    if (p > 0.0f) dp = stream.uniform(static_cast<std::uint64_t>(r * seq + j)) >= p ? dp * keep_scale : 0.0f;
    drow[j] = dp;
    dot += dp * prow[j];
  }
  dot = block_sum(dot, scratch);  // a barrier: every drow[j] above is written
  for (std::int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    store(dscores, r * seq + j, prow[j] * (drow[j] - dot) * scale);
  }
}

inline void check_attention(const AttentionShape& s, const AttentionParams& params, const void* workspace,
                            const char* op) {
  if (s.batch < 0 || s.seq < 0 || s.hidden < 0) throw Error(std::string(op) + ": negative extent");
  if (s.heads <= 0 || s.hidden % s.heads != 0) {
    throw ShapeError(std::string(op) + ": " + std::to_string(s.heads) + " heads do not divide the hidden width " +
                     std::to_string(s.hidden));
  }
  if (!(params.dropout >= 0.0f && params.dropout < 1.0f)) {
    throw Error(std::string(op) + ": dropout probability " + std::to_string(params.dropout) + " not in [0, 1)");
  }
  if (!workspace && s.batch * s.seq > 0) throw Error(std::string(op) + ": no workspace");
}

/// The scale factors as the CPU computes them, in float: 1/sqrt(D) and 1/(1 - p).
inline float score_scale(index_t head_dim) { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }
inline float keep_scale(float p) { return p > 0.0f ? 1.0f / (1.0f - p) : 1.0f; }

/// P and Pd of every (b, a) into the workspace: per head one batched Q K^T, then the row
/// kernel over all rows.
template <class G, class T>
void attention_probs(const G* q, const G* k, const T* mask, const AttentionShape& s, const AttentionParams& params,
                     float* probs, G* dropped, cudaStream_t stream) {
  const index_t d = s.hidden / s.heads, ss = s.seq * s.seq;
  const GemmOptions opt{.tf32 = params.tf32};
  for (index_t a = 0; a < s.heads; ++a) {
    // scores[b, a] (S x S, float) = Q (S x D, rows H apart) K^T; examples S*H apart in
    // q and k, heads*S*S apart in the scores.
    gemm<G, float>(q + a * d, k + a * d, probs + a * ss,
                   GemmDims{s.batch, s.seq, s.seq, d, false, true, s.seq * s.hidden, s.seq * s.hidden, s.heads * ss,
                            s.hidden, s.hidden, s.seq},
                   opt, nullptr, stream);
  }
  const std::int64_t rows = s.batch * s.heads * s.seq;
  attention_softmax_kernel<<<static_cast<unsigned>(rows), kAttentionRowThreads, 0, stream>>>(
      probs, dropped, mask, s.heads * s.seq, s.seq, score_scale(d), params.dropout, keep_scale(params.dropout),
      params.stream);
  check_launch("cuda::attention (softmax, mask and dropout)");
}

}  // namespace attention_detail

template <class G>
std::size_t attention_forward_workspace(index_t batch, index_t seq, index_t heads) {
  const std::size_t n = attention_detail::score_count(batch, seq, heads);
  return attention_detail::round_up_256(n * sizeof(float)) + attention_detail::round_up_256(n * sizeof(G));
}

template <class G>
std::size_t attention_backward_workspace(index_t batch, index_t seq, index_t heads) {
  const std::size_t n = attention_detail::score_count(batch, seq, heads);
  return 2 * attention_detail::round_up_256(n * sizeof(float)) + attention_detail::round_up_256(n * sizeof(G));
}

template <class G, class T>
void attention_forward(const G* q, const G* k, const G* v, const T* mask, T* out, const AttentionShape& s,
                       const AttentionParams& params, void* workspace, cudaStream_t stream) {
  attention_detail::check_attention(s, params, workspace, "cuda::attention_forward");
  if (s.batch == 0 || s.seq == 0 || s.hidden == 0) return;
  const index_t d = s.hidden / s.heads, ss = s.seq * s.seq;
  const std::size_t n = attention_detail::score_count(s.batch, s.seq, s.heads);
  auto* probs = static_cast<float*>(workspace);
  auto* dropped = reinterpret_cast<G*>(static_cast<char*>(workspace) + attention_detail::round_up_256(n * sizeof(float)));
  attention_detail::attention_probs(q, k, mask, s, params, probs, dropped, stream);
  const GemmOptions opt{.tf32 = params.tf32};
  for (index_t a = 0; a < s.heads; ++a) {
    // out[b] head a (S x D, rows H apart) = Pd[b, a] (S x S) V (S x D, rows H apart)
    gemm<G, T>(dropped + a * ss, v + a * d, out + a * d,
               GemmDims{s.batch, s.seq, d, s.seq, false, false, s.heads * ss, s.seq * s.hidden, s.seq * s.hidden,
                        s.seq, s.hidden, s.hidden},
               opt, nullptr, stream);
  }
}

template <class G, class T>
void attention_backward(const G* q, const G* k, const G* v, const T* mask, const G* dout, T* dq, T* dk, T* dv,
                        const AttentionShape& s, const AttentionParams& params, void* workspace, cudaStream_t stream) {
  attention_detail::check_attention(s, params, workspace, "cuda::attention_backward");
  if (s.batch == 0 || s.seq == 0 || s.hidden == 0 || (!dq && !dk && !dv)) return;
  const index_t d = s.hidden / s.heads, ss = s.seq * s.seq, sh = s.seq * s.hidden;
  const std::size_t n = attention_detail::score_count(s.batch, s.seq, s.heads);
  const std::size_t float_bytes = attention_detail::round_up_256(n * sizeof(float));
  auto* probs = static_cast<float*>(workspace);
  auto* dprobs = reinterpret_cast<float*>(static_cast<char*>(workspace) + float_bytes);
  // Pd for dV, then (no longer needed) dZ for dQ and dK.
  auto* rounded = reinterpret_cast<G*>(static_cast<char*>(workspace) + 2 * float_bytes);
  attention_detail::attention_probs(q, k, mask, s, params, probs, rounded, stream);
  const GemmOptions overwrite{.tf32 = params.tf32}, accumulate{.beta = 1.0f, .tf32 = params.tf32};
  for (index_t a = 0; a < s.heads; ++a) {
    // dV (S x D) += Pd^T (Pd stored S x S) dC (S x D)
    if (dv) {
      gemm<G, T>(rounded + a * ss, dout + a * d, dv + a * d,
                 GemmDims{s.batch, s.seq, d, s.seq, true, false, s.heads * ss, sh, sh, s.seq, s.hidden, s.hidden},
                 accumulate, nullptr, stream);
    }
    // dPd (S x S, float) = dC (S x D) V^T
    gemm<G, float>(dout + a * d, v + a * d, dprobs + a * ss,
                   GemmDims{s.batch, s.seq, s.seq, d, false, true, sh, sh, s.heads * ss, s.hidden, s.hidden, s.seq},
                   overwrite, nullptr, stream);
  }
  const std::int64_t rows = s.batch * s.heads * s.seq;
  attention_detail::attention_softmax_backward_kernel<<<static_cast<unsigned>(rows), attention_detail::kAttentionRowThreads, 0, stream>>>(
      probs, dprobs, rounded, s.seq, attention_detail::score_scale(d), params.dropout, attention_detail::keep_scale(params.dropout),
      params.stream);
  check_launch("cuda::attention_backward (softmax and dropout gradient)");
  for (index_t a = 0; a < s.heads; ++a) {
    // dQ (S x D) += dZ (S x S) K (S x D)
    if (dq) {
      gemm<G, T>(rounded + a * ss, k + a * d, dq + a * d,
                 GemmDims{s.batch, s.seq, d, s.seq, false, false, s.heads * ss, sh, sh, s.seq, s.hidden, s.hidden},
                 accumulate, nullptr, stream);
    }
    // dK (S x D) += dZ^T (dZ stored S x S) Q (S x D)
    if (dk) {
      gemm<G, T>(rounded + a * ss, q + a * d, dk + a * d,
                 GemmDims{s.batch, s.seq, d, s.seq, true, false, s.heads * ss, sh, sh, s.seq, s.hidden, s.hidden},
                 accumulate, nullptr, stream);
    }
  }
}

}  // namespace ctdl::cuda

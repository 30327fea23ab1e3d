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
// Workspace (device memory, caller-provided, 16-byte aligned as cudaMalloc's and the
// pool's are: the softmax kernels read the scores as float4):
//   forward:  attention_forward_workspace<G>(batch, seq, heads, hidden) bytes:
//             scores/P [B, heads, S, S] float, Pd in G, head-major copies of q, k, v
//             in G, and the context in float (over P once P is spent, when it fits)
//   backward: attention_backward_workspace<G>(batch, seq, heads, hidden) bytes:
//             P and dPd [B, heads, S, S] float each, Pd / dZ in G, head-major copies of
//             q, k, v, dC in G, and dV, dQ, dK in float (dQ and dK over P and dPd once
//             those are spent, when they fit)
// (BERT-base, batch 64 x 128: 12.6 M scores; 108 MiB forward, 192 MiB backward in bf16,
// of which the head-major copies and dV are 36 and 72 MiB.)
//
// Launches: the products are strided-batched over all B * heads (example, head) pairs at
// once, on head-major copies [B, heads, S, D] of q, k, v (and dC): a head's columns of the
// [B*S, H] inputs are not one stride apart across both examples and heads, so one batched
// product needs the copy. One kernel makes the copies, one puts the context (or adds the
// gradients) back in [B*S, H] order, and each softmax kernel runs one warp per score row,
// the row in registers (when S is a multiple of 4 up to 1,024, each lane takes groups of
// four scores as float4 and their four dropout numbers from one Philox block; other rows
// up to 128 four scores a lane; one block per row beyond): 5 launches forward and 9
// backward, asynchronous on `stream`. (One product per head,
// as before, took 25 and 62 launches with 12 heads, each product a fraction of the GPU.)

#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "ctdl/core/config.hpp"
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
std::size_t attention_forward_workspace(index_t batch, index_t seq, index_t heads, index_t hidden);
template <class G>
std::size_t attention_backward_workspace(index_t batch, index_t seq, index_t heads, index_t hidden);

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

/// Byte offsets of the workspace's parts (see the header), and its size.
struct ForwardLayout {
  std::size_t probs = 0, dropped = 0, heads[3] = {}, context = 0, bytes = 0;
};
struct BackwardLayout {
  std::size_t probs = 0, dprobs = 0, rounded = 0, heads[4] = {}, dv = 0, dq = 0, dk = 0, bytes = 0;
};

/// The rounded sizes the layouts are made of: scores in float and in G, a [B*S, H]
/// matrix in G and in float.
struct PartBytes {
  std::size_t score_floats, score_gs, token_gs, token_floats;
};
template <class G>
PartBytes part_bytes(index_t batch, index_t seq, index_t heads, index_t hidden) {
  const std::size_t scores = score_count(batch, seq, heads);
  const std::size_t tokens = static_cast<std::size_t>(batch) * static_cast<std::size_t>(seq) *
                             static_cast<std::size_t>(hidden);
  return {round_up_256(scores * sizeof(float)), round_up_256(scores * sizeof(G)), round_up_256(tokens * sizeof(G)),
          round_up_256(tokens * sizeof(float))};
}

template <class G>
ForwardLayout forward_layout(index_t batch, index_t seq, index_t heads, index_t hidden) {
  const PartBytes n = part_bytes<G>(batch, seq, heads, hidden);
  ForwardLayout l;
  std::size_t at = 0;
  l.probs = at, at += n.score_floats;
  l.dropped = at, at += n.score_gs;
  for (auto& h : l.heads) h = at, at += n.token_gs;
  // The context is written after the softmax has made Pd: P's place is free by then.
  if (n.token_floats <= n.score_floats) l.context = l.probs;
  else l.context = at, at += n.token_floats;
  l.bytes = at;
  return l;
}

template <class G>
BackwardLayout backward_layout(index_t batch, index_t seq, index_t heads, index_t hidden) {
  const PartBytes n = part_bytes<G>(batch, seq, heads, hidden);
  BackwardLayout l;
  std::size_t at = 0;
  l.probs = at, at += n.score_floats;
  l.dprobs = at, at += n.score_floats;
  l.rounded = at, at += n.score_gs;
  for (auto& h : l.heads) h = at, at += n.token_gs;
  l.dv = at, at += n.token_floats;
  // dQ and dK are written after the softmax backward has read P and dPd for the last time.
  if (n.token_floats <= n.score_floats) {
    l.dq = l.probs, l.dk = l.dprobs;
  } else {
    l.dq = at, at += n.token_floats;
    l.dk = at, at += n.token_floats;
  }
  l.bytes = at;
  return l;
}

/// Up to four [B*S, H] matrices and their head-major [B, heads, S, D] counterparts.
template <class From, class To>
struct HeadMoves {
  const From* from[4] = {};
  To* to[4] = {};
  int count = 0;
};

/// Element e of the S x D matrix of pair t = b * heads + a: row i = e / D, column
/// c = e % D, at t * S * D + e head-major and at (b * S + i) * H + a * D + c in [B*S, H].
/// (32-bit index arithmetic: head_grid bounds S * D and B * heads.)
struct HeadIndex {
  std::int64_t head_major = 0, token_major = 0;
  CTDL_HOST_DEVICE static HeadIndex of(unsigned t, unsigned e, unsigned seq, unsigned heads, unsigned d) {
    const unsigned b = t / heads, a = t % heads, i = e / d, c = e % d;
    return {static_cast<std::int64_t>(t) * seq * d + e,
            (static_cast<std::int64_t>(b) * seq + i) * (static_cast<std::int64_t>(heads) * d) + a * d + c};
  }
};

/// to[k] (head-major) = from[k] ([B*S, H]), exactly (same type).
/// Block (x = t, y) of head_grid covers elements y * blockDim.x + threadIdx.x of pair t.
template <class G>
__global__ void to_heads_kernel(HeadMoves<G, G> m, unsigned seq, unsigned heads, unsigned d) {
  const unsigned e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= seq * d) return;
  const HeadIndex at = HeadIndex::of(blockIdx.x, e, seq, heads, d);
  for (int k = 0; k < m.count; ++k) store(m.to[k], at.head_major, load(m.from[k], at.token_major));
}

/// to[k] ([B*S, H]) = from[k] (head-major, float) rounded to T, or to[k] += from[k] when
/// `accumulate` (in float, rounded once).
template <class T>
__global__ void from_heads_kernel(HeadMoves<float, T> m, unsigned seq, unsigned heads, unsigned d, bool accumulate) {
  const unsigned e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= seq * d) return;
  const HeadIndex at = HeadIndex::of(blockIdx.x, e, seq, heads, d);
  for (int k = 0; k < m.count; ++k) {
    const float v = m.from[k][at.head_major];
    store(m.to[k], at.token_major, accumulate ? load(m.to[k], at.token_major) + v : v);
  }
}

/// The grid of to_heads_kernel / from_heads_kernel; throws past CUDA's grid limits.
inline dim3 head_grid(const AttentionShape& s, const char* op) {
  const std::int64_t pairs = s.batch * s.heads, elements = s.seq * (s.hidden / s.heads);
  const std::int64_t chunks = (elements + kThreads - 1) / kThreads;
  if (pairs > 0x7fffffff || chunks > 65535) {
    throw Error(std::string(op) + ": " + std::to_string(pairs) + " (example, head) pairs of " +
                std::to_string(elements) + " elements exceed the head copy's grid (2^31 - 1 pairs, " +
                std::to_string(65535 * kThreads) + " elements)");
  }
  return dim3(static_cast<unsigned>(pairs), static_cast<unsigned>(chunks));
}

template <class From, class To>
void add_move(HeadMoves<From, To>& m, const From* from, To* to) {
  if (!to) return;
  m.from[m.count] = from;
  m.to[m.count] = to;
  ++m.count;
}

template <class G>
void to_heads(const HeadMoves<G, G>& m, const AttentionShape& s, const char* op, cudaStream_t stream) {
  if (m.count == 0) return;
  to_heads_kernel<G><<<head_grid(s, op), kThreads, 0, stream>>>(m, static_cast<unsigned>(s.seq),
                                                                 static_cast<unsigned>(s.heads),
                                                                 static_cast<unsigned>(s.hidden / s.heads));
  check_launch(op);
}

template <class T>
void from_heads(const HeadMoves<float, T>& m, const AttentionShape& s, bool accumulate, const char* op,
                cudaStream_t stream) {
  if (m.count == 0) return;
  from_heads_kernel<T><<<head_grid(s, op), kThreads, 0, stream>>>(m, static_cast<unsigned>(s.seq),
                                                                   static_cast<unsigned>(s.heads),
                                                                   static_cast<unsigned>(s.hidden / s.heads), accumulate);
  check_launch(op);
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

/// Rows of up to 32 * PerLane scores: one warp per row, the row held in registers (lane
/// l owns elements l, l + 32, ...), warp shuffles for the max and the sums: one read and
/// one write of each score, no block barriers. The same arithmetic as the block kernels
/// above (which take rows longer than 1,024, and those of 129 to 1,024 that are not a
/// multiple of 4: dispatch_rows), only the float sums' order differs.
inline constexpr int kRowsPerWarpBlock = 8;  // 256 threads

template <int PerLane, class G, class T>
__global__ __launch_bounds__(32 * kRowsPerWarpBlock) void attention_softmax_warp_kernel(
    float* scores, G* dropped, const T* mask, std::int64_t rows, std::int64_t heads_seq, std::int64_t seq, float scale,
    float p, float keep_scale, RandomStream stream) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / 32;
  if (r >= rows) return;  // the whole warp: r is the warp's
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t b = r / heads_seq;
  float* row = scores + r * seq;
  float z[PerLane];
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const std::int64_t j = lane + 32 * k;
    z[k] = j < seq ? row[j] * scale + load(mask, b * seq + j) : -INFINITY;
    m = fmaxf(m, z[k]);
  }
  m = warp_max(m);
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    if (lane + 32 * k < seq) {
      z[k] = math::exp(z[k] - m);  // ctdl's exp, the CPU's own (math.hpp)
      sum += z[k];
    }
  }
  const float inv = 1.0f / warp_sum(sum);
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const std::int64_t j = lane + 32 * k;
    if (j < seq) {
      const float prob = z[k] * inv;
      row[j] = prob;
      float kept = prob;
      if (p > 0.0f) kept = stream.uniform(static_cast<std::uint64_t>(r * seq + j)) >= p ? prob * keep_scale : 0.0f;
      store(dropped, r * seq + j, kept);
    }
  }
}

/// The backward of attention_softmax_warp_kernel: dZ from P and dPd, one warp per row.
template <int PerLane, class G>
__global__ __launch_bounds__(32 * kRowsPerWarpBlock) void attention_softmax_backward_warp_kernel(
    const float* probs, const float* dprobs, G* dscores, std::int64_t rows, std::int64_t seq, float scale, float p,
    float keep_scale, RandomStream stream) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const float* prow = probs + r * seq;
  const float* drow = dprobs + r * seq;
  float pk[PerLane], dp[PerLane];
  float dot = 0.0f;
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const std::int64_t j = lane + 32 * k;
    pk[k] = 0.0f, dp[k] = 0.0f;
    if (j < seq) {
      pk[k] = prow[j];
      dp[k] = drow[j];
      if (p > 0.0f) dp[k] = stream.uniform(static_cast<std::uint64_t>(r * seq + j)) >= p ? dp[k] * keep_scale : 0.0f;
      dot += dp[k] * pk[k];
    }
  }
  dot = warp_sum(dot);
#pragma unroll
  for (int k = 0; k < PerLane; ++k) {
    const std::int64_t j = lane + 32 * k;
    if (j < seq) store(dscores, r * seq + j, pk[k] * (dp[k] - dot) * scale);
  }
}

/// Rows of a multiple of 4 scores, up to 128 * Groups: lane l owns the groups of four
/// 4 l + 128 g .. 4 l + 128 g + 3, read and written as float4, and draws each group's four
/// dropout decisions from one Philox block (uniform4 of element / 4: the same numbers as
/// uniform() per element, a quarter of the generator's work). Otherwise as the warp
/// kernels above.
template <int Groups, class G, class T>
__global__ __launch_bounds__(32 * kRowsPerWarpBlock) void attention_softmax_warp4_kernel(
    float* scores, G* dropped, const T* mask, std::int64_t rows, std::int64_t heads_seq, std::int64_t seq, float scale,
    float p, float keep_scale, RandomStream stream) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int64_t b = r / heads_seq;
  float* row = scores + r * seq;
  float z[Groups][4];
  float m = -INFINITY;
#pragma unroll
  for (int g = 0; g < Groups; ++g) {
    const std::int64_t j = 4 * lane + 128 * g;
    if (j < seq) {  // seq is a multiple of 4: the whole group is in the row
      const float4 v = *reinterpret_cast<const float4*>(row + j);
      z[g][0] = v.x * scale + load(mask, b * seq + j);
      z[g][1] = v.y * scale + load(mask, b * seq + j + 1);
      z[g][2] = v.z * scale + load(mask, b * seq + j + 2);
      z[g][3] = v.w * scale + load(mask, b * seq + j + 3);
      m = fmaxf(m, fmaxf(fmaxf(z[g][0], z[g][1]), fmaxf(z[g][2], z[g][3])));
    }
  }
  m = warp_max(m);
  float sum = 0.0f;
#pragma unroll
  for (int g = 0; g < Groups; ++g) {
    if (4 * lane + 128 * g < seq) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        z[g][c] = math::exp(z[g][c] - m);  // ctdl's exp, the CPU's own (math.hpp)
        sum += z[g][c];
      }
    }
  }
  const float inv = 1.0f / warp_sum(sum);
#pragma unroll
  for (int g = 0; g < Groups; ++g) {
    const std::int64_t j = 4 * lane + 128 * g;
    if (j < seq) {
      const std::int64_t e = r * seq + j;  // a multiple of 4: one Philox block
      std::array<float, 4> u{1.0f, 1.0f, 1.0f, 1.0f};
      if (p > 0.0f) u = stream.uniform4(static_cast<std::uint64_t>(e) / 4);
      float prob[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        prob[c] = z[g][c] * inv;
        store(dropped, e + c, p > 0.0f ? (u[c] >= p ? prob[c] * keep_scale : 0.0f) : prob[c]);
      }
      *reinterpret_cast<float4*>(row + j) = make_float4(prob[0], prob[1], prob[2], prob[3]);
    }
  }
}

/// The backward of attention_softmax_warp4_kernel.
template <int Groups, class G>
__global__ __launch_bounds__(32 * kRowsPerWarpBlock) void attention_softmax_backward_warp4_kernel(
    const float* probs, const float* dprobs, G* dscores, std::int64_t rows, std::int64_t seq, float scale, float p,
    float keep_scale, RandomStream stream) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  float pk[Groups][4], dp[Groups][4];
  float dot = 0.0f;
#pragma unroll
  for (int g = 0; g < Groups; ++g) {
    const std::int64_t j = 4 * lane + 128 * g;
    if (j < seq) {
      const std::int64_t e = r * seq + j;
      const float4 pv = *reinterpret_cast<const float4*>(probs + e);
      const float4 dv = *reinterpret_cast<const float4*>(dprobs + e);
      pk[g][0] = pv.x, pk[g][1] = pv.y, pk[g][2] = pv.z, pk[g][3] = pv.w;
      dp[g][0] = dv.x, dp[g][1] = dv.y, dp[g][2] = dv.z, dp[g][3] = dv.w;
      if (p > 0.0f) {
        const std::array<float, 4> u = stream.uniform4(static_cast<std::uint64_t>(e) / 4);
#pragma unroll
        for (int c = 0; c < 4; ++c) dp[g][c] = u[c] >= p ? dp[g][c] * keep_scale : 0.0f;
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) dot += dp[g][c] * pk[g][c];
    }
  }
  dot = warp_sum(dot);
#pragma unroll
  for (int g = 0; g < Groups; ++g) {
    const std::int64_t j = 4 * lane + 128 * g;
    if (j < seq) {
#pragma unroll
      for (int c = 0; c < 4; ++c) store(dscores, r * seq + j + c, pk[g][c] * (dp[g][c] - dot) * scale);
    }
  }
}

/// Groups of four per lane for a row of `seq` scores in the float4 warp kernels; 0: seq
/// is not a multiple of 4, or too long.
inline int groups_per_lane(std::int64_t seq) {
  if (seq % 4 != 0) return 0;
  return seq <= 128 ? 1 : seq <= 256 ? 2 : seq <= 512 ? 4 : seq <= 1024 ? 8 : 0;
}

inline unsigned warp_blocks(std::int64_t rows) {
  return static_cast<unsigned>((rows + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock);
}

/// Runs the row kernel for rows of `seq` scores: warp4.template operator()<Groups>() (the
/// float4 warp kernels) when seq is a multiple of 4 up to 1,024 (BERT's lengths), warp()
/// (the scalar warp kernels, 4 scores a lane) for other rows up to 128, block() beyond.
/// One choice for forward and backward, so both read a row the same way.
template <class Warp4, class Warp, class Block>
void dispatch_rows(std::int64_t seq, Warp4&& warp4, Warp&& warp, Block&& block) {
  switch (groups_per_lane(seq)) {
    case 1: warp4.template operator()<1>(); return;
    case 2: warp4.template operator()<2>(); return;
    case 4: warp4.template operator()<4>(); return;
    case 8: warp4.template operator()<8>(); return;
    default: seq <= 128 ? warp() : block();
  }
}

/// The forward row kernel for rows of `seq` (dispatch_rows).
template <class G, class T>
void launch_softmax(float* probs, G* dropped, const T* mask, const AttentionShape& s, float scale, float p,
                    float keep, RandomStream random, cudaStream_t stream) {
  const std::int64_t rows = s.batch * s.heads * s.seq, hs = s.heads * s.seq, n = s.seq;
  const unsigned grid = warp_blocks(rows), threads = 32 * kRowsPerWarpBlock;
  dispatch_rows(
      n,
      [&]<int Groups>() {
        attention_softmax_warp4_kernel<Groups><<<grid, threads, 0, stream>>>(probs, dropped, mask, rows, hs, n, scale,
                                                                             p, keep, random);
      },
      [&] {
        attention_softmax_warp_kernel<4><<<grid, threads, 0, stream>>>(probs, dropped, mask, rows, hs, n, scale, p,
                                                                       keep, random);
      },
      [&] {
        attention_softmax_kernel<<<static_cast<unsigned>(rows), kAttentionRowThreads, 0, stream>>>(
            probs, dropped, mask, hs, n, scale, p, keep, random);
      });
  check_launch("cuda::attention (softmax, mask and dropout)");
}

/// The backward row kernel, chosen as for forward. dprobs may be overwritten.
template <class G>
void launch_softmax_backward(const float* probs, float* dprobs, G* dscores, const AttentionShape& s, float scale,
                             float p, float keep, RandomStream random, cudaStream_t stream) {
  const std::int64_t rows = s.batch * s.heads * s.seq, n = s.seq;
  const unsigned grid = warp_blocks(rows), threads = 32 * kRowsPerWarpBlock;
  dispatch_rows(
      n,
      [&]<int Groups>() {
        attention_softmax_backward_warp4_kernel<Groups><<<grid, threads, 0, stream>>>(probs, dprobs, dscores, rows, n,
                                                                                      scale, p, keep, random);
      },
      [&] {
        attention_softmax_backward_warp_kernel<4><<<grid, threads, 0, stream>>>(probs, dprobs, dscores, rows, n, scale,
                                                                                p, keep, random);
      },
      [&] {
        attention_softmax_backward_kernel<<<static_cast<unsigned>(rows), kAttentionRowThreads, 0, stream>>>(
            probs, dprobs, dscores, n, scale, p, keep, random);
      });
  check_launch("cuda::attention_backward (softmax and dropout gradient)");
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
  if (reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0) {
    throw Error(std::string(op) + ": the workspace is not 16-byte aligned (the scores are read as float4)");
  }
}

/// The scale factors as the CPU computes them, in float: 1/sqrt(D) and 1/(1 - p).
inline float score_scale(index_t head_dim) { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }
inline float keep_scale(float p) { return p > 0.0f ? 1.0f / (1.0f - p) : 1.0f; }

/// The product dims of one head-major batched product over all B * heads pairs: op(A) is
/// m x k, op(B) k x n, each pair's matrices packed (S x S scores, S x D heads).
inline GemmDims pair_dims(const AttentionShape& s, index_t m, index_t n, index_t k, bool trans_a, bool trans_b) {
  return GemmDims{s.batch * s.heads, m, n, k, trans_a, trans_b, m * k, k * n, m * n, trans_a ? m : k,
                  trans_b ? k : n, n};
}

/// P and Pd of every (b, a) into the workspace: one batched Q K^T over all pairs from the
/// head-major q and k, then the row kernel over all rows.
template <class G, class T>
void attention_probs(const G* qh, const G* kh, const T* mask, const AttentionShape& s, const AttentionParams& params,
                     float* probs, G* dropped, cudaStream_t stream) {
  const index_t d = s.hidden / s.heads;
  // scores[b, a] (S x S, float) = Q (S x D) K^T, pair t = b * heads + a at t * S * S:
  // [B, heads, S, S], the layout the Philox indexing names.
  gemm<G, float>(qh, kh, probs, pair_dims(s, s.seq, s.seq, d, false, true), GemmOptions{.tf32 = params.tf32}, nullptr,
                 stream);
  launch_softmax(probs, dropped, mask, s, score_scale(d), params.dropout, keep_scale(params.dropout), params.stream,
                 stream);
}

template <class To>
To* part(void* workspace, std::size_t offset) {
  return reinterpret_cast<To*>(static_cast<char*>(workspace) + offset);
}

}  // namespace attention_detail

template <class G>
std::size_t attention_forward_workspace(index_t batch, index_t seq, index_t heads, index_t hidden) {
  return attention_detail::forward_layout<G>(batch, seq, heads, hidden).bytes;
}

template <class G>
std::size_t attention_backward_workspace(index_t batch, index_t seq, index_t heads, index_t hidden) {
  return attention_detail::backward_layout<G>(batch, seq, heads, hidden).bytes;
}

template <class G, class T>
void attention_forward(const G* q, const G* k, const G* v, const T* mask, T* out, const AttentionShape& s,
                       const AttentionParams& params, void* workspace, cudaStream_t stream) {
  using namespace attention_detail;
  check_attention(s, params, workspace, "cuda::attention_forward");
  if (s.batch == 0 || s.seq == 0 || s.hidden == 0) return;
  const index_t d = s.hidden / s.heads;
  const ForwardLayout l = forward_layout<G>(s.batch, s.seq, s.heads, s.hidden);
  G* const qh = part<G>(workspace, l.heads[0]);
  G* const kh = part<G>(workspace, l.heads[1]);
  G* const vh = part<G>(workspace, l.heads[2]);
  HeadMoves<G, G> in;
  add_move(in, q, qh);
  add_move(in, k, kh);
  add_move(in, v, vh);
  to_heads(in, s, "cuda::attention_forward (q, k, v to head-major)", stream);
  G* const dropped = part<G>(workspace, l.dropped);
  attention_probs(qh, kh, mask, s, params, part<float>(workspace, l.probs), dropped, stream);
  // context[b, a] (S x D, float) = Pd[b, a] (S x S) V (S x D)
  float* const context = part<float>(workspace, l.context);
  gemm<G, float>(dropped, vh, context, pair_dims(s, s.seq, d, s.seq, false, false), GemmOptions{.tf32 = params.tf32},
                 nullptr, stream);
  HeadMoves<float, T> back;
  add_move(back, static_cast<const float*>(context), out);
  from_heads(back, s, /*accumulate=*/false, "cuda::attention_forward (context to [B*S, H])", stream);
}

template <class G, class T>
void attention_backward(const G* q, const G* k, const G* v, const T* mask, const G* dout, T* dq, T* dk, T* dv,
                        const AttentionShape& s, const AttentionParams& params, void* workspace, cudaStream_t stream) {
  using namespace attention_detail;
  check_attention(s, params, workspace, "cuda::attention_backward");
  if (s.batch == 0 || s.seq == 0 || s.hidden == 0 || (!dq && !dk && !dv)) return;
  const index_t d = s.hidden / s.heads;
  const BackwardLayout l = backward_layout<G>(s.batch, s.seq, s.heads, s.hidden);
  G* const qh = part<G>(workspace, l.heads[0]);
  G* const kh = part<G>(workspace, l.heads[1]);
  G* const vh = part<G>(workspace, l.heads[2]);
  G* const dch = part<G>(workspace, l.heads[3]);
  HeadMoves<G, G> in;
  add_move(in, q, qh);
  add_move(in, k, kh);
  add_move(in, v, vh);
  add_move(in, dout, dch);
  to_heads(in, s, "cuda::attention_backward (q, k, v, dC to head-major)", stream);
  float* const probs = part<float>(workspace, l.probs);
  float* const dprobs = part<float>(workspace, l.dprobs);
  G* const rounded = part<G>(workspace, l.rounded);  // Pd for dV, then (no longer needed) dZ for dQ and dK
  attention_probs(qh, kh, mask, s, params, probs, rounded, stream);
  const GemmOptions overwrite{.tf32 = params.tf32};
  float* const dvh = part<float>(workspace, l.dv);
  // dV (S x D) = Pd^T (Pd stored S x S) dC (S x D)
  if (dv) gemm<G, float>(rounded, dch, dvh, pair_dims(s, s.seq, d, s.seq, true, false), overwrite, nullptr, stream);
  // dPd (S x S, float) = dC (S x D) V^T
  gemm<G, float>(dch, vh, dprobs, pair_dims(s, s.seq, s.seq, d, false, true), overwrite, nullptr, stream);
  launch_softmax_backward(probs, dprobs, rounded, s, score_scale(d), params.dropout, keep_scale(params.dropout),
                          params.stream, stream);
  // P and dPd are spent: dQ and dK may take their place (backward_layout).
  float* const dqh = part<float>(workspace, l.dq);
  float* const dkh = part<float>(workspace, l.dk);
  // dQ (S x D) = dZ (S x S) K (S x D)
  if (dq) gemm<G, float>(rounded, kh, dqh, pair_dims(s, s.seq, d, s.seq, false, false), overwrite, nullptr, stream);
  // dK (S x D) = dZ^T (dZ stored S x S) Q (S x D)
  if (dk) gemm<G, float>(rounded, qh, dkh, pair_dims(s, s.seq, d, s.seq, true, false), overwrite, nullptr, stream);
  HeadMoves<float, T> back;
  add_move(back, static_cast<const float*>(dqh), dq);
  add_move(back, static_cast<const float*>(dkh), dk);
  add_move(back, static_cast<const float*>(dvh), dv);
  from_heads(back, s, /*accumulate=*/true, "cuda::attention_backward (gradients added in [B*S, H])", stream);
}

}  // namespace ctdl::cuda

// Attention on the GPU (kernels/cuda/attention.cuh) against ops::attention on the CPU:
// the output and dq, dk, dv (accumulated into gradients that already hold values), for
// fp32 and Bf16Mixed (float tensors, bf16 products), attention dropout 0 and 0.1 on the
// same RandomStream, with a mask that removes trailing keys of each example (-10000, as
// BERT's). Without a device: exit 77 (Skipped).
//
// Tolerances (relative; Report::close also bounds every element by tol * max(|want|, rms)).
// Measured on an H100 (2026-11-27) in brackets, at 4 x 128 x 768.
//   fp32  1e-5: the same float arithmetic on both devices; only summation orders differ.
//   bf16  2e-2 [rel 3e-5 output, 5e-6 gradients]: both devices round the same q, k, v and
//         dC to bf16, but P and dZ are rounded to bf16 after float sums in another order
//         (the GPU's tensor cores): now and then an element lands on the other side of a
//         bf16 rounding boundary and differs by one bf16 ulp (2^-8 relative). In the
//         example with 26 unmasked keys P is about 0.04, so one such element moves 64
//         outputs by up to 2^-8 * 0.04 = 1.5e-4 against an output rms near 0.08; two in one
//         row gave the measured worst element, 2.4e-4 (3e-3 of the rms). The norm error,
//         printed with every check, stays near 1e-5.
// Dropout masks are the same when the outputs agree at these tolerances: a dropped
// probability that one device kept would move its output element by P_ij V_j / (1 - p),
// orders of magnitude beyond them.

#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cuda/attention.cuh>
#include <ctdl/ops/attention.hpp>

#include "gpu/gpu_test.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

using namespace ctdl;
using gpu_test::Buffer;
using gpu_test::random_values;
using gpu_test::guarded;
using gpu_test::Report;

/// ops::attention<G> (T = float) on the CPU and cuda::attention_forward/backward<G, float>
/// on the same inputs.
template <class G>
void check_attention(Report& report, index_t batch, index_t seq, index_t hidden, index_t heads, float dropout,
                     double tol) {
  using S = Shape<dyn, dyn>;
  char label[200];
  std::snprintf(label, sizeof label, "attention<%s> batch %td, seq %td, hidden %td, heads %td, dropout %.1f",
                std::is_same_v<G, float> ? "float" : "bf16", batch, seq, hidden, heads, dropout);
  const std::string what = label;
  guarded(report, what, [&] {
    const index_t rows = batch * seq;
    const auto n = static_cast<std::size_t>(rows * hidden);
    const unsigned seed = static_cast<unsigned>(batch * 1000 + seq * 10 + hidden) + (dropout > 0 ? 7u : 0u);
    const auto q = random_values(n, seed), k = random_values(n, seed + 1), v = random_values(n, seed + 2);
    const auto dc = random_values(n, seed + 3);
    // The gradients already held (added to, not overwritten) are small beside what
    // attention adds (rms 0.02-0.04 in dq here), so that the tolerance, relative to the
    // sum, still bounds the added part.
    const auto dq0 = random_values(n, seed + 4, -0.01f, 0.01f), dk0 = random_values(n, seed + 5, -0.01f, 0.01f),
               dv0 = random_values(n, seed + 6, -0.01f, 0.01f);
    // Example b attends to its first max(1, S - (b + 1) S / 5) keys; the rest are padding.
    std::vector<float> mask(static_cast<std::size_t>(batch * seq));
    for (index_t b = 0; b < batch; ++b) {
      const index_t valid = std::max<index_t>(1, seq - (b + 1) * seq / 5);
      for (index_t j = 0; j < seq; ++j) mask[static_cast<std::size_t>(b * seq + j)] = j < valid ? 0.0f : -10000.0f;
    }
    const ops::AttentionOptions opt{.heads = heads, .dropout = dropout,
                                    .stream = {.seed = 1234, .rank = 0, .tensor_id = 17, .step = 3}};

    // CPU.
    auto tensor = [](const std::vector<float>& values, index_t r, index_t c) {
      Tensor<float, S> t({r, c});
      std::copy(values.begin(), values.end(), t.data());
      return t;
    };
    Var<float, S> qv(tensor(q, rows, hidden)), kv(tensor(k, rows, hidden)), vv(tensor(v, rows, hidden));
    Tape tape;
    auto out = ops::attention<G>(tape, qv, kv, vv, tensor(mask, batch, seq), opt);
    const std::vector<float> out_cpu(out.value().data(), out.value().data() + out.value().size());
    tape.backward(out, tensor(dc, rows, hidden));
    auto plus = [](const std::vector<float>& base, const auto& grad) {
      std::vector<float> r(base);
      for (std::size_t i = 0; i < r.size(); ++i) r[i] += grad.data()[i];
      return r;
    };
    const auto dq_cpu = plus(dq0, qv.grad()), dk_cpu = plus(dk0, kv.grad()), dv_cpu = plus(dv0, vv.grad());

    // GPU: q, k, v and dC rounded to G on the device, as the products take them.
    Buffer<float> qf(q), kf(k), vf(v), dcf(dc), maskd(mask), outd(n), dqd(dq0), dkd(dk0), dvd(dv0);
    Buffer<G> qg(n), kg(n), vg(n), dcg(n);
    const auto count = static_cast<std::int64_t>(n);
    cuda::copy_converted(qf.data(), qg.data(), count);
    cuda::copy_converted(kf.data(), kg.data(), count);
    cuda::copy_converted(vf.data(), vg.data(), count);
    cuda::copy_converted(dcf.data(), dcg.data(), count);
    const cuda::AttentionShape shape{batch, seq, hidden, heads};
    const cuda::AttentionParams params{.dropout = dropout, .stream = opt.stream};
    Buffer<char> workspace(std::max(cuda::attention_forward_workspace<G>(batch, seq, heads, hidden),
                                    cuda::attention_backward_workspace<G>(batch, seq, heads, hidden)));
    workspace.poison();  // nothing may read the workspace before writing it
    outd.poison();
    cuda::attention_forward<G, float>(qg.data(), kg.data(), vg.data(), maskd.data(), outd.data(), shape, params,
                                      workspace.data());
    report.close(what + ": output", outd.download(), out_cpu, tol);
    workspace.poison();
    cuda::attention_backward<G, float>(qg.data(), kg.data(), vg.data(), maskd.data(), dcg.data(), dqd.data(),
                                       dkd.data(), dvd.data(), shape, params, workspace.data());
    report.close(what + ": dq (accumulated)", dqd.download(), dq_cpu, tol);
    report.close(what + ": dk (accumulated)", dkd.download(), dk_cpu, tol);
    report.close(what + ": dv (accumulated)", dvd.download(), dv_cpu, tol);
  });
}

/// The host side of the head-major products, checked with or without a device: the index
/// map sends pair t's S x D matrix exactly onto head a's columns of example b's rows, and
/// the workspace's parts overlap only where one is spent before the other is written.
void check_host_logic(Report& report, index_t batch, index_t seq, index_t hidden, index_t heads) {
  using namespace cuda::attention_detail;
  const std::string what = "host logic, batch " + std::to_string(batch) + ", seq " + std::to_string(seq) +
                           ", hidden " + std::to_string(hidden) + ", heads " + std::to_string(heads);
  const index_t d = hidden / heads, n = batch * seq * hidden;
  std::vector<int> hits(static_cast<std::size_t>(n), 0);
  bool formula = true;
  for (index_t b = 0; b < batch; ++b)
    for (index_t a = 0; a < heads; ++a)
      for (index_t i = 0; i < seq; ++i)
        for (index_t c = 0; c < d; ++c) {
          const auto t = static_cast<unsigned>(b * heads + a), e = static_cast<unsigned>(i * d + c);
          const HeadIndex at = HeadIndex::of(t, e, static_cast<unsigned>(seq), static_cast<unsigned>(heads),
                                             static_cast<unsigned>(d));
          formula = formula && at.head_major == static_cast<std::int64_t>(t) * seq * d + e &&
                    at.token_major == (b * seq + i) * hidden + a * d + c;
          if (at.token_major >= 0 && at.token_major < n) ++hits[static_cast<std::size_t>(at.token_major)];
        }
  report.expect(what + ": head index map", formula && std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }),
                "every element of [B*S, H] reached once, from its own (b, a, i, c)");

  struct Part {
    const char* name;
    std::size_t at, bytes;
  };
  const std::size_t scores = static_cast<std::size_t>(batch * heads * seq * seq), tokens = static_cast<std::size_t>(n);
  auto disjoint = [](const Part& x, const Part& y) { return x.at + x.bytes <= y.at || y.at + y.bytes <= x.at; };
  auto check_parts = [&](const std::string& label, const std::vector<Part>& parts, std::size_t total,
                         const std::vector<std::pair<std::string, std::string>>& may_share) {
    std::string problem;
    for (std::size_t x = 0; x < parts.size(); ++x) {
      if (parts[x].at + parts[x].bytes > total) problem += std::string(parts[x].name) + " past the end; ";
      for (std::size_t y = x + 1; y < parts.size(); ++y) {
        const bool allowed = std::find(may_share.begin(), may_share.end(),
                                       std::pair<std::string, std::string>(parts[x].name, parts[y].name)) !=
                             may_share.end();
        if (!allowed && !disjoint(parts[x], parts[y]))
          problem += std::string(parts[x].name) + " overlaps " + parts[y].name + "; ";
      }
    }
    report.expect(what + ": " + label, problem.empty(), problem.empty() ? std::to_string(total) + " bytes" : problem);
  };
  const auto f = forward_layout<bf16>(batch, seq, heads, hidden);
  check_parts("forward workspace",
              {{"P", f.probs, scores * 4}, {"Pd", f.dropped, scores * 2}, {"qh", f.heads[0], tokens * 2},
               {"kh", f.heads[1], tokens * 2}, {"vh", f.heads[2], tokens * 2}, {"context", f.context, tokens * 4}},
              cuda::attention_forward_workspace<bf16>(batch, seq, heads, hidden), {{"P", "context"}});
  const auto g = backward_layout<float>(batch, seq, heads, hidden);
  check_parts("backward workspace",
              {{"P", g.probs, scores * 4}, {"dPd", g.dprobs, scores * 4}, {"dZ", g.rounded, scores * 4},
               {"qh", g.heads[0], tokens * 4}, {"kh", g.heads[1], tokens * 4}, {"vh", g.heads[2], tokens * 4},
               {"dch", g.heads[3], tokens * 4}, {"dV", g.dv, tokens * 4}, {"dQ", g.dq, tokens * 4},
               {"dK", g.dk, tokens * 4}},
              cuda::attention_backward_workspace<float>(batch, seq, heads, hidden), {{"P", "dQ"}, {"dPd", "dK"}});
}

}  // namespace

int main() {
  {  // host logic first: it needs no device, so CI checks it too
    Report host("gpu/attention (host logic)");
    check_host_logic(host, 4, 128, 768, 12);
    check_host_logic(host, 3, 37, 10, 2);  // D = 5 <= S = 37: the gradients fit over P and dPd
    check_host_logic(host, 2, 3, 64, 2);   // D = 32 > S = 3: they do not, and get their own parts
    check_host_logic(host, 1, 1, 1, 1);
    if (host.finish() != 0) return 1;
  }
  gpu_test::require_device("gpu/attention");
  Report report("gpu/attention");
  for (float dropout : {0.0f, 0.1f}) {
    check_attention<float>(report, 4, 128, 768, 12, dropout, 1e-5);  // BERT-base's heads
    check_attention<float>(report, 3, 37, 10, 2, dropout, 1e-5);     // odd: D = 5, S = 37
    check_attention<float>(report, 2, 5, 8, 2, dropout, 1e-5);
    check_attention<float>(report, 2, 300, 64, 2, dropout, 1e-5);  // float4 warp kernels, 4 groups a lane
    check_attention<float>(report, 2, 200, 32, 2, dropout, 1e-5);  // float4 warp kernels, 2 groups a lane
    check_attention<float>(report, 1, 600, 32, 2, dropout, 1e-5);  // float4 warp kernels, 8 groups a lane
    check_attention<float>(report, 1, 257, 32, 1, dropout, 1e-5);  // 257 keys, not a multiple of 4: the block kernels
    check_attention<float>(report, 2, 257, 32, 2, dropout, 1e-5);  // ... their mask rows of later examples and heads
    check_attention<float>(report, 1, 1100, 32, 1, dropout, 1e-5); // rows past 1,024: the block kernels
    check_attention<float>(report, 1, 1, 1, 1, dropout, 1e-5);
    check_attention<bf16>(report, 4, 128, 768, 12, dropout, 2e-2);
    check_attention<bf16>(report, 3, 37, 10, 2, dropout, 2e-2);
    check_attention<bf16>(report, 2, 300, 64, 2, dropout, 2e-2);  // bf16 through the float4 and block kernels
    check_attention<bf16>(report, 2, 257, 32, 2, dropout, 2e-2);
    check_attention<bf16>(report, 1, 1, 1, 1, dropout, 2e-2);
  }
  // Errors name the op and the problem.
  guarded(report, "attention: heads that do not divide the width are an error", [&] {
    Buffer<float> x(12), mask(2);
    Buffer<char> workspace(4096);
    try {
      cuda::attention_forward<float, float>(x.data(), x.data(), x.data(), mask.data(), x.data(), {1, 2, 6, 4}, {},
                                            workspace.data());
      report.expect("attention: heads that do not divide the width are an error", false, "no exception");
    } catch (const Error& e) {
      report.expect("attention: heads that do not divide the width are an error",
                    std::string(e.what()).find("cuda::attention_forward") != std::string::npos, e.what());
    }
  });
  return report.finish();
}

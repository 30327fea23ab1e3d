// layer_norm, add_layer_norm, embedding_layer_norm, embedding and dropout on
// Var<T, S, Cuda> against the same ops on the CPU (ops_twin): the same random inputs on
// both devices, backward from the same random upstream gradient into gradients that
// already hold values (so += is checked), forward values and every gradient compared.
//
// Tolerances (Report::close, relative to the norm and per element):
//   float 1e-5 — the same float math; only the order of sums differs (and the atomicAdd
//     order of repeated ids in float table gradients).
//   bf16, LayerNorm ops 2e-2 — the kernels round where the CPU rounds, but a float sum
//     that differs in its last bit can round a stored intermediate to the neighbouring
//     value: two ulps at the bottom of a binade, 2 * 2^-7 (as tests/gpu/test_norm.cu).
//   bf16, dropout 1e-2 — one rounding of the same product (as tests/gpu/test_elem.cu).
//   bf16, embedding dtable 2e-2 — the 16-bit atomicAdd rounds each addition as the CPU
//     does, in another order: ids repeat at most twice here, and (g + a) + b against
//     (g + b) + a differs by at most two ulps.
// Exact where the math is a copy or one rounding of the same product: embedding and
// dropout forward (bit for bit), the elements add_layer_norm's dropout drops (dh left
// exactly as it was). Ids stay host tensors; a bad id gives the CPU's message on Cuda
// too, checked on the host before anything runs on the device — so that check also
// runs here without a device (empty tables), before the test exits 77.
#include <ctdl/ops/dropout.hpp>
#include <ctdl/ops/embedding.hpp>
#include <ctdl/ops/fused_layer_norm.hpp>
#include <ctdl/ops/layer_norm.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gpu/ops_twin.hpp"

namespace {

using namespace ctdl;
using gpu_test::ids_at_most_twice;
using gpu_test::random_ids;
using gpu_test::Report;
using Rows = Shape<dyn, dyn>;
using Vec = Shape<dyn>;

template <class T>
std::string type_name() {
  return std::is_same_v<T, float> ? "float" : "bf16";
}
template <class I>
std::string ids_name() {
  return std::is_same_v<I, std::int32_t> ? "int32 ids" : "int64 ids";
}

/// See the header comment.
template <class T>
double norm_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 2e-2;
}
template <class T>
double elem_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

template <class I, class S = Rows>
Tensor<I, S> ids_tensor(const Extents<S>& extents, const std::vector<I>& ids) {
  auto t = Tensor<I, S>::uninitialized(extents);
  std::copy(ids.begin(), ids.end(), t.data());
  return t;
}

template <class T, class S>
void check_layer_norm(Report& report, const Extents<S>& extents, unsigned seed) {
  const index_t w = extents[S::rank - 1];
  const std::string what = "layer_norm " + type_name<T>() + " " + describe<S>(extents);
  auto x = ops_twin::make<T, S>(extents, seed, true, -2.0f, 2.0f);
  auto gamma = ops_twin::make<T, Vec>({w}, seed + 1, true, 0.5f, 1.5f);
  auto beta = ops_twin::make<T, Vec>({w}, seed + 2);
  ops_twin::prefill_grad(x, seed + 3);
  ops_twin::prefill_grad(gamma, seed + 4);
  ops_twin::prefill_grad(beta, seed + 5);
  Tape tc, tg;
  auto yc = ops::layer_norm(tc, x.cpu, gamma.cpu, beta.cpu, 1e-12);
  auto yg = ops::layer_norm(tg, x.gpu, gamma.gpu, beta.gpu, 1e-12);
  ops_twin::compare(report, what + " forward", yc, yg, norm_tol<T>());
  const auto dx_before = ops_twin::values(x.cpu.grad());
  ops_twin::backward(tc, tg, yc, yg, seed + 6);
  report.close(what + " dx", ops_twin::values(x.gpu.grad()),
               gpu_test::through_ds(w, ops_twin::values(x.cpu.grad()), dx_before), norm_tol<T>());
  ops_twin::compare_grad(report, what + " dgamma", gamma, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dbeta", beta, norm_tol<T>());
}

template <class T>
void check_add_layer_norm(Report& report, index_t rows, index_t w, float p, unsigned seed) {
  const std::string what = "add_layer_norm " + type_name<T>() + " " + std::to_string(rows) + "x" +
                           std::to_string(w) + " p=" + std::to_string(p).substr(0, 3);
  auto h = ops_twin::make<T, Rows>({rows, w}, seed);
  auto bias = ops_twin::make<T, Vec>({w}, seed + 1);
  auto residual = ops_twin::make<T, Rows>({rows, w}, seed + 2);
  auto gamma = ops_twin::make<T, Vec>({w}, seed + 3, true, 0.5f, 1.5f);
  auto beta = ops_twin::make<T, Vec>({w}, seed + 4);
  ops_twin::prefill_grad(h, seed + 5);
  ops_twin::prefill_grad(bias, seed + 6);
  ops_twin::prefill_grad(residual, seed + 7);
  ops_twin::prefill_grad(gamma, seed + 8);
  ops_twin::prefill_grad(beta, seed + 9);
  const ops::AddLayerNormOptions opt{
      .dropout = p, .stream = RandomStream{.seed = 77 + seed, .rank = 1, .tensor_id = 9, .step = 3}, .eps = 1e-12};
  Tape tc, tg;
  auto yc = ops::add_layer_norm(tc, h.cpu, bias.cpu, residual.cpu, gamma.cpu, beta.cpu, opt);
  auto yg = ops::add_layer_norm(tg, h.gpu, bias.gpu, residual.gpu, gamma.gpu, beta.gpu, opt);
  ops_twin::compare(report, what + " forward", yc, yg, norm_tol<T>());
  ops_twin::backward(tc, tg, yc, yg, seed + 10);
  ops_twin::compare_grad(report, what + " dh", h, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dbias", bias, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dresidual", residual, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dgamma", gamma, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dbeta", beta, norm_tol<T>());
  if (p > 0) {
    // The dropped elements of dh are left exactly as prefill_grad set them, on both
    // devices: the same mask (ops::dropout's, element r * w + j).
    const auto start = ops_twin::random_tensor<T, Rows>({rows, w}, seed + 5, -0.1f, 0.1f);
    const auto dh_gpu = ops_twin::values(h.gpu.grad()), dh_cpu = ops_twin::values(h.cpu.grad());
    const ops::DropoutMask mask{opt.stream, p};
    std::vector<T> got, got_cpu, want;
    for (index_t i = 0; i < rows * w; ++i) {
      if (mask.keep(static_cast<std::uint64_t>(i))) continue;
      got.push_back(dh_gpu[static_cast<std::size_t>(i)]);
      got_cpu.push_back(dh_cpu[static_cast<std::size_t>(i)]);
      want.push_back(start.data()[i]);
    }
    report.expect(what + " drops some elements", !want.empty(), std::to_string(want.size()) + " dropped");
    report.equal(what + " dh untouched where dropped (device)", got, want);
    report.equal(what + " dh untouched where dropped (CPU)", got_cpu, want);
  }
}

/// BERT's embeddings: word, position and token-type tables, ids of shape [batch, seq]
/// with repeats in every lookup.
template <class T, class I>
void check_embedding_layer_norm(Report& report, index_t batch, index_t seq, index_t w, unsigned seed) {
  const index_t rows = batch * seq, vocab = 50, types = 2;
  const std::string what = "embedding_layer_norm " + type_name<T>() + " " + ids_name<I>() + " " +
                           std::to_string(rows) + "x" + std::to_string(w);
  auto word = ops_twin::make<T, Rows>({vocab, w}, seed);
  auto position = ops_twin::make<T, Rows>({seq, w}, seed + 1);
  auto type = ops_twin::make<T, Rows>({types, w}, seed + 2);
  auto gamma = ops_twin::make<T, Vec>({w}, seed + 3, true, 0.5f, 1.5f);
  auto beta = ops_twin::make<T, Vec>({w}, seed + 4);
  ops_twin::prefill_grad(word, seed + 5);
  ops_twin::prefill_grad(position, seed + 6);
  ops_twin::prefill_grad(type, seed + 7);
  ops_twin::prefill_grad(gamma, seed + 8);
  ops_twin::prefill_grad(beta, seed + 9);
  // Word ids from a third of the vocabulary (many repeats); positions 0 .. seq-1 in every
  // example; token types 0 then 1.
  const auto word_ids = ids_tensor<I>({batch, seq}, random_ids<I>(rows, vocab / 3, seed + 10));
  std::vector<I> pos(static_cast<std::size_t>(rows)), tt(static_cast<std::size_t>(rows));
  for (index_t r = 0; r < rows; ++r) {
    pos[static_cast<std::size_t>(r)] = static_cast<I>(r % seq);
    tt[static_cast<std::size_t>(r)] = static_cast<I>(r % seq < seq / 2 ? 0 : 1);
  }
  const auto pos_ids = ids_tensor<I>({batch, seq}, pos), type_ids = ids_tensor<I>({batch, seq}, tt);
  const std::array<const Tensor<I, Rows>*, 3> ids{&word_ids, &pos_ids, &type_ids};
  Tape tc, tg;
  auto yc =
      ops::embedding_layer_norm(tc, std::array{word.cpu, position.cpu, type.cpu}, ids, gamma.cpu, beta.cpu, 1e-12);
  auto yg =
      ops::embedding_layer_norm(tg, std::array{word.gpu, position.gpu, type.gpu}, ids, gamma.gpu, beta.gpu, 1e-12);
  ops_twin::compare(report, what + " forward", yc, yg, norm_tol<T>());
  ops_twin::backward(tc, tg, yc, yg, seed + 11);
  ops_twin::compare_grad(report, what + " dword (repeated ids)", word, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dposition", position, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dtoken_type", type, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dgamma", gamma, norm_tol<T>());
  ops_twin::compare_grad(report, what + " dbeta", beta, norm_tol<T>());
}

/// float: ids from a few rows (many repeats); bf16: every id at most twice (see the
/// header comment).
template <class T, class I>
void check_embedding(Report& report, index_t vocab, index_t h, index_t n, unsigned seed) {
  constexpr bool wide = std::is_same_v<T, float>;
  const std::string what = "embedding " + type_name<T>() + " " + ids_name<I>() + " table " + std::to_string(vocab) +
                           "x" + std::to_string(h) + ", " + std::to_string(n) + " ids";
  auto table = ops_twin::make<T, Rows>({vocab, h}, seed);
  ops_twin::prefill_grad(table, seed + 1);
  const auto ids = wide ? random_ids<I>(n, std::max<index_t>(1, std::min(vocab, n / 3 + 1)), seed + 2)
                        : ids_at_most_twice<I>(n, vocab, seed + 2);
  const auto ids_host = ids_tensor<I, Vec>({n}, ids);
  Tape tc, tg;
  auto yc = ops::embedding(tc, table.cpu, ids_host);
  auto yg = ops::embedding(tg, table.gpu, ids_host);
  if (yc.extents() != yg.extents()) {
    report.expect(what + " forward", false, "the extents differ");
    return;
  }
  report.equal(what + " forward (a gather, bit for bit)", ops_twin::values(yg.value()), ops_twin::values(yc.value()));
  ops_twin::backward(tc, tg, yc, yg, seed + 3);
  ops_twin::compare_grad(report, what + " dtable (scatter-add, repeated ids)", table, wide ? 1e-5 : 2e-2);
}

template <class T, class S>
void check_dropout(Report& report, const Extents<S>& extents, float p, unsigned seed) {
  const std::string what =
      "dropout " + type_name<T>() + " " + describe<S>(extents) + " p=" + std::to_string(p).substr(0, 3);
  const RandomStream stream{.seed = 1234 + seed, .rank = 1, .tensor_id = 17, .step = 5};
  auto x = ops_twin::make<T, S>(extents, seed);
  ops_twin::prefill_grad(x, seed + 1);
  Tape tc, tg;
  auto yc = ops::dropout(tc, x.cpu, p, stream);
  auto yg = ops::dropout(tg, x.gpu, p, stream);
  if (yc.extents() != yg.extents()) {
    report.expect(what + " forward", false, "the extents differ");
    return;
  }
  // The same mask: the outputs are one rounding of the same product, bit for bit.
  report.equal(what + " forward (the same mask, bit for bit)", ops_twin::values(yg.value()),
               ops_twin::values(yc.value()));
  ops_twin::backward(tc, tg, yc, yg, seed + 2);
  ops_twin::compare_grad(report, what + " dx", x, elem_tol<T>());
}

void check_dropout_identity(Report& report) {
  auto x = ops_twin::make<float, Rows>({3, 5}, 1);
  Tape tg;
  const auto y = ops::dropout(tg, x.gpu, 0.0f, RandomStream{});
  report.expect("dropout p=0 on Cuda is the identity (the same Var, nothing recorded)",
                y.node_ptr() == x.gpu.node_ptr());
}

/// Runs fn, returning the ctdl::Error's message (or a note that it did not throw).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(did not throw)";
}

/// A bad id: the Cuda op throws the CPU op's message, from the host check that runs
/// before anything reaches the device. Width 0 (on_device false): the tables are empty
/// and allocate nothing, so the check runs without a device.
template <class I>
void check_bad_ids(Report& report, bool on_device) {
  const index_t vocab = 5, h = on_device ? 3 : 0;
  const std::string what = "bad ids, " + ids_name<I>() + (on_device ? "" : ", empty rows (no device needed)");
  const auto ids = ids_tensor<I, Vec>({7}, {1, 4, 0, 7, 2, -1, 9});  // first bad: 7 at position 3
  auto cpu_table = Var<float, Rows>(Tensor<float, Rows>({vocab, h}));
  auto gpu_table = Var<float, Rows, Cuda>(Tensor<float, Rows, Cuda>::uninitialized({vocab, h}));
  {
    const auto cpu = error_of([&] {
      Tape tape;
      ops::embedding(tape, cpu_table, ids);
    });
    const auto gpu = error_of([&] {
      Tape tape;
      ops::embedding(tape, gpu_table, ids);
    });
    report.expect(what + ": embedding's message", cpu == gpu && cpu != "(did not throw)",
                  "Cuda: \"" + gpu + "\", CPU: \"" + cpu + "\"");
  }
  {
    // Lookup 1 holds the bad id (lookup 0 is fine): the message names the lookup.
    const auto good = ids_tensor<I, Vec>({7}, {0, 1, 2, 3, 4, 0, 1});
    const std::array<const Tensor<I, Vec>*, 2> both{&good, &ids};
    auto cpu_gamma = Var<float, Vec>(Tensor<float, Vec>::full({h}, 1.0f));
    auto cpu_beta = Var<float, Vec>(Tensor<float, Vec>({h}));
    auto gpu_gamma = Var<float, Vec, Cuda>(Tensor<float, Vec, Cuda>::uninitialized({h}));
    auto gpu_beta = Var<float, Vec, Cuda>(Tensor<float, Vec, Cuda>::uninitialized({h}));
    const auto cpu = error_of([&] {
      Tape tape;
      ops::embedding_layer_norm(tape, std::array{cpu_table, cpu_table}, both, cpu_gamma, cpu_beta, 1e-12);
    });
    const auto gpu = error_of([&] {
      Tape tape;
      ops::embedding_layer_norm(tape, std::array{gpu_table, gpu_table}, both, gpu_gamma, gpu_beta, 1e-12);
    });
    report.expect(what + ": embedding_layer_norm's message", cpu == gpu && cpu != "(did not throw)",
                  "Cuda: \"" + gpu + "\", CPU: \"" + cpu + "\"");
  }
}

}  // namespace

int main() {
  // The bad-id messages come from the host check before any device work: they run (and
  // can fail the test) without a device.
  {
    Report host("gpu/ops_norm, host-side checks");
    gpu_test::guarded(host, "bad ids int32", [&] { check_bad_ids<std::int32_t>(host, false); });
    gpu_test::guarded(host, "bad ids int64", [&] { check_bad_ids<std::int64_t>(host, false); });
    if (host.finish() != 0) return 1;
  }
  gpu_test::require_device("gpu/ops_norm");
  Report report("gpu/ops_norm");
  using S3 = Shape<dyn, dyn, dyn>;
  unsigned seed = 300;
  gpu_test::guarded(report, "layer_norm float", [&] {
    check_layer_norm<float, Rows>(report, {37, 129}, seed += 10);
    check_layer_norm<float, S3>(report, {4, 32, 768}, seed += 10);
    check_layer_norm<float, Rows>(report, {1, 1}, seed += 10);
  });
  gpu_test::guarded(report, "layer_norm bf16", [&] {
    check_layer_norm<bf16, Rows>(report, {37, 129}, seed += 10);
    check_layer_norm<bf16, S3>(report, {4, 32, 768}, seed += 10);
  });
  for (const float p : {0.0f, 0.1f}) {
    gpu_test::guarded(report, "add_layer_norm float", [&] {
      check_add_layer_norm<float>(report, 128, 768, p, seed += 10);
      check_add_layer_norm<float>(report, 3, 37, p, seed += 10);
    });
    gpu_test::guarded(report, "add_layer_norm bf16", [&] {
      check_add_layer_norm<bf16>(report, 128, 768, p, seed += 10);
      check_add_layer_norm<bf16>(report, 3, 37, p, seed += 10);
    });
  }
  gpu_test::guarded(report, "embedding_layer_norm float", [&] {
    check_embedding_layer_norm<float, std::int32_t>(report, 4, 32, 768, seed += 10);
    check_embedding_layer_norm<float, std::int64_t>(report, 3, 7, 37, seed += 10);
  });
  gpu_test::guarded(report, "embedding_layer_norm bf16", [&] {
    check_embedding_layer_norm<bf16, std::int32_t>(report, 4, 32, 768, seed += 10);
    check_embedding_layer_norm<bf16, std::int64_t>(report, 3, 7, 37, seed += 10);
  });
  gpu_test::guarded(report, "embedding float", [&] {
    check_embedding<float, std::int32_t>(report, 1000, 768, 256, seed += 10);
    check_embedding<float, std::int64_t>(report, 3, 37, 7, seed += 10);
  });
  gpu_test::guarded(report, "embedding bf16", [&] {
    check_embedding<bf16, std::int32_t>(report, 1000, 768, 256, seed += 10);
    check_embedding<bf16, std::int64_t>(report, 3, 37, 6, seed += 10);
  });
  gpu_test::guarded(report, "dropout float", [&] {
    check_dropout<float, Rows>(report, {33, 70}, 0.1f, seed += 10);
    check_dropout<float, S3>(report, {2, 7, 129}, 0.5f, seed += 10);
    check_dropout_identity(report);
  });
  gpu_test::guarded(report, "dropout bf16", [&] {
    check_dropout<bf16, Rows>(report, {33, 70}, 0.1f, seed += 10);
    check_dropout<bf16, S3>(report, {2, 7, 129}, 0.5f, seed += 10);
  });
  gpu_test::guarded(report, "bad ids on the device", [&] {
    check_bad_ids<std::int32_t>(report, true);
    check_bad_ids<std::int64_t>(report, true);
  });
  return report.finish();
}

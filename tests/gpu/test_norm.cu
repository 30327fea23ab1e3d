// The CUDA kernels of softmax, LayerNorm and the fused LayerNorm ops against the CPU ops.
//
// For each op, dtype (float, bf16, fp16) and shape (BERT-like 256 x 768, odd 3 x 37, 1 x 1;
// softmax also over attention scores [B, heads, S, S] with BERT's mask [B, 1, 1, S]) the
// CPU op runs with a Tape on random inputs, backward from a random upstream gradient into
// gradients that already hold random values (so "+=" is checked, not "="); the CUDA
// kernels run on the same inputs into NaN-poisoned outputs and workspaces, accumulating
// into the same starting gradients; every output and gradient is compared.
//
// Tolerances (Report::close: relative norm and every element against max(|want|, rms)):
//   float: 1e-5 — only the order of float sums differs.
//   bf16:  2e-2 and fp16: 2.5e-3 — the kernels round to T exactly where the CPU does, so
//     most elements are bit-identical; but a float sum that differs in its last bit can
//     round a stored intermediate (softmax's sum, LayerNorm's rstd, an accumulated table
//     row) to the neighbouring value, which moves the outputs derived from it by one ulp
//     of T plus their own rounding: two ulps at the bottom of a binade, 2 * 2^-7 = 1.6e-2
//     for bf16 (8-bit significand) and 2 * 2^-10 = 2.0e-3 for fp16 (11-bit).
// Dropout masks must be identical: elements of dh whose dropout decision is "drop" must
// be left exactly as they were, on the CPU's Philox indexing (element r * width + j).
#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cuda/fused_layer_norm.cuh>
#include <ctdl/kernels/cuda/layer_norm.cuh>
#include <ctdl/kernels/cuda/softmax.cuh>
#include <ctdl/ops/fused_layer_norm.hpp>
#include <ctdl/ops/layer_norm.hpp>
#include <ctdl/ops/softmax.hpp>

#include "gpu/gpu_test.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

using namespace ctdl;
using gpu_test::Buffer;
using gpu_test::random_values;
using gpu_test::guarded;
using gpu_test::Report;
using gpu_test::through_ds;

namespace {

template <class T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>)
    return "float";
  else if constexpr (std::is_same_v<T, bf16>)
    return "bf16";
  else
    return "fp16";
}

/// See the header comment.
template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, float>)
    return 1e-5;
  else if constexpr (std::is_same_v<T, bf16>)
    return 2e-2;
  else
    return 2.5e-3;
}

std::string dims(std::initializer_list<index_t> e) {
  std::string s = "[";
  for (index_t v : e) s += (s.size() > 1 ? "," : "") + std::to_string(v);
  return s + "]";
}

template <class T, class S>
std::vector<T> values(const Tensor<T, S>& t) {
  return std::vector<T>(t.data(), t.data() + t.size());
}

template <class T, class S>
Tensor<T, S> tensor(const std::vector<T>& v, const Extents<S>& extents) {
  auto t = Tensor<T, S>::uninitialized(extents);
  std::copy(v.begin(), v.end(), t.data());
  return t;
}

/// What a gradient holds from an earlier accumulation: random, about a tenth of what one
/// backward adds (LayerNorm's ds is ~0.35 here; softmax's dx ~0.5 / n, so it passes
/// `scale` = 0.05 / n). Large enough that "=" instead of "+=" fails even at the bf16
/// tolerance, small enough not to drown the contribution under T's rounding.
template <class T>
std::vector<T> earlier_gradient(std::size_t n, unsigned seed, float scale = 0.05f) {
  return random_values<T>(n, seed, -scale, scale);
}


/// A leaf Var holding v whose gradient already holds `grad` (an earlier accumulation).
template <class T, class S>
Var<T, S> leaf(const std::vector<T>& v, const std::vector<T>& grad, const Extents<S>& extents) {
  Var<T, S> x(tensor<T, S>(v, extents), true);
  std::copy(grad.begin(), grad.end(), x.node_ptr()->grad_data());
  return x;
}

/// A device buffer of n values, poisoned (NaN) so that an element no kernel wrote fails.
template <class T>
struct Poisoned : Buffer<T> {
  explicit Poisoned(std::size_t n) : Buffer<T>(n) { this->poison(); }
};

// ---- softmax ----

/// softmax over x of extents `xe`, with a mask of extents `*me` broadcast to it (me null:
/// no mask). The mask is BERT's: 0 or -10000 per element, about a quarter masked.
template <class T, class SX, class SM>
void softmax_case(Report& report, const Extents<SX>& xe, const Extents<SM>* me, unsigned seed) {
  const std::string shape = format_extents(xe) + (me ? " mask " + format_extents(*me) : "");
  const std::string name = std::string("softmax ") + dtype_name<T>() + " " + shape;
  guarded(report, name, [&] {
    const auto n_x = static_cast<std::size_t>(numel(xe));
    const auto x = random_values<T>(n_x, seed, -3.0f, 3.0f);
    const auto dy = random_values<T>(n_x, seed + 1);
    const float prior = 0.05f / static_cast<float>(xe[SX::rank - 1]);  // see earlier_gradient
    const auto dx0 = earlier_gradient<T>(n_x, seed + 2, prior);
    std::vector<T> mask;
    if (me) {
      const auto u = random_values<float>(static_cast<std::size_t>(numel(*me)), seed + 3, 0.0f, 1.0f);
      for (float v : u) mask.push_back(static_cast<T>(v < 0.25f ? -10000.0f : 0.0f));
    }
    // CPU.
    Tape tape;
    auto xv = leaf<T, SX>(x, dx0, xe);
    Var<T, SX> y = me ? ops::softmax(tape, xv, tensor<T, SM>(mask, *me)) : ops::softmax(tape, xv);
    tape.backward(y, tensor<T, SX>(dy, xe));
    // CUDA.
    const std::int64_t n = xe[SX::rank - 1], rows = static_cast<std::int64_t>(n_x) / n;
    Buffer<T> x_d(x), dy_d(dy), dx_d(dx0), mask_d(mask.empty() ? std::vector<T>(1) : mask);
    Poisoned<T> y_d(n_x);
    if (me) {
      const auto layout = cuda::mask_layout(std::span<const index_t>(xe), std::span<const index_t>(*me));
      cuda::softmax_forward(x_d.data(), mask_d.data(), layout, y_d.data(), rows, n);
    } else {
      cuda::softmax_forward(x_d.data(), y_d.data(), rows, n);
    }
    report.close(name + ": y", y_d.download(), values(y.value()), tolerance<T>());
    cuda::softmax_backward(y_d.data(), dy_d.data(), dx_d.data(), rows, n);
    report.close(name + ": dx (+= onto a random gradient)", dx_d.download(), values(xv.grad()), tolerance<T>());
  });
}

template <class T>
void softmax_tests(Report& report) {
  using S2 = Shape<dyn, dyn>;
  using S4 = Shape<dyn, dyn, dyn, dyn>;
  using M4 = Shape<dyn, 1, 1, dyn>;
  using S3 = Shape<dyn, dyn, dyn>;
  using M1 = Shape<dyn>;
  for (auto e : {Extents<S2>{256, 768}, Extents<S2>{3, 37}, Extents<S2>{1, 1}, Extents<S2>{2, 4096}}) {
    softmax_case<T, S2, S2>(report, e, nullptr, 10);
  }
  // Attention scores [B, heads, S, S] with BERT's mask [B, 1, 1, S], as the model builds it.
  const Extents<M4> bert_mask{2, 1, 1, 128}, odd_mask{3, 1, 1, 37};
  softmax_case<T, S4, M4>(report, Extents<S4>{2, 12, 128, 128}, &bert_mask, 20);
  softmax_case<T, S4, M4>(report, Extents<S4>{3, 2, 5, 37}, &odd_mask, 30);
  // A rank-1 mask broadcast over every row; a [B, 1, S] mask over [B, S, S].
  const Extents<M1> row_mask{37};
  softmax_case<T, S3, M1>(report, Extents<S3>{3, 5, 37}, &row_mask, 40);
  const Extents<S3> mid_mask{3, 1, 37};
  softmax_case<T, S3, S3>(report, Extents<S3>{3, 37, 37}, &mid_mask, 50);
  const Extents<M1> one_mask{1};
  softmax_case<T, S2, M1>(report, Extents<S2>{1, 1}, &one_mask, 60);
}

// ---- layer_norm ----

template <class T>
void layer_norm_case(Report& report, index_t rows, index_t w, unsigned seed) {
  using S = Shape<dyn, dyn>;
  using V = Shape<dyn>;
  const std::string name = std::string("layer_norm ") + dtype_name<T>() + " " + dims({rows, w});
  guarded(report, name, [&] {
    const auto n = static_cast<std::size_t>(rows * w), nw = static_cast<std::size_t>(w);
    const auto x = random_values<T>(n, seed, -2.0f, 3.0f);  // a non-zero mean
    const auto gamma = random_values<T>(nw, seed + 1, 0.5f, 1.5f), beta = random_values<T>(nw, seed + 2, -0.5f, 0.5f);
    const auto dy = random_values<T>(n, seed + 3);
    const auto dx0 = earlier_gradient<T>(n, seed + 4), dg0 = earlier_gradient<T>(nw, seed + 5),
               db0 = earlier_gradient<T>(nw, seed + 6);
    const double eps = 1e-12;
    Tape tape;
    auto xv = leaf<T, S>(x, dx0, {rows, w});
    auto gv = leaf<T, V>(gamma, dg0, {w});
    auto bv = leaf<T, V>(beta, db0, {w});
    auto y = ops::layer_norm(tape, xv, gv, bv, eps);
    tape.backward(y, tensor<T, S>(dy, {rows, w}));

    Buffer<T> x_d(x), g_d(gamma), b_d(beta), dy_d(dy), dx_d(dx0), dg_d(dg0), db_d(db0);
    Poisoned<T> y_d(n), mean_d(static_cast<std::size_t>(rows)), rstd_d(static_cast<std::size_t>(rows));
    Poisoned<float> ws(static_cast<std::size_t>(cuda::layer_norm_backward_workspace(rows, w)));
    cuda::layer_norm_forward(x_d.data(), g_d.data(), b_d.data(), y_d.data(), mean_d.data(), rstd_d.data(), rows, w,
                             eps);
    report.close(name + ": y", y_d.download(), values(y.value()), tolerance<T>());
    // Without keeping the statistics (inference) the output is the same, bit for bit.
    Poisoned<T> y_inf(n);
    cuda::layer_norm_forward<T>(x_d.data(), g_d.data(), b_d.data(), y_inf.data(), nullptr, nullptr, rows, w, eps);
    report.equal(name + ": y without kept statistics", y_inf.download(), y_d.download());
    cuda::layer_norm_backward(x_d.data(), g_d.data(), mean_d.data(), rstd_d.data(), dy_d.data(),
                              cuda::LayerNormGrads<T>{.x = dx_d.data(), .gamma = dg_d.data(), .beta = db_d.data()},
                              ws.data(), rows, w);
    report.close(name + ": dx", dx_d.download(), through_ds(w, values(xv.grad()), dx0), tolerance<T>());
    report.close(name + ": dgamma", dg_d.download(), values(gv.grad()), tolerance<T>());
    report.close(name + ": dbeta", db_d.download(), values(bv.grad()), tolerance<T>());
    // Only dbeta wanted: the others are left alone.
    Buffer<T> db_only(db0);
    cuda::layer_norm_backward(x_d.data(), g_d.data(), mean_d.data(), rstd_d.data(), dy_d.data(),
                              cuda::LayerNormGrads<T>{.beta = db_only.data()}, ws.data(), rows, w);
    report.close(name + ": dbeta alone", db_only.download(), values(bv.grad()), tolerance<T>());
  });
}

// ---- add_layer_norm ----

template <class T>
void add_layer_norm_case(Report& report, index_t rows, index_t w, float p, unsigned seed) {
  using S = Shape<dyn, dyn>;
  using V = Shape<dyn>;
  const std::string name =
      std::string("add_layer_norm ") + dtype_name<T>() + " " + dims({rows, w}) + " p=" + std::to_string(p).substr(0, 3);
  guarded(report, name, [&] {
    const auto n = static_cast<std::size_t>(rows * w), nw = static_cast<std::size_t>(w);
    const auto h = random_values<T>(n, seed, -2.0f, 2.0f), residual = random_values<T>(n, seed + 1);
    const auto bias = random_values<T>(nw, seed + 2, -0.5f, 0.5f), gamma = random_values<T>(nw, seed + 3, 0.5f, 1.5f),
               beta = random_values<T>(nw, seed + 4, -0.5f, 0.5f);
    const auto dy = random_values<T>(n, seed + 5);
    const auto dh0 = earlier_gradient<T>(n, seed + 6), dr0 = earlier_gradient<T>(n, seed + 7),
               dbias0 = earlier_gradient<T>(nw, seed + 8), dg0 = earlier_gradient<T>(nw, seed + 9),
               db0 = earlier_gradient<T>(nw, seed + 10);
    const ops::AddLayerNormOptions opt{
        .dropout = p, .stream = {.seed = 1234, .rank = 1, .tensor_id = 7, .step = 3}, .eps = 1e-12};
    Tape tape;
    auto hv = leaf<T, S>(h, dh0, {rows, w});
    auto rv = leaf<T, S>(residual, dr0, {rows, w});
    auto biasv = leaf<T, V>(bias, dbias0, {w});
    auto gv = leaf<T, V>(gamma, dg0, {w});
    auto bv = leaf<T, V>(beta, db0, {w});
    auto y = ops::add_layer_norm(tape, hv, biasv, rv, gv, bv, opt);
    tape.backward(y, tensor<T, S>(dy, {rows, w}));

    const ops::DropoutMask mask{opt.stream, p};
    Buffer<T> h_d(h), r_d(residual), bias_d(bias), g_d(gamma), b_d(beta), dy_d(dy);
    Buffer<T> dh_d(dh0), dr_d(dr0), dbias_d(dbias0), dg_d(dg0), db_d(db0);
    Poisoned<T> y_d(n), s_d(n);
    Poisoned<float> mean_d(static_cast<std::size_t>(rows)), rstd_d(static_cast<std::size_t>(rows));
    Poisoned<float> ws(static_cast<std::size_t>(cuda::add_layer_norm_backward_workspace(rows, w)));
    cuda::add_layer_norm_forward(h_d.data(), bias_d.data(), r_d.data(), g_d.data(), b_d.data(), y_d.data(),
                                 cuda::SavedLayerNorm<T>{s_d.data(), mean_d.data(), rstd_d.data()}, rows, w, mask,
                                 opt.eps);
    report.close(name + ": y", y_d.download(), values(y.value()), tolerance<T>());
    Poisoned<T> y_inf(n);
    cuda::add_layer_norm_forward(h_d.data(), bias_d.data(), r_d.data(), g_d.data(), b_d.data(), y_inf.data(),
                                 cuda::SavedLayerNorm<T>{}, rows, w, mask, opt.eps);
    report.equal(name + ": y without kept s, mean, rstd", y_inf.download(), y_d.download());
    cuda::add_layer_norm_backward(cuda::SavedLayerNormView<T>{s_d.data(), mean_d.data(), rstd_d.data()}, g_d.data(),
                                  dy_d.data(),
                                  cuda::AddLayerNormGrads<T>{.h = dh_d.data(),
                                                             .bias = dbias_d.data(),
                                                             .residual = dr_d.data(),
                                                             .gamma = dg_d.data(),
                                                             .beta = db_d.data()},
                                  ws.data(), rows, w, mask);
    const auto dh = dh_d.download();
    report.close(name + ": dh", dh, through_ds(w, values(hv.grad()), dh0), tolerance<T>());
    report.close(name + ": dresidual", dr_d.download(), through_ds(w, values(rv.grad()), dr0), tolerance<T>());
    report.close(name + ": dbias", dbias_d.download(), through_ds(w, values(biasv.grad()), dbias0), tolerance<T>());
    report.close(name + ": dgamma", dg_d.download(), values(gv.grad()), tolerance<T>());
    report.close(name + ": dbeta", db_d.download(), values(bv.grad()), tolerance<T>());
    if (p > 0) {
      // The dropped elements (host Philox, element r * w + j) keep dh's earlier value.
      std::vector<T> got, want;
      for (std::size_t i = 0; i < n; ++i) {
        if (!mask.keep(i)) got.push_back(dh[i]), want.push_back(dh0[i]);
      }
      report.equal(name + ": dh untouched where dropped (" + std::to_string(want.size()) + " of " + std::to_string(n) +
                       " dropped)",
                   got, want);
    }
    // Only dbias and dgamma wanted (the row kernel still runs for dbias's statistics).
    Buffer<T> dbias_only(dbias0), dg_only(dg0);
    cuda::add_layer_norm_backward(
        cuda::SavedLayerNormView<T>{s_d.data(), mean_d.data(), rstd_d.data()}, g_d.data(), dy_d.data(),
        cuda::AddLayerNormGrads<T>{.bias = dbias_only.data(), .gamma = dg_only.data()}, ws.data(), rows, w, mask);
    report.close(name + ": dbias alone", dbias_only.download(), through_ds(w, values(biasv.grad()), dbias0),
                 tolerance<T>());
    report.close(name + ": dgamma alone", dg_only.download(), values(gv.grad()), tolerance<T>());
  });
}

// ---- embedding_layer_norm ----

template <class T, class I>
void embedding_layer_norm_case(Report& report, index_t batch, index_t seq, index_t w, unsigned seed) {
  using S = Shape<dyn, dyn>;
  using V = Shape<dyn>;
  using SI = Shape<dyn>;
  const index_t rows = batch * seq;
  const std::array<index_t, 3> table_rows{50, seq + 3, 2};  // word, position, token type
  const std::string name = std::string("embedding_layer_norm ") + dtype_name<T>() + " ids " +
                           (sizeof(I) == 4 ? "int32 " : "int64 ") + dims({rows, w});
  guarded(report, name, [&] {
    const auto n = static_cast<std::size_t>(rows * w), nw = static_cast<std::size_t>(w);
    std::array<std::vector<T>, 3> tables, dtables0;
    std::array<std::vector<I>, 3> ids;
    for (std::size_t i = 0; i < 3; ++i) {
      const auto size = static_cast<std::size_t>(table_rows[i] * w);
      tables[i] = random_values<T>(size, seed + 10 * static_cast<unsigned>(i));
      dtables0[i] = earlier_gradient<T>(size, seed + 10 * static_cast<unsigned>(i) + 1);
      const auto u =
          random_values<float>(static_cast<std::size_t>(rows), seed + 10 * static_cast<unsigned>(i) + 2, 0, 1);
      for (index_t r = 0; r < rows; ++r) {
        // Positions as BERT's (r % seq); word and type ids random, so rows repeat.
        ids[i].push_back(i == 1 ? static_cast<I>(r % seq)
                                : static_cast<I>(static_cast<index_t>(u[static_cast<std::size_t>(r)] *
                                                                      static_cast<float>(table_rows[i])) %
                                                 table_rows[i]));
      }
    }
    const auto gamma = random_values<T>(nw, seed + 40, 0.5f, 1.5f), beta = random_values<T>(nw, seed + 41, -0.5f, 0.5f);
    const auto dy = random_values<T>(n, seed + 42);
    const auto dg0 = earlier_gradient<T>(nw, seed + 43), db0 = earlier_gradient<T>(nw, seed + 44);
    const double eps = 1e-12;

    Tape tape;
    std::array<Var<T, S>, 3> tv;
    std::array<Tensor<I, SI>, 3> idt;
    for (std::size_t i = 0; i < 3; ++i) {
      tv[i] = leaf<T, S>(tables[i], dtables0[i], {table_rows[i], w});
      idt[i] = tensor<I, SI>(ids[i], {rows});
    }
    auto gv = leaf<T, V>(gamma, dg0, {w});
    auto bv = leaf<T, V>(beta, db0, {w});
    auto y = ops::embedding_layer_norm(tape, tv, std::array<const Tensor<I, SI>*, 3>{&idt[0], &idt[1], &idt[2]}, gv, bv,
                                       eps);
    tape.backward(y, tensor<T, S>(dy, {rows, w}));

    Buffer<T> t0(tables[0]), t1(tables[1]), t2(tables[2]), g_d(gamma), b_d(beta), dy_d(dy);
    Buffer<T> dt0(dtables0[0]), dt1(dtables0[1]), dt2(dtables0[2]), dg_d(dg0), db_d(db0);
    Buffer<I> i0(ids[0]), i1(ids[1]), i2(ids[2]);
    const cuda::EmbeddingLookups<T, I, 3> lookups{{t0.data(), t1.data(), t2.data()},
                                                  {table_rows[0], table_rows[1], table_rows[2]},
                                                  {i0.data(), i1.data(), i2.data()}};
    Poisoned<T> y_d(n), s_d(n);
    Poisoned<float> mean_d(static_cast<std::size_t>(rows)), rstd_d(static_cast<std::size_t>(rows));
    Poisoned<float> ws(static_cast<std::size_t>(cuda::embedding_layer_norm_backward_workspace<T>(rows, w)));
    Buffer<cuda::IdErrorFlag> flag(1);
    cuda::reset_id_error(flag.data());
    cuda::embedding_layer_norm_forward(lookups, g_d.data(), b_d.data(), y_d.data(),
                                       cuda::SavedLayerNorm<T>{s_d.data(), mean_d.data(), rstd_d.data()}, rows, w, eps,
                                       flag.data());
    cuda::throw_if_id_error(flag.data(), lookups, rows);  // in range: must not throw
    report.close(name + ": y", y_d.download(), values(y.value()), tolerance<T>());
    cuda::embedding_layer_norm_backward(
        lookups, cuda::SavedLayerNormView<T>{s_d.data(), mean_d.data(), rstd_d.data()}, g_d.data(), dy_d.data(),
        cuda::EmbeddingLayerNormGrads<T, 3>{
            .tables = {dt0.data(), dt1.data(), dt2.data()}, .gamma = dg_d.data(), .beta = db_d.data()},
        ws.data(), rows, w);
    report.close(name + ": dword_embeddings (scatter-add)", dt0.download(),
                 through_ds(w, values(tv[0].grad()), dtables0[0]), tolerance<T>());
    report.close(name + ": dposition_embeddings (scatter-add)", dt1.download(),
                 through_ds(w, values(tv[1].grad()), dtables0[1]), tolerance<T>());
    report.close(name + ": dtoken_type_embeddings (scatter-add)", dt2.download(),
                 through_ds(w, values(tv[2].grad()), dtables0[2]), tolerance<T>());
    report.close(name + ": dgamma", dg_d.download(), values(gv.grad()), tolerance<T>());
    report.close(name + ": dbeta", db_d.download(), values(bv.grad()), tolerance<T>());
  });
}

/// An id out of range: the device flag gives the CPU's error message, and nothing is read
/// or written out of bounds (compute-sanitizer checks that).
void embedding_bad_id_case(Report& report) {
  using S = Shape<dyn, dyn>;
  using V = Shape<dyn>;
  using SI = Shape<dyn>;
  const std::string name = "embedding_layer_norm float: id out of range";
  guarded(report, name, [&] {
    const index_t rows = 5, w = 37;
    const std::array<index_t, 2> table_rows{7, 4};
    std::array<std::vector<float>, 2> tables{random_values<float>(7 * 37, 1), random_values<float>(4 * 37, 2)};
    std::array<std::vector<std::int64_t>, 2> ids{std::vector<std::int64_t>{0, 6, 3, 2, 1},
                                                 std::vector<std::int64_t>{3, 0, 1, 4, -1}};  // lookup 1 pos 3 first
    const auto gamma = random_values<float>(37, 3), beta = random_values<float>(37, 4);
    std::string cpu_message;
    try {
      Tape tape;
      std::array<Var<float, S>, 2> tv{Var<float, S>(tensor<float, S>(tables[0], {7, w})),
                                      Var<float, S>(tensor<float, S>(tables[1], {4, w}))};
      std::array<Tensor<std::int64_t, SI>, 2> idt{tensor<std::int64_t, SI>(ids[0], {rows}),
                                                  tensor<std::int64_t, SI>(ids[1], {rows})};
      ops::embedding_layer_norm(tape, tv, std::array<const Tensor<std::int64_t, SI>*, 2>{&idt[0], &idt[1]},
                                Var<float, V>(tensor<float, V>(gamma, {w})), Var<float, V>(tensor<float, V>(beta, {w})),
                                1e-12);
    } catch (const Error& e) {
      cpu_message = e.what();
    }
    std::string host_message;
    try {
      cuda::check_ids(ids[1].data(), rows, table_rows[1], 1);
    } catch (const Error& e) {
      host_message = e.what();
    }
    Buffer<float> t0(tables[0]), t1(tables[1]), g_d(gamma), b_d(beta);
    Buffer<std::int64_t> i0(ids[0]), i1(ids[1]);
    const cuda::EmbeddingLookups<float, std::int64_t, 2> lookups{
        {t0.data(), t1.data()}, {table_rows[0], table_rows[1]}, {i0.data(), i1.data()}};
    Poisoned<float> y_d(static_cast<std::size_t>(rows * w));
    Buffer<cuda::IdErrorFlag> flag(1);
    cuda::reset_id_error(flag.data());
    cuda::embedding_layer_norm_forward(lookups, g_d.data(), b_d.data(), y_d.data(), cuda::SavedLayerNorm<float>{}, rows,
                                       w, 1e-12, flag.data());
    std::string device_message;
    try {
      cuda::throw_if_id_error(flag.data(), lookups, rows);
    } catch (const Error& e) {
      device_message = e.what();
    }
    report.expect(name + ": the CPU op throws", !cpu_message.empty(), cpu_message);
    report.expect(name + ": check_ids gives the CPU's message", host_message == cpu_message, host_message);
    report.expect(name + ": the device flag gives the CPU's message", device_message == cpu_message, device_message);
    const auto y = y_d.download();
    report.expect(
        name + ": the bad rows are NaN, the others finite",
        std::isnan(y[3 * 37]) && std::isnan(y[4 * 37 + 36]) && std::isfinite(y[0]) && std::isfinite(y[2 * 37 + 36]));
  });
}

/// Host-side argument checks: ctdl::Error naming the op and the problem, before any launch.
void argument_checks(Report& report) {
  auto throws = [&](const std::string& what, const std::string& needle, const std::function<void()>& call) {
    std::string message;
    try {
      call();
    } catch (const Error& e) {
      message = e.what();
    }
    report.expect(what, message.find(needle) != std::string::npos, message.empty() ? "did not throw" : message);
  };
  const std::int64_t wide = cuda::kMaxFusedWidth + 1;
  throws("add_layer_norm_forward: a row wider than kMaxFusedWidth", "add_layer_norm_forward: width", [&] {
    cuda::add_layer_norm_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, {}, 1, wide, {}, 1e-12);
  });
  throws("add_layer_norm_forward: dropout 1", "dropout probability", [&] {
    cuda::add_layer_norm_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, {}, 1, 8,
                                        ops::DropoutMask{{}, 1.0f}, 1e-12);
  });
  throws("softmax_forward: empty rows", "softmax_forward", [&] { cuda::softmax_forward<float>(nullptr, nullptr, 4, 0); });
  const std::array<index_t, 3> x{2, 3, 4}, bad{2, 2, 4};
  throws("mask_layout: a mask that does not broadcast", "does not broadcast",
         [&] { cuda::mask_layout(std::span<const index_t>(x), std::span<const index_t>(bad)); });
}

template <class T>
void all_tests(Report& report) {
  softmax_tests<T>(report);
  for (auto [rows, w] : {std::pair<index_t, index_t>{256, 768}, {3, 37}, {1, 1}, {4, 4096}}) {
    layer_norm_case<T>(report, rows, w, 100);
    for (float p : {0.0f, 0.1f}) add_layer_norm_case<T>(report, rows, w, p, 200);
  }
  embedding_layer_norm_case<T, std::int32_t>(report, 2, 128, 768, 300);
  embedding_layer_norm_case<T, std::int64_t>(report, 3, 1, 37, 310);
  embedding_layer_norm_case<T, std::int32_t>(report, 1, 1, 1, 320);
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/norm");
  Report report("gpu/norm");
  all_tests<float>(report);
  all_tests<bf16>(report);
  all_tests<fp16>(report);
  embedding_bad_id_case(report);
  argument_checks(report);
  return report.finish();
}

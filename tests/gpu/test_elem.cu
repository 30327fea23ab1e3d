// The elementwise-and-row CUDA kernels against the CPU path: GELU (both forms),
// dropout, embedding, cross-entropy and the sums (kernels/cuda/activation.cuh,
// dropout.cuh, embedding.cuh, cross_entropy.cuh, reduce.cuh).
//
// Each op runs on the CPU as a program would (the ops:: function or an expression on a
// Tape, then tape.backward) and on the device, from the same random inputs, over
// BERT-like and odd shapes (256 x 768, 3 x 37, 1 x 1). Gradients start from random
// values on both sides (the CPU's through grad_data()), so the checks also see that the
// kernels add to a gradient instead of overwriting it. Forward outputs are poisoned
// (NaN) before each kernel, so an element no thread wrote fails. The dropout masks are
// also drawn into keep bits (cuda::dropout_keep_bits) and read back through
// DropoutMask::keep, bit for bit the CPU's decisions.
//
// Tolerances (Report::close: relative to the norm and per element, see gpu_test.hpp):
//   fp32  1e-5: both sides compute in float from the same functors; only the summation
//         order (reductions) and FMA contraction differ, a few float ulps.
//   bf16  1e-2: both sides compute in float and round to bf16 at the same points; a last-
//         bit difference in float can flip one rounding, one bf16 ulp = at most 2^-7
//         (7.8e-3) of the value.
//   fp16  2e-3: as bf16 with fp16's ulp, at most 2^-10 (9.8e-4) of the value.
// Dropout's forward is one float multiply rounded once on both devices, so it is
// compared bit for bit (Report::equal), as are the masks.
//
// Without a CUDA device the test runs the host-side checks only (the error messages of
// check_ids_on_host and check_labels_on_host against the CPU ops'), then exits 77
// (Skipped).
#include <ctdl/ctdl.hpp>
#include <ctdl/ops/cross_entropy.hpp>
#include <ctdl/ops/dropout.hpp>
#include <ctdl/ops/embedding.hpp>
#include <ctdl/ops/reduce.hpp>
#include <ctdl/kernels/cuda/activation.cuh>
#include <ctdl/kernels/cuda/cross_entropy.cuh>
#include <ctdl/kernels/cuda/dropout.cuh>
#include <ctdl/kernels/cuda/embedding.cuh>
#include <ctdl/kernels/cuda/reduce.cuh>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "gpu/gpu_test.hpp"

using namespace ctdl;
using gpu_test::Buffer;
using gpu_test::ids_at_most_twice;
using gpu_test::random_ids;
using gpu_test::random_values;
using gpu_test::guarded;
using gpu_test::Report;

namespace {

using Rows = Shape<dyn, dyn>;
using Vec = Shape<dyn>;

struct Extent2 {
  index_t rows, cols;
};
constexpr Extent2 kShapes[] = {{256, 768}, {3, 37}, {1, 1}};

template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, bf16>) return 1e-2;
  else if constexpr (std::is_same_v<T, fp16>) return 2e-3;
  else return 1e-5;
}

/// "gelu_erf bf16 3x37", the prefix of every check's name.
template <class T>
std::string name(const std::string& op, index_t rows, index_t cols) {
  return op + " " + dtype_name<T>() + " " + std::to_string(rows) + "x" + std::to_string(cols);
}

template <class S, class T>
Tensor<T, S> tensor(const Extents<S>& extents, const std::vector<T>& values) {
  auto t = Tensor<T, S>::uninitialized(extents);
  if (static_cast<std::size_t>(t.size()) != values.size()) throw Error("test: tensor(): size mismatch");
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

template <class T, class S>
std::vector<T> values(const Tensor<T, S>& t) {
  return std::vector<T>(t.data(), t.data() + t.size());
}

/// Gives v a gradient holding g0 before backward, as a second use of v would.
template <class T, class S>
void start_gradient(const Var<T, S>& v, const std::vector<T>& g0) {
  std::copy(g0.begin(), g0.end(), v.node_ptr()->grad_data());
}

template <class T>
std::vector<T> one_value(double v) {
  return {convert<T>(v)};
}

// ---- GELU ----

template <class T>
void test_gelu(Report& report, cuda::GeluForm form, Extent2 shape, unsigned seed) {
  const auto [rows, cols] = shape;
  const std::string what = name<T>(form == cuda::GeluForm::erf ? "gelu_erf" : "gelu_tanh", rows, cols);
  guarded(report, what, [&] {
    const index_t n = rows * cols;
    const auto x0 = random_values<T>(n, seed, -4.0f, 4.0f);  // both tails and the middle
    const auto dy0 = random_values<T>(n, seed + 1);
    const auto g0 = random_values<T>(n, seed + 2);

    Var<T, Rows> x(tensor<Rows>({rows, cols}, x0));
    start_gradient(x, g0);
    Tape tape;
    Var<T, Rows> y = form == cuda::GeluForm::erf ? tape.record(gelu(x)) : tape.record(gelu_tanh(x));
    const auto want_y = values(y.value());
    tape.backward(y, tensor<Rows>({rows, cols}, dy0));

    Buffer<T> dx(x0), ddy(dy0), dgrad(g0), dy(static_cast<std::size_t>(n));
    dy.poison();
    cuda::gelu_forward(dx.data(), dy.data(), n, form);
    cuda::gelu_backward(dx.data(), ddy.data(), dgrad.data(), n, form);
    report.close(what + ": forward y", dy.download(), want_y, tolerance<T>());
    report.close(what + ": backward dx (added to a gradient)", dgrad.download(), values(x.grad()), tolerance<T>());
  });
}

// ---- dropout ----

/// The mask itself: dropout of ones, fp32, compared bit for bit with the CPU's.
void test_dropout_mask(Report& report, index_t n, float p, RandomStream stream) {
  const std::string what = "dropout mask n=" + std::to_string(n) + " p=" + std::to_string(p) +
                           " seed=" + std::to_string(stream.seed) + " rank=" + std::to_string(stream.rank) +
                           " tensor=" + std::to_string(stream.tensor_id) + " step=" + std::to_string(stream.step);
  guarded(report, what, [&] {
    const std::vector<float> ones(static_cast<std::size_t>(n), 1.0f);
    Var<float, Vec> x(tensor<Vec>({n}, ones), false);
    Tape tape;
    const auto y = ops::dropout(tape, x, p, stream);
    Buffer<float> dx(ones), dy(static_cast<std::size_t>(n));
    dy.poison();
    cuda::dropout_forward(dx.data(), dy.data(), n, ops::DropoutMask{stream, p});
    report.equal(what, dy.download(), values(y.value()));
    // The same decisions drawn into a bit mask (the fused LayerNorm's), read back through
    // DropoutMask::keep on the host: bit for bit the CPU's, and nothing past n.
    const std::size_t words = static_cast<std::size_t>(cuda::dropout_bit_words(n));
    Buffer<std::uint32_t> bits(words);
    bits.poison();
    cuda::dropout_keep_bits(ops::DropoutMask{stream, p}, n, bits.data());
    const std::vector<std::uint32_t> host_bits = bits.download();
    const ops::DropoutMask from_bits{stream, p, host_bits.data()}, drawn{stream, p};
    std::vector<float> got(static_cast<std::size_t>(n)), want(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
      got[static_cast<std::size_t>(i)] = from_bits.keep(static_cast<std::uint64_t>(i)) ? 1.0f : 0.0f;
      want[static_cast<std::size_t>(i)] = drawn.keep(static_cast<std::uint64_t>(i)) ? 1.0f : 0.0f;
    }
    report.equal(what + ": keep bits", got, want);
    const int tail = static_cast<int>(n % 32);
    report.expect(what + ": keep bits past n are 0",
                  words == 0 || tail == 0 || (host_bits.back() >> tail) == 0u);
  });
}

template <class T>
void test_dropout(Report& report, Extent2 shape, unsigned seed) {
  const auto [rows, cols] = shape;
  const float p = 0.1f;
  const RandomStream stream{.seed = 1234 + seed, .rank = 1, .tensor_id = 17, .step = 5};
  const std::string what = name<T>("dropout p=0.1", rows, cols);
  guarded(report, what, [&] {
    const index_t n = rows * cols;
    const auto x0 = random_values<T>(n, seed);
    const auto dy0 = random_values<T>(n, seed + 1);
    const auto g0 = random_values<T>(n, seed + 2);

    Var<T, Rows> x(tensor<Rows>({rows, cols}, x0));
    start_gradient(x, g0);
    Tape tape;
    const auto y = ops::dropout(tape, x, p, stream);
    const auto want_y = values(y.value());
    tape.backward(y, tensor<Rows>({rows, cols}, dy0));

    const ops::DropoutMask mask{stream, p};
    Buffer<T> dx(x0), ddy(dy0), dgrad(g0), dy(static_cast<std::size_t>(n));
    dy.poison();
    cuda::dropout_forward(dx.data(), dy.data(), n, mask);
    cuda::dropout_backward(ddy.data(), dgrad.data(), n, mask);
    report.equal(what + ": forward y (bit for bit)", dy.download(), want_y);
    report.close(what + ": backward dx (added to a gradient)", dgrad.download(), values(x.grad()), tolerance<T>());
  });
}

// ---- embedding ----

/// The table has `rows` rows of `h`; n ids look rows up. float: ids drawn from a few
/// rows (many repeats) and a gradient already there. bf16/fp16: the 16-bit atomicAdd
/// rounds each addition to T in whatever order the threads come, so a row hit three or
/// more times can differ from the CPU's position order by a few ulps; the ids here
/// repeat at most twice and the gradient starts at zero, where 0 + a + b is a + b in
/// either order: the device must then match the CPU to the bit.
template <class T, class I>
void test_embedding(Report& report, index_t rows, index_t h, index_t n, unsigned seed) {
  const std::string what = name<T>(std::string("embedding ") + dtype_name<I>() + " ids, table " +
                                       std::to_string(rows) + "x" + std::to_string(h) + ", y",
                                   n, h);
  guarded(report, what, [&] {
    constexpr bool wide = std::is_same_v<T, float>;
    const auto ids = wide ? random_ids<I>(n, std::max<index_t>(1, std::min<index_t>(rows, n / 3 + 1)), seed)
                          : ids_at_most_twice<I>(n, rows, seed);
    const auto table0 = random_values<T>(rows * h, seed + 1);
    const auto dy0 = random_values<T>(n * h, seed + 2);
    const auto g0 = wide ? random_values<T>(rows * h, seed + 3) : std::vector<T>(rows * h, T(0.0f));

    Var<T, Rows> table(tensor<Rows>({rows, h}, table0));
    start_gradient(table, g0);
    Tape tape;
    const auto y = ops::embedding(tape, table, tensor<Vec>({n}, ids));
    const auto want_y = values(y.value());
    tape.backward(y, tensor<Rows>({n, h}, dy0));

    Buffer<T> dtable(table0), ddy(dy0), dgrad(g0), dy(static_cast<std::size_t>(n * h));
    Buffer<I> dids(ids);
    Buffer<unsigned long long> flag(1);
    dy.poison();
    cuda::reset_bad_index(flag.data());
    cuda::embedding_forward(dtable.data(), dids.data(), dy.data(), n, rows, h, flag.data());
    cuda::embedding_backward(ddy.data(), dids.data(), dgrad.data(), n, rows, h);
    report.equal(what + ": forward y (a gather, bit for bit)", dy.download(), want_y);
    const auto flagged = cuda::read_bad_index(flag.data());
    report.expect(what + ": no bad id flagged", !flagged,
                  flagged ? "position " + std::to_string(*flagged) + " flagged" : "flag clear");
    const auto got = dgrad.download();
    if (wide) report.close(what + ": backward dtable (scatter-add, repeated ids)", got, values(table.grad()), 1e-5);
    else report.equal(what + ": backward dtable (each id at most twice, bit for bit)", got, values(table.grad()));
  });
}

/// The CPU's message for the first bad id, and the device path's: the host check, and
/// with `on_device` the device flag.
template <class I>
void test_embedding_errors(Report& report, bool on_device) {
  const std::string what = std::string("embedding errors, ") + dtype_name<I>() + " ids";
  guarded(report, what, [&] {
    const index_t rows = 5, h = 3;
    const std::vector<I> ids = {1, 4, 0, 7, 2, -1, 9};  // first bad: 7 at position 3
    Var<float, Rows> table(tensor<Rows>({rows, h}, random_values<float>(rows * h, 5)));
    std::string cpu_message = "(the CPU did not throw)";
    try {
      Tape tape;
      ops::embedding(tape, table, tensor<Vec>({static_cast<index_t>(ids.size())}, ids));
    } catch (const Error& e) {
      cpu_message = e.what();
    }
    std::string host_message = "(check_ids_on_host did not throw)";
    try {
      cuda::check_ids_on_host(ids.data(), static_cast<std::int64_t>(ids.size()), rows);
    } catch (const Error& e) {
      host_message = e.what();
    }
    report.expect(what + ": host check names the CPU's position, id and rows", host_message == cpu_message,
                  "host: \"" + host_message + "\", CPU: \"" + cpu_message + "\"");
    if (!on_device) return;

    const auto n = static_cast<std::int64_t>(ids.size());
    Buffer<float> dtable(values(table.value())), dy(static_cast<std::size_t>(n * h));
    Buffer<I> dids(ids);
    Buffer<unsigned long long> flag(1);
    dy.poison();
    cuda::reset_bad_index(flag.data());
    cuda::embedding_forward(dtable.data(), dids.data(), dy.data(), n, rows, h, flag.data());
    std::string device_message = "(throw_if_bad_ids did not throw)";
    try {
      cuda::throw_if_bad_ids(flag.data(), dids.data(), rows);
    } catch (const Error& e) {
      device_message = e.what();
    }
    report.expect(what + ": device flag names the CPU's position, id and rows", device_message == cpu_message,
                  "device: \"" + device_message + "\", CPU: \"" + cpu_message + "\"");
    // A bad id's row is zeros; the good rows are gathered.
    const auto got = dy.download();
    bool rows_ok = true;
    for (std::int64_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < h; ++j) {
        const bool bad = ids[i] < 0 || ids[i] >= rows;
        const float want = bad ? 0.0f : table.value().data()[ids[i] * h + j];
        rows_ok = rows_ok && got[i * h + j] == want;
      }
    }
    report.expect(what + ": bad ids give zero rows, good ids their rows", rows_ok);
  });
}

// ---- cross-entropy ----

enum class Masking { none, some_rows_out, all_rows_out };

/// Cross-entropy of `rows` rows of `c` logits; labels in [0, c); with a mask that keeps
/// about two rows in three (the excluded rows' labels are out of range: never read),
/// or none. dloss = 0.7 and a gradient already there.
template <class T>
void test_cross_entropy(Report& report, Extent2 shape, Masking masking, unsigned seed) {
  const auto [rows, c] = shape;
  const char* mask_name = masking == Masking::none ? "no mask" : masking == Masking::some_rows_out ? "mask" : "all masked";
  const std::string what = name<T>(std::string("cross_entropy (") + mask_name + ")", rows, c);
  guarded(report, what, [&] {
    const auto logits0 = random_values<T>(rows * c, seed, -3.0f, 3.0f);
    // The gradient already there is about as large as what backward adds (dloss / rows
    // times a probability near 1 / c), so a backward that adds nothing fails.
    const float g_scale = 0.7f / static_cast<float>(rows * c);
    const auto g0 = random_values<T>(rows * c, seed + 1, -g_scale, g_scale);
    std::vector<std::int32_t> labels = random_ids<std::int32_t>(rows, c, seed + 2);
    std::vector<T> mask(static_cast<std::size_t>(rows), T(1.0f));
    if (masking != Masking::none) {
      for (index_t i = 0; i < rows; ++i) {
        const bool out = masking == Masking::all_rows_out || i % 3 == 1;
        if (out) {
          mask[i] = T(0.0f);
          labels[i] = -100;  // an excluded row's label is never read
        }
      }
    }
    const bool masked = masking != Masking::none;
    const double dloss = 0.7;

    Var<T, Shape<dyn, dyn>> logits(tensor<Rows>({rows, c}, logits0));
    start_gradient(logits, g0);
    Tape tape;
    const auto label_tensor = tensor<Vec>({rows}, labels);
    const auto loss = masked ? ops::cross_entropy(tape, logits, label_tensor, tensor<Vec>({rows}, mask))
                             : ops::cross_entropy(tape, logits, label_tensor);
    const std::vector<T> want_loss = {loss.value().item()};
    tape.backward(loss, tensor<Shape<>>({}, one_value<T>(dloss)));

    Buffer<T> dlogits(logits0), dgrad(g0), dmask(mask), dprobs(static_cast<std::size_t>(rows * c)), dloss_out(1),
        ddloss(one_value<T>(dloss));
    Buffer<std::int32_t> dlabels(labels);
    Buffer<double> total_weight(1), row_losses(static_cast<std::size_t>(cuda::cross_entropy_workspace(rows)));
    Buffer<unsigned long long> flag(1);
    dprobs.poison();
    dloss_out.poison();
    cuda::reset_bad_index(flag.data());
    const T* mask_ptr = masked ? dmask.data() : nullptr;
    cuda::cross_entropy_forward(dlogits.data(), dlabels.data(), mask_ptr, dprobs.data(), dloss_out.data(),
                                total_weight.data(), row_losses.data(), rows, c, flag.data());
    cuda::cross_entropy_backward(dprobs.data(), dlabels.data(), mask_ptr, total_weight.data(), ddloss.data(),
                                 dgrad.data(), rows, c);
    report.close(what + ": loss", dloss_out.download(), want_loss, tolerance<T>());
    report.close(what + ": backward dlogits (dloss 0.7, added to a gradient)", dgrad.download(),
                 values(logits.grad()), tolerance<T>());
    const auto flagged = cuda::read_bad_index(flag.data());
    report.expect(what + ": no bad label flagged (excluded rows' labels unread)", !flagged,
                  flagged ? "row " + std::to_string(*flagged) + " flagged" : "flag clear");
  });
}

/// A counted row's bad label: the CPU's message from the host check and (with
/// `on_device`) the device flag; an excluded row's bad label before it must not be reported.
void test_cross_entropy_errors(Report& report, bool on_device) {
  const std::string what = "cross_entropy errors";
  guarded(report, what, [&] {
    const index_t rows = 5, c = 4;
    const std::vector<std::int32_t> labels = {-100, 3, 4, 1, 9};  // row 0 excluded; first counted bad: row 2
    const std::vector<float> mask = {0, 1, 1, 1, 1};
    const auto logits0 = random_values<float>(rows * c, 9);
    std::string cpu_message = "(the CPU did not throw)";
    try {
      Tape tape;
      ops::cross_entropy(tape, Var<float, Rows>(tensor<Rows>({rows, c}, logits0)), tensor<Vec>({rows}, labels),
                         tensor<Vec>({rows}, mask));
    } catch (const Error& e) {
      cpu_message = e.what();
    }
    std::string host_message = "(check_labels_on_host did not throw)";
    try {
      cuda::check_labels_on_host(labels.data(), mask.data(), rows, c);
    } catch (const Error& e) {
      host_message = e.what();
    }
    report.expect(what + ": host check names the CPU's row and label", host_message == cpu_message,
                  "host: \"" + host_message + "\", CPU: \"" + cpu_message + "\"");
    if (!on_device) return;

    Buffer<float> dlogits(logits0), dmask(mask), dprobs(static_cast<std::size_t>(rows * c)), dloss(1);
    Buffer<std::int32_t> dlabels(labels);
    Buffer<double> total_weight(1), row_losses(static_cast<std::size_t>(cuda::cross_entropy_workspace(rows)));
    Buffer<unsigned long long> flag(1);
    cuda::reset_bad_index(flag.data());
    cuda::cross_entropy_forward(dlogits.data(), dlabels.data(), dmask.data(), dprobs.data(), dloss.data(),
                                total_weight.data(), row_losses.data(), rows, c, flag.data());
    std::string device_message = "(throw_if_bad_labels did not throw)";
    try {
      cuda::throw_if_bad_labels(flag.data(), dlabels.data(), c);
    } catch (const Error& e) {
      device_message = e.what();
    }
    report.expect(what + ": device flag names the CPU's row and label", device_message == cpu_message,
                  "device: \"" + device_message + "\", CPU: \"" + cpu_message + "\"");
  });
}

// ---- reductions ----

template <class T>
void test_row_sums(Report& report, Extent2 shape, bool mean, unsigned seed) {
  const auto [rows, cols] = shape;
  const std::string what = name<T>(mean ? "row_means (mean over the last axis)" : "row_sums (sum over the last axis)",
                                   rows, cols);
  guarded(report, what, [&] {
    const auto x0 = random_values<T>(rows * cols, seed);
    const auto g_up = random_values<T>(rows, seed + 1);
    // As large as what backward adds (g / cols for the mean), so adding nothing fails.
    const float g_scale = mean ? 1.0f / static_cast<float>(cols) : 1.0f;
    const auto g0 = random_values<T>(rows * cols, seed + 2, -g_scale, g_scale);
    Var<T, Rows> x(tensor<Rows>({rows, cols}, x0));
    start_gradient(x, g0);
    Tape tape;
    const auto y = mean ? ops::mean(tape, x, last_axis) : ops::sum(tape, x, last_axis);
    const auto want_y = values(y.value());
    using YS = typename std::remove_cvref_t<decltype(y)>::shape_type;  // Shape<dyn, 1>: the axis kept
    tape.backward(y, tensor<YS>({rows, 1}, g_up));

    Buffer<T> dx(x0), dg(g_up), dgrad(g0), dy(static_cast<std::size_t>(rows));
    dy.poison();
    if (mean) {
      cuda::row_means(dx.data(), dy.data(), rows, cols);
      cuda::row_means_backward(dg.data(), dgrad.data(), rows, cols);
    } else {
      cuda::row_sums(dx.data(), dy.data(), rows, cols);
      cuda::row_sums_backward(dg.data(), dgrad.data(), rows, cols);
    }
    report.close(what + ": forward y", dy.download(), want_y, tolerance<T>());
    report.close(what + ": backward dx (added to a gradient)", dgrad.download(), values(x.grad()), tolerance<T>());
  });
}

/// Column sums as the gradient of a broadcast bias: y = x + b, b.grad += sum over rows
/// of dy (expr::sum_to on the CPU). Run twice from the same start: the same bits.
template <class T>
void test_column_sums(Report& report, Extent2 shape, unsigned seed) {
  const auto [rows, cols] = shape;
  const std::string what = name<T>("add_column_sums (bias gradient)", rows, cols);
  guarded(report, what, [&] {
    const auto x0 = random_values<T>(rows * cols, seed);
    const auto b0 = random_values<T>(cols, seed + 1);
    const auto dy0 = random_values<T>(rows * cols, seed + 2);
    const auto g0 = random_values<T>(cols, seed + 3);
    Var<T, Rows> x(tensor<Rows>({rows, cols}, x0), false);
    Var<T, Vec> b(tensor<Vec>({cols}, b0));
    start_gradient(b, g0);
    Tape tape;
    const auto y = tape.record(x + b);
    tape.backward(y, tensor<Rows>({rows, cols}, dy0));

    Buffer<T> ddy(dy0), dgrad(g0), dgrad_again(g0);
    Buffer<float> workspace(static_cast<std::size_t>(cuda::column_sums_workspace(rows, cols)));
    workspace.poison();  // every slot the second pass reads must be written by the first
    cuda::add_column_sums(ddy.data(), dgrad.data(), rows, cols, workspace.data());
    cuda::add_column_sums(ddy.data(), dgrad_again.data(), rows, cols, workspace.data());
    const auto got = dgrad.download();
    report.close(what + ": db (added to a gradient)", got, values(b.grad()), tolerance<T>());
    report.equal(what + ": deterministic (two runs, same bits)", dgrad_again.download(), got);
  });
}

/// Sum and mean over all elements, forward and backward (upstream 0.7); the sum of
/// squares against a double sum. The sum runs twice: the same bits.
template <class T>
void test_full_sums(Report& report, Extent2 shape, unsigned seed) {
  const auto [rows, cols] = shape;
  const index_t n = rows * cols;
  for (const bool mean : {false, true}) {
    const std::string what = name<T>(mean ? "mean_all" : "sum_all", rows, cols);
    guarded(report, what, [&] {
      const auto x0 = random_values<T>(n, seed);
      // As large as what backward adds (0.7 / n for the mean), so adding nothing fails.
      const float g_scale = mean ? 1.0f / static_cast<float>(n) : 1.0f;
      const auto g0 = random_values<T>(n, seed + 1, -g_scale, g_scale);
      Var<T, Rows> x(tensor<Rows>({rows, cols}, x0));
      start_gradient(x, g0);
      Tape tape;
      const auto y = mean ? ops::mean(tape, x) : ops::sum(tape, x);
      const std::vector<T> want_y = {y.value().item()};
      tape.backward(y, tensor<Shape<>>({}, one_value<T>(0.7)));

      Buffer<T> dx(x0), dgrad(g0), dy(1), dy_again(1), dup(one_value<T>(0.7));
      Buffer<float> workspace(static_cast<std::size_t>(cuda::full_sum_workspace(n)));
      dy.poison();
      dy_again.poison();
      if (mean) {
        cuda::mean_all(dx.data(), dy.data(), n, workspace.data());
        cuda::mean_all(dx.data(), dy_again.data(), n, workspace.data());
        cuda::mean_all_backward(dup.data(), dgrad.data(), n);
      } else {
        cuda::sum_all(dx.data(), dy.data(), n, workspace.data());
        cuda::sum_all(dx.data(), dy_again.data(), n, workspace.data());
        cuda::sum_all_backward(dup.data(), dgrad.data(), n);
      }
      const auto got = dy.download();
      // Against the exact (double) sum, within what float accumulation in any order may
      // lose: a bound proportional to sum |x|, not to the result, since random signs
      // cancel (300,001 values in [-1, 1] sum to about 60 from terms adding to 150,000,
      // and the CPU's own float sum is then 2e-5 of the result away from the exact one);
      // plus rounding the result to T.
      double exact = 0, magnitude = 0;
      for (const T& v : x0) exact += gpu_test::as_double(v), magnitude += std::abs(gpu_test::as_double(v));
      if (mean) exact /= static_cast<double>(n), magnitude /= static_cast<double>(n);
      const double error = std::abs(gpu_test::as_double(got[0]) - exact);
      const double bound = 1e-6 * magnitude + std::abs(exact) * (std::is_same_v<T, float> ? 1e-7 : 8e-3);
      char detail[200];
      std::snprintf(detail, sizeof detail, "%.9g against the exact %.9g (the CPU's %.9g): error %.2e, bound %.2e",
                    gpu_test::as_double(got[0]), exact, gpu_test::as_double(want_y[0]), error, bound);
      report.expect(what + ": forward", error <= bound, detail);
      report.equal(what + ": deterministic (two runs, same bits)", dy_again.download(), got);
      report.close(what + ": backward dx (upstream 0.7, added to a gradient)", dgrad.download(), values(x.grad()),
                   tolerance<T>());
    });
  }
  const std::string what = name<T>("sum_of_squares", rows, cols);
  guarded(report, what, [&] {
    const auto x0 = random_values<T>(n, seed + 5);
    double want = 0;
    for (const T& v : x0) want += gpu_test::as_double(v) * gpu_test::as_double(v);
    Buffer<T> dx(x0);
    Buffer<float> out(1), workspace(static_cast<std::size_t>(cuda::full_sum_workspace(n)));
    out.poison();
    cuda::sum_of_squares(dx.data(), out.data(), n, workspace.data());
    // Float accumulation of exact squares (of bf16 inputs too): float's tolerance.
    report.close(what + ": against a double sum", out.download(), std::vector<double>{want}, 1e-5);
  });
}

}  // namespace

int main() {
  // The host-side checks (the CPU's error messages for bad ids and labels) need no
  // device: they run first, and fail the test even where the rest is skipped.
  {
    Report host("gpu/elem, host-side checks");
    test_embedding_errors<std::int32_t>(host, false);
    test_embedding_errors<std::int64_t>(host, false);
    test_cross_entropy_errors(host, false);
    if (host.finish() != 0) return 1;
  }
  gpu_test::require_device("gpu/elem");
  Report report("gpu/elem");
  unsigned seed = 100;

  for (const auto shape : kShapes) {
    for (const auto form : {cuda::GeluForm::erf, cuda::GeluForm::tanh}) {
      test_gelu<float>(report, form, shape, seed += 10);
      test_gelu<bf16>(report, form, shape, seed += 10);
      test_gelu<fp16>(report, form, shape, seed += 10);
    }
  }

  // Masks: sizes around the four-element Philox blocks and a large odd one; several
  // seeds, ranks, tensor ids, steps and probabilities.
  for (const index_t n : {1, 2, 3, 4, 5, 7, 8, 9, 111, 196611}) {
    test_dropout_mask(report, n, 0.1f, RandomStream{.seed = 42, .rank = 0, .tensor_id = 0, .step = 0});
  }
  for (const float p : {0.1f, 0.5f, 0.9f}) {
    test_dropout_mask(report, 1001, p, RandomStream{.seed = 7, .rank = 0, .tensor_id = 3, .step = 11});
    test_dropout_mask(report, 1001, p, RandomStream{.seed = 0x123456789abcULL, .rank = 3, .tensor_id = 250, .step = 1});
    test_dropout_mask(report, 1001, p, RandomStream{.seed = 99, .rank = 1, .tensor_id = 7, .step = 123456});
  }
  for (const auto shape : kShapes) {
    test_dropout<float>(report, shape, seed += 10);
    test_dropout<bf16>(report, shape, seed += 10);
    test_dropout<fp16>(report, shape, seed += 10);
  }

  // Embedding: a BERT-like lookup (rows x 768), odd and one-element tables.
  test_embedding<float, std::int32_t>(report, 1000, 768, 256, seed += 10);
  test_embedding<float, std::int64_t>(report, 1000, 768, 256, seed += 10);
  test_embedding<float, std::int32_t>(report, 3, 37, 7, seed += 10);
  test_embedding<float, std::int64_t>(report, 1, 1, 5, seed += 10);
  test_embedding<bf16, std::int32_t>(report, 1000, 768, 256, seed += 10);
  test_embedding<bf16, std::int64_t>(report, 3, 37, 6, seed += 10);
  test_embedding<bf16, std::int32_t>(report, 1, 1, 2, seed += 10);
  test_embedding_errors<std::int32_t>(report, true);
  test_embedding_errors<std::int64_t>(report, true);

  for (const auto shape : kShapes) {
    for (const auto masking : {Masking::none, Masking::some_rows_out, Masking::all_rows_out}) {
      test_cross_entropy<float>(report, shape, masking, seed += 10);
      test_cross_entropy<bf16>(report, shape, masking, seed += 10);
    }
  }
  test_cross_entropy<float>(report, {7, 2}, Masking::some_rows_out, seed += 10);
  test_cross_entropy_errors(report, true);

  for (const auto shape : kShapes) {
    for (const bool mean : {false, true}) {
      test_row_sums<float>(report, shape, mean, seed += 10);
      test_row_sums<bf16>(report, shape, mean, seed += 10);
    }
    test_column_sums<float>(report, shape, seed += 10);
    test_column_sums<bf16>(report, shape, seed += 10);
    test_full_sums<float>(report, shape, seed += 10);
    test_full_sums<bf16>(report, shape, seed += 10);
  }
  // Taller than one block of rows (column sums) and longer than one block (full sums).
  test_column_sums<float>(report, {1000, 5}, seed += 10);
  test_full_sums<float>(report, {1, 300001}, seed += 10);

  return report.finish();
}

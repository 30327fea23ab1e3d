#pragma once
// linear: y = x W^T + b, with W stored [out, in] as in Hugging Face checkpoints.
//
// Shape contract: x is Var<T, Shape<dyn, In>, D>, weight Var<T, Shape<Out, In>, D>,
// bias Var<T, Shape<Out>, D>; y is Var<T, Shape<dyn, Out>, D> (D: Cpu or Cuda).
// Backward: dx += dy W,  dW += dy^T x,  db += sum over rows of dy.
// CPU: the products run on kernels/cpu/matmul.hpp; the bias is added in one fused pass.
// CUDA: kernels/cuda/blas.cuh, cuda::linear_forward (one product, the bias in its
// epilogue; TF32 only when G is precision::Tf32Products) and cuda::linear_backward (the
// two products and the bias's column sums of the unrounded dy, as on the CPU).
// linear<G>: the products take their inputs rounded to element type G (bf16 under the
// Bf16Mixed policy) and accumulate in T; backward keeps the rounded x and W only.
//
// Several layers of one input (BERT's query, key and value) go through one call,
//   auto [q, k, v] = ops::linear<G>(tape, x, std::array{query, key, value});
// so that x is rounded to G once and kept once for backward.
//
// With bf16 products, and fp32 ones of few rows (linear_reuses_weights_for), the forward
// product takes each weight
// rounded to G and reordered into oneDNN's preferred layout, made once and kept with
// the weight (kernels/cpu/matmul.hpp, matmul_reused_weight) until the weight changes
// (any non-const Var::value() marks it changed): once for all of inference, once per
// optimizer step in training (shared by the step's accumulated micro-batches).
// Backward takes W as stored (rounded to G). On Cuda the forward does too: no reordered
// copy is kept (the oneDNN path is the CPU's).

#include <array>
#include <memory>
#include <string>

#include "ctdl/autograd/tape.hpp"
#include "ctdl/ops/dispatch.hpp"
#include "ctdl/ops/matmul.hpp"

#if CTDL_CUDA_OPS
#include "ctdl/kernels/cuda/blas.cuh"
#endif

namespace ctdl::ops {

/// Whether the forward product takes each weight rounded to G and reordered once per
/// weight version (see the header comment), for x with `rows` rows: float weights on
/// oneDNN, with bf16 products always, with fp32 products up to kFp32ReorderMaxRows rows.
/// Measured in the BERT-base step (docs/benchmarks.md): fp32 at 128 rows 12% faster
/// with the reordered weights, at 1,024 rows 3-7% slower than oneDNN's own packing of
/// the stored weights; bf16 as fast or faster at both, and the rounding is saved too.
inline constexpr index_t kFp32ReorderMaxRows = 256;
template <class G, class T>
inline constexpr bool linear_reuses_weights = kernels::cpu::has_reused_weight_matmul<G, T> && std::is_same_v<T, float>;
template <class G, class T>
bool linear_reuses_weights_for(index_t rows) {
  if constexpr (!linear_reuses_weights<G, T>) return false;
  else return !std::is_same_v<G, T> || rows <= kFp32ReorderMaxRows;
}

/// The parameters of one linear layer (nn::Linear::params()); a null bias: none.
template <class T, index_t In, index_t Out, Device D = Cpu>
struct LinearWeights {
  Var<T, Shape<Out, In>, D> weight;
  Var<T, Shape<Out>, D> bias;
};

template <class G = SameAsInput, class T, index_t In, index_t Out, index_t XIn, Device D>
Var<T, Shape<dyn, Out>, D> linear(Tape& tape, const Var<T, Shape<dyn, XIn>, D>& x,
                                  const Var<T, Shape<Out, In>, D>& weight, const Var<T, Shape<Out>, D>& bias);

/// y = x W^T without a bias (for a bias added by a fused op after it: BERT's bias + GELU,
/// bias + dropout + residual + LayerNorm).
template <class G = SameAsInput, class T, index_t In, index_t Out, index_t XIn, Device D>
Var<T, Shape<dyn, Out>, D> linear(Tape& tape, const Var<T, Shape<dyn, XIn>, D>& x,
                                  const Var<T, Shape<Out, In>, D>& weight);

/// N layers applied to the same x: {x W_0^T + b_0, ..., x W_{N-1}^T + b_{N-1}}.
template <class G = SameAsInput, class T, index_t In, index_t Out, index_t XIn, std::size_t N, Device D>
std::array<Var<T, Shape<dyn, Out>, D>, N> linear(Tape& tape, const Var<T, Shape<dyn, XIn>, D>& x,
                                                 const std::array<LinearWeights<T, In, Out, D>, N>& layers);

// ============================================================================

namespace detail {

template <class G, class T, index_t In, index_t Out, index_t XIn, std::size_t N, class D>
struct LinearEntry final : TapeEntry {
  GemmOperand<G, T, Shape<dyn, XIn>, D> x;
  std::array<GemmOperand<G, T, Shape<Out, In>, D>, N> w;
  std::array<GradRef<T, Shape<Out>, D>, N> b;
  std::array<GradRef<T, Shape<dyn, Out>, D>, N> y;
  LinearEntry(GemmOperand<G, T, Shape<dyn, XIn>, D> x_, std::array<GemmOperand<G, T, Shape<Out, In>, D>, N> w_,
              std::array<GradRef<T, Shape<Out>, D>, N> b_, std::array<GradRef<T, Shape<dyn, Out>, D>, N> y_)
      : x(std::move(x_)), w(std::move(w_)), b(std::move(b_)), y(std::move(y_)) {}
  bool tf32 = false;  // the products on TF32 tensor cores (a CUDA device, G = Tf32Products)
  const char* name() const override { return "linear"; }
  void backward() override {
    for (std::size_t i = 0; i < N; ++i) {
      if (!y[i].has_grad()) continue;
      const index_t n = x.extents()[0], in = x.extents()[1], out = w[i].extents()[0];
      decltype(auto) dy = as_gemm_input<G>(y[i].grad());
      const bool db_wanted = b[i].node_ptr() && b[i].requires_grad();
      if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
        // The products take dy rounded to G; the bias sum reads the stored dy.
        auto bias_workspace = Tensor<float, Shape<dyn>, Cuda>::uninitialized(
            {db_wanted ? static_cast<index_t>(cuda::linear_bias_workspace(n, out)) : 0});
        cuda::linear_backward<G, T>(dy.data(), y[i].grad().data(), x.data(), w[i].data(),
                                    x.requires_grad() ? x.grad_data() : nullptr,
                                    w[i].requires_grad() ? w[i].grad_data() : nullptr,
                                    db_wanted ? b[i].node_ptr()->grad_data() : nullptr, n, in, out,
                                    bias_workspace.data(), tf32);
#endif
      } else {
        if (x.requires_grad()) {  // dx (n x in) += dy (n x out) W (out x in)
          kernels::cpu::matmul(dy.data(), w[i].data(), x.grad_data(), {1, n, in, out, false, false}, 1.0f);
        }
        if (w[i].requires_grad()) {  // dW (out x in) += dy^T (out x n) x (n x in)
          kernels::cpu::matmul(dy.data(), x.data(), w[i].grad_data(), {1, out, in, n, true, false}, 1.0f);
        }
        if (db_wanted) b[i].node_ptr()->accumulate(lazy(y[i].grad()));
      }
    }
  }
};

}  // namespace detail

template <class GIn, class T, index_t In, index_t Out, index_t XIn, std::size_t N, Device D>
std::array<Var<T, Shape<dyn, Out>, D>, N> linear(Tape& tape, const Var<T, Shape<dyn, XIn>, D>& x,
                                                 const std::array<LinearWeights<T, In, Out, D>, N>& layers) {
  using G = gemm_input_t<GIn, T>;
  require_kernels<D>();
  static_assert(In == dyn || XIn == dyn || In == XIn, "linear: x's width differs from the weight's input width");
  const index_t n = x.extents()[0], in = x.extents()[1];
  bool needs_grad = tape.recording() && x.requires_grad();
  for (const auto& l : layers) {
    if (l.weight.extents()[1] != in || (l.bias && l.bias.extents()[0] != l.weight.extents()[0])) {
      throw ShapeError("linear: x " + describe<Shape<dyn, XIn>>(x.extents()) + ", weight " +
                       describe<Shape<Out, In>>(l.weight.extents()) + ", bias " +
                       (l.bias ? describe<Shape<Out>>(l.bias.extents()) : std::string("none")) +
                       " do not fit y = x W^T + b");
    }
    needs_grad = needs_grad || (tape.recording() && (l.weight.requires_grad() || (l.bias && l.bias.requires_grad())));
  }

  using WeightOperand = GemmOperand<G, T, Shape<Out, In>, D>;
  GemmOperand<G, T, Shape<dyn, XIn>, D> xg(x);
  std::array<WeightOperand, N> wg;
  std::array<GradRef<T, Shape<Out>, D>, N> bias_refs;
  std::array<GradRef<T, Shape<dyn, Out>, D>, N> y_refs;
  std::array<Var<T, Shape<dyn, Out>, D>, N> ys;
  for (std::size_t i = 0; i < N; ++i) {
    const auto& l = layers[i];
    const index_t out = l.weight.extents()[0];
    auto value = Tensor<T, Shape<dyn, Out>, D>::uninitialized({n, out});
    if (needs_grad) wg[i] = WeightOperand(l.weight);  // as backward's dx = dy W takes it
    if constexpr (on_cuda<D>) {
#if CTDL_CUDA_OPS
      // One product with the bias in its epilogue (no GELU; TF32 only under G = Tf32Products).
      WeightOperand inference_only;
      const auto& w = needs_grad ? wg[i] : (inference_only = WeightOperand(l.weight));
      cuda::linear_forward<G, T>(xg.data(), w.data(), l.bias ? l.bias.value().data() : nullptr, value.data(), n, in,
                                 out, /*gelu=*/false, tf32_products<GIn>);
#endif
    } else {
      bool done = false;
      if constexpr (linear_reuses_weights<G, T>) {
        if (linear_reuses_weights_for<G, T>(n)) {  // the weight reordered once per version, not per call
          auto& node = *l.weight.node_ptr();
          kernels::cpu::matmul_reused_weight(xg.data(), node.value.data(), node.version, node.kernel_cache,
                                             value.data(), n, out, in);
          done = true;
        }
      }
      if (!done) {
        WeightOperand inference_only;
        const auto& w = needs_grad ? wg[i] : (inference_only = WeightOperand(l.weight));
        kernels::cpu::matmul(xg.data(), w.data(), value.data(), {1, n, out, in, false, true}, 0.0f);
      }
      if (l.bias) value += lazy(l.bias.value());
    }
    ys[i] = make_result(std::move(value), needs_grad);
    if (l.bias) bias_refs[i] = l.bias;
    y_refs[i] = ys[i];
  }
  if (needs_grad) {
    auto entry = std::make_unique<detail::LinearEntry<G, T, In, Out, XIn, N, D>>(
        std::move(xg), std::move(wg), std::move(bias_refs), std::move(y_refs));
    entry->tf32 = tf32_products<GIn>;
    tape.push(std::move(entry));
  }
  return ys;
}

template <class G, class T, index_t In, index_t Out, index_t XIn, Device D>
Var<T, Shape<dyn, Out>, D> linear(Tape& tape, const Var<T, Shape<dyn, XIn>, D>& x,
                                  const Var<T, Shape<Out, In>, D>& weight, const Var<T, Shape<Out>, D>& bias) {
  return linear<G>(tape, x, std::array{LinearWeights<T, In, Out, D>{weight, bias}})[0];
}

template <class G, class T, index_t In, index_t Out, index_t XIn, Device D>
Var<T, Shape<dyn, Out>, D> linear(Tape& tape, const Var<T, Shape<dyn, XIn>, D>& x,
                                  const Var<T, Shape<Out, In>, D>& weight) {
  return linear<G>(tape, x, std::array{LinearWeights<T, In, Out, D>{weight, {}}})[0];
}

}  // namespace ctdl::ops

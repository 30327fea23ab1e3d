#pragma once
// The basic modules: Linear, LayerNorm, Embedding. Parameter names follow PyTorch /
// Hugging Face ("weight", "bias"), so checkpoint keys map onto fields directly. D is the
// device the parameters live on (Cpu by default; Cuda: their ops run the CUDA kernels).

#include "ctdl/nn/module.hpp"
#include "ctdl/ops/embedding.hpp"
#include "ctdl/ops/layer_norm.hpp"
#include "ctdl/ops/linear.hpp"

namespace ctdl::nn {

/// y = x W^T + b, W stored [Out, In].
template <class T, index_t In, index_t Out, Device D = Cpu>
struct Linear {
  Var<T, Shape<Out, In>, D> weight;
  Var<T, Shape<Out>, D> bias;
  static constexpr std::array names{"weight", "bias"};

  /// Zero parameters of the given extents (the static ones must agree); the bias gets
  /// no weight decay.
  static Linear make(index_t in, index_t out) {
    Linear l{Var<T, Shape<Out, In>, D>(Tensor<T, Shape<Out, In>, D>({out, in})),
             Var<T, Shape<Out>, D>(Tensor<T, Shape<Out>, D>({out}))};
    l.bias.set_weight_decay(false);
    return l;
  }
  template <index_t XIn>
  Var<T, Shape<dyn, Out>, D> operator()(Context& ctx, const Var<T, Shape<dyn, XIn>, D>& x) const {
    return ops::linear(ctx.tape, x, weight, bias);
  }
  /// The parameters as ops::linear takes several layers of one input.
  ops::LinearWeights<T, In, Out, D> params() const { return {weight, bias}; }
};

/// LayerNorm over the last axis; `weight` is gamma, `bias` is beta (no weight decay).
template <class T, index_t H, Device D = Cpu>
struct LayerNorm {
  Var<T, Shape<H>, D> weight;
  Var<T, Shape<H>, D> bias;
  double eps = 1e-12;
  static constexpr std::array names{"weight", "bias"};

  static LayerNorm make(index_t h, double eps) {
    LayerNorm l{Var<T, Shape<H>, D>(Tensor<T, Shape<H>, D>::full({h}, T(1))),
                Var<T, Shape<H>, D>(Tensor<T, Shape<H>, D>({h})), eps};
    l.weight.set_weight_decay(false);
    l.bias.set_weight_decay(false);
    return l;
  }
  template <class S>
  Var<T, S, D> operator()(Context& ctx, const Var<T, S, D>& x) const {
    return ops::layer_norm(ctx.tape, x, weight, bias, eps);
  }
};

/// A table of `rows` vectors of width H, looked up by id.
template <class T, index_t H, Device D = Cpu>
struct Embedding {
  Var<T, Shape<dyn, H>, D> weight;
  static constexpr std::array names{"weight"};
  // nvcc's front end cannot count the fields of a one-field aggregate (nn::fields).
  auto tie() { return std::tie(weight); }
  auto tie() const { return std::tie(weight); }

  static Embedding make(index_t rows, index_t h) {
    return {Var<T, Shape<dyn, H>, D>(Tensor<T, Shape<dyn, H>, D>({rows, h}))};
  }
  /// ids: a host tensor on either device (checked there, as ops::embedding does).
  template <class I, class SI>
  Var<T, Shape<dyn, H>, D> operator()(Context& ctx, const Tensor<I, SI>& ids) const {
    return ops::embedding(ctx.tape, weight, ids);
  }
};

}  // namespace ctdl::nn

#pragma once
// BERT as in Google's modeling.py (post-LayerNorm encoder), assembled from ctdl modules,
// with Hugging Face's module and parameter names so that checkpoint keys are field paths:
//
//   bert.embeddings.{word,position,token_type}_embeddings.weight, bert.embeddings.LayerNorm.*
//   bert.encoder.layer.N.attention.self.{query,key,value}.*
//   bert.encoder.layer.N.attention.output.{dense,LayerNorm}.*
//   bert.encoder.layer.N.intermediate.dense.*, bert.encoder.layer.N.output.{dense,LayerNorm}.*
//   bert.pooler.dense.*, classifier.*
//
// Shapes: a batch of B sequences of S tokens is processed as B*S rows of width H; the
// hidden width H, heads and intermediate width come from the family F (types; from
// BertConfig for the runtime-shaped bert::Dynamic), the rest (layers, vocabulary,
// positions, token types, labels) from BertConfig at run time.
//
// Forward of one encoder layer (x: B*S x H):
//   a  = LayerNorm(x + dropout(attention(x) W_o^T + b_o))
//   y  = LayerNorm(a + dropout(act(a W_i^T + b_i) W_out^T + b_out))
// with act the erf or tanh GELU. Fused: query, key and value are one linear call (x
// rounded once under Bf16Mixed); bias + GELU is one expression (forward and backward);
// bias + dropout + residual + LayerNorm is one op (ops/fused_layer_norm.hpp), as is
// the embeddings' word + position + token type + LayerNorm.
// Pooler: tanh(dense(hidden state of each sequence's first token)).

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ctdl/core/batch.hpp"
#include "ctdl/models/bert/config.hpp"
#include "ctdl/nn/layers.hpp"
#include "ctdl/ops/attention.hpp"
#include "ctdl/ops/cross_entropy.hpp"
#include "ctdl/ops/dropout.hpp"
#include "ctdl/ops/fused_layer_norm.hpp"
#include "ctdl/ops/matmul.hpp"

namespace ctdl::bert {

/// A batch of token sequences: B x S ids, token types and attention mask (1 = real
/// token, 0 = padding); the same type the data pipeline fills (core/batch.hpp).
using Batch = ctdl::Batch;

template <class T, class F, Device D = Cpu>
struct BertEmbeddings {
  static constexpr index_t H = F::hidden;
  nn::Embedding<T, H, D> word_embeddings, position_embeddings, token_type_embeddings;
  nn::LayerNorm<T, H, D> LayerNorm;
  static constexpr std::array names{"word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"};
};

template <class T, class F, Device D = Cpu>
struct BertSelfAttention {
  nn::Linear<T, F::hidden, F::hidden, D> query, key, value;
  static constexpr std::array names{"query", "key", "value"};
};

template <class T, class F, Device D = Cpu>
struct BertSelfOutput {
  nn::Linear<T, F::hidden, F::hidden, D> dense;
  nn::LayerNorm<T, F::hidden, D> LayerNorm;
  static constexpr std::array names{"dense", "LayerNorm"};
};

template <class T, class F, Device D = Cpu>
struct BertAttention {
  BertSelfAttention<T, F, D> self;
  BertSelfOutput<T, F, D> output;
  static constexpr std::array names{"self", "output"};
};

template <class T, class F, Device D = Cpu>
struct BertIntermediate {
  nn::Linear<T, F::hidden, F::intermediate, D> dense;
  static constexpr std::array names{"dense"};
  auto tie() { return std::tie(dense); }  // nvcc: see BertEncoder
  auto tie() const { return std::tie(dense); }
};

template <class T, class F, Device D = Cpu>
struct BertOutput {
  nn::Linear<T, F::intermediate, F::hidden, D> dense;
  nn::LayerNorm<T, F::hidden, D> LayerNorm;
  static constexpr std::array names{"dense", "LayerNorm"};
};

template <class T, class F, Device D = Cpu>
struct BertLayer {
  BertAttention<T, F, D> attention;
  BertIntermediate<T, F, D> intermediate;
  BertOutput<T, F, D> output;
  static constexpr std::array names{"attention", "intermediate", "output"};
};

template <class T, class F, Device D = Cpu>
struct BertEncoder {
  std::vector<BertLayer<T, F, D>> layer;
  static constexpr std::array names{"layer"};
  // The fields for nn::fields: nvcc's front end cannot count the fields of an aggregate
  // that has only one (Boost.PFR's count is ambiguous there).
  auto tie() { return std::tie(layer); }
  auto tie() const { return std::tie(layer); }
};

template <class T, class F, Device D = Cpu>
struct BertPooler {
  nn::Linear<T, F::hidden, F::hidden, D> dense;
  static constexpr std::array names{"dense"};
  auto tie() { return std::tie(dense); }  // nvcc: see BertEncoder
  auto tie() const { return std::tie(dense); }
};

/// Stands in for the pooler of a model built without one (Hugging Face's
/// add_pooling_layer=False, as in BertForTokenClassification): not a module, not visited.
struct NoPooler {};

/// BERT. T: element type of parameters and activations; F: the shape family; P: the
/// precision policy (ctdl/precision/policy.hpp), which says in what type matmuls take
/// their inputs; D: the device of parameters and activations (Cuda: compile the file
/// that instantiates it with nvcc; nn::to_device copies a model between devices). The
/// batch stays on the host: ids are checked there and copied up by the ops.
template <class T, class F, class P, bool WithPooler = true, Device D = Cpu>
struct BertModel {
  using Hidden = Var<T, ctdl::Shape<dyn, F::hidden>, D>;
  BertEmbeddings<T, F, D> embeddings;
  BertEncoder<T, F, D> encoder;
  std::conditional_t<WithPooler, BertPooler<T, F, D>, NoPooler> pooler;
  BertConfig config;
  static constexpr auto names = [] {
    if constexpr (WithPooler) return std::array{"embeddings", "encoder", "pooler"};
    else return std::array{"embeddings", "encoder"};
  }();

  /// Zero-filled parameters of the configured sizes (call init_weights or load a
  /// checkpoint next).
  static BertModel make(const BertConfig& c);

  struct Output {
    Hidden sequence;  // B*S x H, the last layer's hidden states
    Hidden pooled;    // B x H (null without a pooler)
  };
  Output forward(nn::Context& ctx, const Batch& batch) const;
};

/// BertForSequenceClassification: dropout on the pooled output, then a linear layer to
/// num_labels (the span classifier of the original pipeline).
template <class T, class F, class P, Device D = Cpu>
struct BertForSequenceClassification {
  using Policy = P;
  BertModel<T, F, P, true, D> bert;
  nn::Linear<T, F::hidden, dyn, D> classifier;
  static constexpr std::array names{"bert", "classifier"};

  static BertForSequenceClassification make(const BertConfig& c, index_t num_labels) {
    return {BertModel<T, F, P, true, D>::make(c), nn::Linear<T, F::hidden, dyn, D>::make(c.hidden_size, num_labels)};
  }
  struct Output {
    Var<T, ctdl::Shape<dyn, dyn>, D> logits;               // B x num_labels
    typename BertModel<T, F, P, true, D>::Hidden pooled;  // B x H, the pooler's output (before dropout)
  };
  /// The logits and the pooled vectors they were computed from (predict's --write_npy).
  Output forward_with_pooled(nn::Context& ctx, const Batch& batch) const {
    const auto pooled = bert.forward(ctx, batch).pooled;
    auto x = pooled;
    if (ctx.training) x = ops::dropout(ctx.tape, x, static_cast<float>(bert.config.classifier_dropout), ctx.next_stream());
    return {ops::linear<typename P::template gemm_t<T>>(ctx.tape, x, classifier.weight, classifier.bias), pooled};
  }
  /// B x num_labels logits.
  Var<T, ctdl::Shape<dyn, dyn>, D> forward(nn::Context& ctx, const Batch& batch) const {
    return forward_with_pooled(ctx, batch).logits;
  }
};

/// BertForTokenClassification: dropout on every token's hidden state, then a linear
/// layer to num_labels. Like Hugging Face's, its BERT has no pooler.
template <class T, class F, class P, Device D = Cpu>
struct BertForTokenClassification {
  using Policy = P;
  BertModel<T, F, P, false, D> bert;
  nn::Linear<T, F::hidden, dyn, D> classifier;
  static constexpr std::array names{"bert", "classifier"};

  static BertForTokenClassification make(const BertConfig& c, index_t num_labels) {
    return {BertModel<T, F, P, false, D>::make(c), nn::Linear<T, F::hidden, dyn, D>::make(c.hidden_size, num_labels)};
  }
  /// B*S x num_labels logits.
  Var<T, ctdl::Shape<dyn, dyn>, D> forward(nn::Context& ctx, const Batch& batch) const {
    auto seq = bert.forward(ctx, batch).sequence;
    if (ctx.training) seq = ops::dropout(ctx.tape, seq, static_cast<float>(bert.config.classifier_dropout), ctx.next_stream());
    return ops::linear<typename P::template gemm_t<T>>(ctx.tape, seq, classifier.weight, classifier.bias);
  }
};

}  // namespace ctdl::bert

namespace ctdl::nn {
template <class T, class F, class P, bool WithPooler, class D, class To>
struct rebind_device<bert::BertModel<T, F, P, WithPooler, D>, To> {
  using type = bert::BertModel<T, F, P, WithPooler, To>;
};
template <class T, class F, class P, class D, class To>
struct rebind_device<bert::BertForSequenceClassification<T, F, P, D>, To> {
  using type = bert::BertForSequenceClassification<T, F, P, To>;
};
template <class T, class F, class P, class D, class To>
struct rebind_device<bert::BertForTokenClassification<T, F, P, D>, To> {
  using type = bert::BertForTokenClassification<T, F, P, To>;
};
}  // namespace ctdl::nn

namespace ctdl::bert {

/// BERT's initialisation: weights from a normal(0, initializer_range) truncated at two
/// standard deviations, biases 0, LayerNorm gamma 1 and beta 0.
template <nn::Module M>
void init_weights(M& model, double initializer_range, std::uint64_t seed);

// ============================================================================

template <class T, class F, class P, bool WithPooler, Device D>
BertModel<T, F, P, WithPooler, D> BertModel<T, F, P, WithPooler, D>::make(const BertConfig& c) {
  check_family<F>(c);
  // The extents as types (static, or dyn for Dynamic) and as values (from the config).
  constexpr index_t SH = F::hidden, SI = F::intermediate;
  const index_t H = c.hidden_size, I = c.intermediate_size;
  BertModel m;
  m.config = c;
  using E = nn::Embedding<T, SH, D>;
  using N = nn::LayerNorm<T, SH, D>;
  m.embeddings = {E::make(c.vocab_size, H), E::make(c.max_position_embeddings, H), E::make(c.type_vocab_size, H),
                  N::make(H, c.layer_norm_eps)};
  for (index_t i = 0; i < c.num_hidden_layers; ++i) {
    using L = nn::Linear<T, SH, SH, D>;
    m.encoder.layer.push_back({{{L::make(H, H), L::make(H, H), L::make(H, H)}, {L::make(H, H), N::make(H, c.layer_norm_eps)}},
                               {nn::Linear<T, SH, SI, D>::make(H, I)},
                               {nn::Linear<T, SI, SH, D>::make(I, H), N::make(H, c.layer_norm_eps)}});
  }
  if constexpr (WithPooler) m.pooler = {nn::Linear<T, SH, SH, D>::make(H, H)};
  return m;
}

namespace detail {

/// Row indices b * S + 0: each sequence's first ([CLS]) token.
inline Tensor<std::int32_t, ctdl::Shape<dyn>> first_token_rows(index_t batch, index_t seq) {
  auto rows = Tensor<std::int32_t, ctdl::Shape<dyn>>::uninitialized({batch});
  for (index_t b = 0; b < batch; ++b) rows.data()[b] = static_cast<std::int32_t>(b * seq);
  return rows;
}

/// x W^T + b followed by the activation, the bias and activation fused in one expression.
template <class G, class T, index_t In, index_t Out, class D>
Var<T, ctdl::Shape<dyn, Out>, D> linear_gelu(nn::Context& ctx, const Var<T, ctdl::Shape<dyn, In>, D>& x,
                                             const nn::Linear<T, In, Out, D>& l, Activation act) {
  auto xw = ops::linear<G>(ctx.tape, x, l.weight);
  if (act == Activation::gelu_erf) return ctx.tape.record(gelu(xw + l.bias));
  return ctx.tape.record(gelu_tanh(xw + l.bias));
}

}  // namespace detail

template <class T, class F, class P, bool WithPooler, Device D>
typename BertModel<T, F, P, WithPooler, D>::Output BertModel<T, F, P, WithPooler, D>::forward(nn::Context& ctx,
                                                                                              const Batch& batch) const {
  using G = typename P::template gemm_t<T>;
  const index_t b = batch.batch(), s = batch.seq_len();
  if (s > config.max_position_embeddings) {
    throw Error("BERT: sequence length " + std::to_string(s) + " exceeds max_position_embeddings " +
                std::to_string(config.max_position_embeddings));
  }
  if (batch.token_type_ids.extents() != batch.input_ids.extents() ||
      batch.attention_mask.extents() != batch.input_ids.extents()) {
    throw ShapeError("BERT: input_ids " + format_extents(batch.input_ids.extents()) + ", token_type_ids " +
                     format_extents(batch.token_type_ids.extents()) + " and attention_mask " +
                     format_extents(batch.attention_mask.extents()) + " differ");
  }
  Tape& tape = ctx.tape;
  const auto hidden_dropout = static_cast<float>(config.hidden_dropout_prob);
  auto dropout = [&](const Hidden& x) { return ctx.training ? ops::dropout(tape, x, hidden_dropout, ctx.next_stream()) : x; };

  // Embeddings: word + position + token type, LayerNorm, dropout.
  auto positions = Tensor<std::int32_t, ctdl::Shape<dyn, dyn>>::uninitialized({b, s});
  for (index_t i = 0; i < b * s; ++i) positions.data()[i] = static_cast<std::int32_t>(i % s);
  const auto& e = embeddings;
  Hidden x = dropout(ops::embedding_layer_norm(
      tape, std::array{e.word_embeddings.weight, e.position_embeddings.weight, e.token_type_embeddings.weight},
      std::array{&batch.input_ids, &std::as_const(positions), &batch.token_type_ids}, e.LayerNorm.weight,
      e.LayerNorm.bias, e.LayerNorm.eps));

  // BERT's additive attention mask: (1 - mask) * -10000 for every key position.
  const auto mask_add =
      to_device<D>(Tensor<T, ctdl::Shape<dyn, dyn>>(cast<T>((1 - cast<float>(batch.attention_mask)) * -10000.0f)));
  const auto attn_dropout = ctx.training ? static_cast<float>(config.attention_probs_dropout_prob) : 0.0f;
  // dropout(h + bias) + residual, then LayerNorm, in one op.
  auto add_norm = [&](const Hidden& h, const auto& dense, const Hidden& residual, const auto& norm) {
    return ops::add_layer_norm(tape, h, dense.bias, residual, norm.weight, norm.bias,
                               {.dropout = ctx.training ? hidden_dropout : 0.0f,
                                .stream = ctx.training ? ctx.next_stream() : RandomStream{},
                                .eps = norm.eps});
  };

  for (const auto& layer : encoder.layer) {
    const auto& sa = layer.attention.self;
    auto [q, k, v] = ops::linear<G>(tape, x, std::array{sa.query.params(), sa.key.params(), sa.value.params()});
    auto context = ops::attention<G>(tape, q, k, v, mask_add,
                                     {.heads = F::heads_of(config), .dropout = attn_dropout, .stream = ctx.next_stream()});
    const auto& ao = layer.attention.output;
    Hidden a = add_norm(ops::linear<G>(tape, context, ao.dense.weight), ao.dense, x, ao.LayerNorm);
    auto inter = detail::linear_gelu<G>(ctx, a, layer.intermediate.dense, config.hidden_act);
    const auto& out = layer.output;
    x = add_norm(ops::linear<G>(tape, inter, out.dense.weight), out.dense, a, out.LayerNorm);
  }

  if constexpr (WithPooler) {
    auto first = ops::embedding(tape, x, detail::first_token_rows(b, s));
    auto pooled_pre = ops::linear<G>(tape, first, pooler.dense.weight);
    Hidden pooled = tape.record(tanh(pooled_pre + pooler.dense.bias));
    return {x, pooled};
  } else {
    return {x, Hidden()};
  }
}

template <nn::Module M>
void init_weights(M& model, double initializer_range, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, initializer_range);
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    using V = std::remove_cvref_t<decltype(p)>;
    using T = typename V::value_type;
    // Drawn on the host (the same numbers on every device), then copied to p's device.
    auto v = Tensor<T, typename V::shape_type>::uninitialized(p.extents());
    const bool is_bias = name.ends_with(".bias");
    const bool is_gamma = name.ends_with("LayerNorm.weight");
    for (index_t i = 0; i < v.size(); ++i) {
      double x = 0;
      if (is_gamma) {
        x = 1;
      } else if (!is_bias) {
        do x = normal(rng);
        while (std::abs(x) > 2 * initializer_range);
      }
      v.data()[i] = convert<T>(x);
    }
    p.value() = to_device<typename V::device_type>(std::move(v));
  });
}

}  // namespace ctdl::bert

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

template <class T, class F>
struct BertEmbeddings {
  static constexpr index_t H = F::hidden;
  nn::Embedding<T, H> word_embeddings, position_embeddings, token_type_embeddings;
  nn::LayerNorm<T, H> LayerNorm;
  static constexpr std::array names{"word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"};
};

template <class T, class F>
struct BertSelfAttention {
  nn::Linear<T, F::hidden, F::hidden> query, key, value;
  static constexpr std::array names{"query", "key", "value"};
};

template <class T, class F>
struct BertSelfOutput {
  nn::Linear<T, F::hidden, F::hidden> dense;
  nn::LayerNorm<T, F::hidden> LayerNorm;
  static constexpr std::array names{"dense", "LayerNorm"};
};

template <class T, class F>
struct BertAttention {
  BertSelfAttention<T, F> self;
  BertSelfOutput<T, F> output;
  static constexpr std::array names{"self", "output"};
};

template <class T, class F>
struct BertIntermediate {
  nn::Linear<T, F::hidden, F::intermediate> dense;
  static constexpr std::array names{"dense"};
};

template <class T, class F>
struct BertOutput {
  nn::Linear<T, F::intermediate, F::hidden> dense;
  nn::LayerNorm<T, F::hidden> LayerNorm;
  static constexpr std::array names{"dense", "LayerNorm"};
};

template <class T, class F>
struct BertLayer {
  BertAttention<T, F> attention;
  BertIntermediate<T, F> intermediate;
  BertOutput<T, F> output;
  static constexpr std::array names{"attention", "intermediate", "output"};
};

template <class T, class F>
struct BertEncoder {
  std::vector<BertLayer<T, F>> layer;
  static constexpr std::array names{"layer"};
};

template <class T, class F>
struct BertPooler {
  nn::Linear<T, F::hidden, F::hidden> dense;
  static constexpr std::array names{"dense"};
};

/// Stands in for the pooler of a model built without one (Hugging Face's
/// add_pooling_layer=False, as in BertForTokenClassification): not a module, not visited.
struct NoPooler {};

/// BERT. T: element type of parameters and activations; F: the shape family; P: the
/// precision policy (ctdl/precision/policy.hpp), which says in what type matmuls take
/// their inputs.
template <class T, class F, class P, bool WithPooler = true>
struct BertModel {
  using Hidden = Var<T, ctdl::Shape<dyn, F::hidden>>;
  BertEmbeddings<T, F> embeddings;
  BertEncoder<T, F> encoder;
  std::conditional_t<WithPooler, BertPooler<T, F>, NoPooler> pooler;
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
template <class T, class F, class P>
struct BertForSequenceClassification {
  using Policy = P;
  BertModel<T, F, P> bert;
  nn::Linear<T, F::hidden, dyn> classifier;
  static constexpr std::array names{"bert", "classifier"};

  static BertForSequenceClassification make(const BertConfig& c, index_t num_labels) {
    return {BertModel<T, F, P>::make(c), nn::Linear<T, F::hidden, dyn>::make(c.hidden_size, num_labels)};
  }
  struct Output {
    Var<T, ctdl::Shape<dyn, dyn>> logits;            // B x num_labels
    typename BertModel<T, F, P>::Hidden pooled;      // B x H, the pooler's output (before dropout)
  };
  /// The logits and the pooled vectors they were computed from (predict's --write_npy).
  Output forward_with_pooled(nn::Context& ctx, const Batch& batch) const {
    const auto pooled = bert.forward(ctx, batch).pooled;
    auto x = pooled;
    if (ctx.training) x = ops::dropout(ctx.tape, x, static_cast<float>(bert.config.classifier_dropout), ctx.next_stream());
    return {ops::linear<typename P::template gemm_t<T>>(ctx.tape, x, classifier.weight, classifier.bias), pooled};
  }
  /// B x num_labels logits.
  Var<T, ctdl::Shape<dyn, dyn>> forward(nn::Context& ctx, const Batch& batch) const {
    return forward_with_pooled(ctx, batch).logits;
  }
};

/// BertForTokenClassification: dropout on every token's hidden state, then a linear
/// layer to num_labels. Like Hugging Face's, its BERT has no pooler.
template <class T, class F, class P>
struct BertForTokenClassification {
  using Policy = P;
  BertModel<T, F, P, false> bert;
  nn::Linear<T, F::hidden, dyn> classifier;
  static constexpr std::array names{"bert", "classifier"};

  static BertForTokenClassification make(const BertConfig& c, index_t num_labels) {
    return {BertModel<T, F, P, false>::make(c), nn::Linear<T, F::hidden, dyn>::make(c.hidden_size, num_labels)};
  }
  /// B*S x num_labels logits.
  Var<T, ctdl::Shape<dyn, dyn>> forward(nn::Context& ctx, const Batch& batch) const {
    auto seq = bert.forward(ctx, batch).sequence;
    if (ctx.training) seq = ops::dropout(ctx.tape, seq, static_cast<float>(bert.config.classifier_dropout), ctx.next_stream());
    return ops::linear<typename P::template gemm_t<T>>(ctx.tape, seq, classifier.weight, classifier.bias);
  }
};

/// BERT's initialisation: weights from a normal(0, initializer_range) truncated at two
/// standard deviations, biases 0, LayerNorm gamma 1 and beta 0.
template <nn::Module M>
void init_weights(M& model, double initializer_range, std::uint64_t seed);

// ============================================================================

template <class T, class F, class P, bool WithPooler>
BertModel<T, F, P, WithPooler> BertModel<T, F, P, WithPooler>::make(const BertConfig& c) {
  check_family<F>(c);
  // The extents as types (static, or dyn for Dynamic) and as values (from the config).
  constexpr index_t SH = F::hidden, SI = F::intermediate;
  const index_t H = c.hidden_size, I = c.intermediate_size;
  BertModel m;
  m.config = c;
  m.embeddings = {nn::Embedding<T, SH>::make(c.vocab_size, H), nn::Embedding<T, SH>::make(c.max_position_embeddings, H),
                  nn::Embedding<T, SH>::make(c.type_vocab_size, H), nn::LayerNorm<T, SH>::make(H, c.layer_norm_eps)};
  for (index_t i = 0; i < c.num_hidden_layers; ++i) {
    using L = nn::Linear<T, SH, SH>;
    m.encoder.layer.push_back(
        {{{L::make(H, H), L::make(H, H), L::make(H, H)}, {L::make(H, H), nn::LayerNorm<T, SH>::make(H, c.layer_norm_eps)}},
         {nn::Linear<T, SH, SI>::make(H, I)},
         {nn::Linear<T, SI, SH>::make(I, H), nn::LayerNorm<T, SH>::make(H, c.layer_norm_eps)}});
  }
  if constexpr (WithPooler) m.pooler = {nn::Linear<T, SH, SH>::make(H, H)};
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
template <class G, class T, index_t In, index_t Out>
Var<T, ctdl::Shape<dyn, Out>> linear_gelu(nn::Context& ctx, const Var<T, ctdl::Shape<dyn, In>>& x,
                                          const nn::Linear<T, In, Out>& l, Activation act) {
  auto xw = ops::linear<G>(ctx.tape, x, l.weight);
  if (act == Activation::gelu_erf) return ctx.tape.record(gelu(xw + l.bias));
  return ctx.tape.record(gelu_tanh(xw + l.bias));
}

}  // namespace detail

template <class T, class F, class P, bool WithPooler>
typename BertModel<T, F, P, WithPooler>::Output BertModel<T, F, P, WithPooler>::forward(nn::Context& ctx,
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
  Tensor<T, ctdl::Shape<dyn, dyn>> mask_add = cast<T>((1 - cast<float>(batch.attention_mask)) * -10000.0f);
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
    using T = typename std::remove_cvref_t<decltype(p)>::value_type;
    auto& v = p.value();
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
  });
}

}  // namespace ctdl::bert

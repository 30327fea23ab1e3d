#pragma once
// The tiny BERT the GPU tests of whole models share (gpu/bert, gpu/nccl_data_parallel):
// its config, a batch with padding, and a model's values or gradients by name.
#include <ctdl/models/bert/model.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "gpu/ops_twin.hpp"

namespace ctdl::tiny_bert {

inline bert::BertConfig tiny_config() {
  bert::BertConfig c;
  c.vocab_size = 100;
  c.hidden_size = 128;
  c.num_attention_heads = 2;
  c.intermediate_size = 512;
  c.num_hidden_layers = 2;
  c.max_position_embeddings = 64;
  c.hidden_act = bert::Activation::gelu_tanh;  // the original pipeline's (modeling.py)
  return c;
}

/// 4 sequences of 16 tokens; the last two padded (attention mask 0), labels in [0, 5).
inline Batch tiny_batch() {
  const index_t b = 4, s = 16;
  Batch batch{Batch::Ids({b, s}), Batch::Ids({b, s}), Batch::Ids({b, s}), Tensor<std::int32_t, Shape<dyn>>({b})};
  for (index_t i = 0; i < b; ++i) {
    const index_t real = i < 2 ? s : s - 5 - i;
    for (index_t t = 0; t < s; ++t) {
      const index_t k = i * s + t;
      batch.input_ids.data()[k] = t < real ? static_cast<std::int32_t>((7 * k + 3) % 99 + 1) : 0;
      batch.token_type_ids.data()[k] = t >= real / 2 && t < real ? 1 : 0;
      batch.attention_mask.data()[k] = t < real ? 1 : 0;
    }
    batch.labels.data()[i] = static_cast<std::int32_t>((3 * i + 1) % 5);
  }
  return batch;
}

/// Every parameter's value or gradient, by name, as host floats.
template <class M>
std::map<std::string, std::vector<float>> by_name(M& model, bool grads) {
  std::map<std::string, std::vector<float>> out;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    const auto v = ops_twin::values(grads ? p.grad() : p.value());
    out[name] = std::vector<float>(v.begin(), v.end());
  });
  return out;
}

/// The largest |value| over every tensor of a by_name map: 1e-2 of it is the floor below
/// which differences count against the model's scale (Report::close's floor).
inline double largest(const std::map<std::string, std::vector<float>>& tensors) {
  double m = 0;
  for (const auto& [name, v] : tensors)
    for (const float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

/// Whether training leaves this parameter's value arbitrary: the attention key bias's
/// gradient is zero in exact arithmetic (softmax ignores a per-row constant), so each
/// device trains it on its own rounding noise, which AdamW's normalised steps turn into
/// updates of the learning rate's size; it changes no output, so two runs compare their
/// outputs and the other weights, not it.
inline bool trained_on_noise(const std::string& name) {
  return name.ends_with("attention.self.key.bias");
}

}  // namespace ctdl::tiny_bert

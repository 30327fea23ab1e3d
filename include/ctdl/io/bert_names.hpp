#pragma once
// Google's BERT variable names (modeling.py, run_ner_consensus.py, TensorFlow 1.x
// checkpoints) -> Hugging Face's parameter names (ctdl's module fields,
// models/bert/model.hpp), and the shape each parameter must have under a bert_config.json.
//
//   bert/embeddings/{word,position,token_type}_embeddings   -> bert.embeddings.*.weight
//   .../LayerNorm/gamma, .../LayerNorm/beta                  -> .../LayerNorm.weight, .bias
//   bert/encoder/layer_N/attention/self/{query,key,value}/{kernel,bias}
//   bert/encoder/layer_N/{attention/output,intermediate,output}/dense/{kernel,bias}
//   bert/pooler/dense/{kernel,bias}                          -> bert.encoder.layer.N. ... .weight, .bias
//   output_weights [L+1, H], output_bias [L+1]               -> classifier.weight, classifier.bias
// A dense layer's kernel is stored [in, out] (x @ kernel); Hugging Face's weight is
// [out, in] (x @ weight^T): kernels are transposed. output_weights is already [out, in]
// (run_ner_consensus.py multiplies by its transpose).
//
// Optimizer state (Adam/LAMB moments .../adam_m, .../adam_v; tf.train.AdamOptimizer's
// .../Adam, .../Adam_1, beta1_power, beta2_power; AdamWeightDecayOptimizerV2's
// .../AdamWeightDecayOptimizer(_1); NVIDIA's gradient accumulators .../accum, local_step,
// batch_finite; the fp16 loss scale loss_scale or current_loss_scale, good_steps,
// bad_steps), global_step and the pre-training heads (cls/...) are not parameters of a
// classifier: they map to "skipped" with the reason. So does manual fp16's .../shadow, the
// float32 master of a weight stored in fp16, whose fp16 value loads (its reason says so).
// Any other name is skipped as "unknown name", so the caller can list it.

#include <optional>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/core/shape.hpp"
#include "ctdl/models/bert/config.hpp"

namespace ctdl::io {

struct BertNameMapping {
  std::string name;        // the Hugging Face name; empty when skipped
  bool transpose = false;  // a kernel: stored [in, out], the parameter is [out, in]
  std::string skip_reason; // why the tensor is not a parameter (empty when mapped)
  bool skipped() const { return name.empty(); }
};

/// The Hugging Face name of Google's BERT variable `google`, or why it has none.
BertNameMapping map_google_bert_name(const std::string& google);

/// The shape the parameter `hf_name` must have under `config` (-1: any extent, the
/// classifier's number of classes); an Error for a name BERT does not have.
std::vector<index_t> expected_bert_shape(const std::string& hf_name, const bert::BertConfig& config);

// ============================================================================

namespace detail {

inline std::vector<std::string> split_name(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t end = s.find(sep, begin);
    parts.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

inline bool is_layer_number(const std::string& s) {
  if (s.empty() || s.size() > 6 || (s.size() > 1 && s[0] == '0')) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

/// "dense/kernel" style leaf -> (".weight", transpose) etc.; nullopt if not a leaf name.
inline std::optional<std::pair<std::string, bool>> map_leaf(const std::string& layer_kind, const std::string& leaf) {
  if (layer_kind == "LayerNorm") {
    if (leaf == "gamma") return std::pair{std::string("weight"), false};
    if (leaf == "beta") return std::pair{std::string("bias"), false};
    return std::nullopt;
  }
  if (leaf == "kernel") return std::pair{std::string("weight"), true};
  if (leaf == "bias") return std::pair{std::string("bias"), false};
  return std::nullopt;
}

}  // namespace detail

inline BertNameMapping map_google_bert_name(const std::string& google) {
  const auto skip = [](std::string why) { return BertNameMapping{"", false, std::move(why)}; };
  if (google.ends_with("/adam_m") || google.ends_with("/adam_v"))
    return skip("optimizer state (Adam/LAMB moment), not a weight");
  if (google.ends_with("/Adam") || google.ends_with("/Adam_1") || google == "beta1_power" || google == "beta2_power")
    return skip("optimizer state (tf.train.AdamOptimizer), not a weight");
  if (google.ends_with("/AdamWeightDecayOptimizer") || google.ends_with("/AdamWeightDecayOptimizer_1"))
    return skip("optimizer state (AdamWeightDecayOptimizerV2's moments), not a weight");
  // What NVIDIA's optimization.py adds: gradient accumulation (--num_accumulation_steps)
  // and the dynamic loss scale of fp16 training (tf.contrib's and tf.train.experimental's).
  if (google.ends_with("/accum") || google == "local_step" || google == "batch_finite")
    return skip("optimizer state (gradient accumulation), not a weight");
  if (google == "loss_scale" || google == "current_loss_scale" || google == "good_steps" || google == "bad_steps")
    return skip("optimizer state (the dynamic loss scale of fp16 training), not a weight");
  if (google.ends_with("/shadow"))
    return skip("the float32 master copy that manual fp16 training keeps of a weight stored in fp16 (the fp16 "
                "weight is what loads)");
  if (google == "global_step") return skip("the training step counter, not a weight");
  if (google.starts_with("cls/")) return skip("pre-training head (masked LM / next sentence), not part of a classifier");
  if (google == "output_weights") return {"classifier.weight", false, ""};
  if (google == "output_bias") return {"classifier.bias", false, ""};

  const auto p = detail::split_name(google, '/');
  const auto unknown = [&] { return skip("unknown name"); };
  if (p.size() < 3 || p[0] != "bert") return unknown();
  if (p[1] == "embeddings") {
    if (p.size() == 3 && (p[2] == "word_embeddings" || p[2] == "position_embeddings" || p[2] == "token_type_embeddings"))
      return {"bert.embeddings." + p[2] + ".weight", false, ""};
    if (p.size() == 4 && p[2] == "LayerNorm")
      if (auto leaf = detail::map_leaf("LayerNorm", p[3])) return {"bert.embeddings.LayerNorm." + leaf->first, false, ""};
    return unknown();
  }
  if (p[1] == "pooler") {
    if (p.size() == 4 && p[2] == "dense")
      if (auto leaf = detail::map_leaf("dense", p[3])) return {"bert.pooler.dense." + leaf->first, leaf->second, ""};
    return unknown();
  }
  if (p[1] != "encoder" || !p[2].starts_with("layer_") || !detail::is_layer_number(p[2].substr(6))) return unknown();
  const std::string layer = "bert.encoder.layer." + p[2].substr(6) + ".";
  // The sub-layer path between layer_N/ and the leaf, as Hugging Face names it.
  std::string path;
  for (std::size_t i = 3; i + 1 < p.size(); ++i) path += (path.empty() ? "" : "/") + p[i];
  static const char* const known[] = {"attention/self/query", "attention/self/key", "attention/self/value",
                                      "attention/output/dense", "attention/output/LayerNorm", "intermediate/dense",
                                      "output/dense", "output/LayerNorm"};
  for (const char* k : known) {
    if (path != k) continue;
    const std::string kind = path.ends_with("LayerNorm") ? "LayerNorm" : "dense";
    const auto leaf = detail::map_leaf(kind, p.back());
    if (!leaf) return unknown();
    std::string hf = path;
    for (char& c : hf)
      if (c == '/') c = '.';
    return {layer + hf + "." + leaf->first, leaf->second, ""};
  }
  return unknown();
}

inline std::vector<index_t> expected_bert_shape(const std::string& hf_name, const bert::BertConfig& c) {
  const index_t H = c.hidden_size, I = c.intermediate_size;
  const auto bad = [&](const std::string& why) { return Error("\"" + hf_name + "\": " + why); };
  if (hf_name == "classifier.weight") return {-1, H};
  if (hf_name == "classifier.bias") return {-1};
  if (hf_name == "bert.embeddings.word_embeddings.weight") return {c.vocab_size, H};
  if (hf_name == "bert.embeddings.position_embeddings.weight") return {c.max_position_embeddings, H};
  if (hf_name == "bert.embeddings.token_type_embeddings.weight") return {c.type_vocab_size, H};
  if (hf_name.starts_with("bert.embeddings.LayerNorm.") || hf_name.ends_with("LayerNorm.weight") ||
      hf_name.ends_with("LayerNorm.bias")) {
    if (hf_name.starts_with("bert.encoder.layer.")) {
      const auto p = detail::split_name(hf_name, '.');
      if (p.size() > 3 && detail::is_layer_number(p[3]) && std::stoll(p[3]) >= c.num_hidden_layers)
        throw bad("layer " + p[3] + ", but the config has " + std::to_string(c.num_hidden_layers) + " layers");
    }
    return {H};
  }
  if (hf_name.starts_with("bert.pooler.dense.")) return hf_name.ends_with(".weight") ? std::vector<index_t>{H, H} : std::vector<index_t>{H};
  if (!hf_name.starts_with("bert.encoder.layer.")) throw bad("not a BERT parameter");
  const auto p = detail::split_name(hf_name, '.');  // bert encoder layer N ...
  if (p.size() < 6 || !detail::is_layer_number(p[3])) throw bad("not a BERT parameter");
  if (std::stoll(p[3]) >= c.num_hidden_layers)
    throw bad("layer " + p[3] + ", but the config has " + std::to_string(c.num_hidden_layers) + " layers");
  const bool weight = p.back() == "weight";
  if (p[4] == "intermediate") return weight ? std::vector<index_t>{I, H} : std::vector<index_t>{I};
  if (p[4] == "output" && p[5] == "dense") return weight ? std::vector<index_t>{H, I} : std::vector<index_t>{H};
  if (p[4] == "attention") return weight ? std::vector<index_t>{H, H} : std::vector<index_t>{H};
  throw bad("not a BERT parameter");
}

}  // namespace ctdl::io

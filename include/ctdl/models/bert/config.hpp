#pragma once
// BertConfig: bert_config.json (Google) / config.json (Hugging Face), and the compiled
// shape families that a config dispatches to.
//
// Keys read (Google and Hugging Face spell them alike): vocab_size, hidden_size,
// num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
// hidden_dropout_prob, attention_probs_dropout_prob, max_position_embeddings,
// type_vocab_size, initializer_range, layer_norm_eps (default 1e-12),
// classifier_dropout (default: hidden_dropout_prob; null means the default).
// hidden_act: "gelu" is the erf form; "gelu_new", "gelu_pytorch_tanh", "gelu_tanh" the
// tanh approximation (Hugging Face's names). Other keys are ignored.

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"

namespace ctdl::bert {

enum class Activation { gelu_erf, gelu_tanh };

struct BertConfig {
  index_t vocab_size = 30522;
  index_t hidden_size = 768;
  index_t num_hidden_layers = 12;
  index_t num_attention_heads = 12;
  index_t intermediate_size = 3072;
  Activation hidden_act = Activation::gelu_erf;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  index_t max_position_embeddings = 512;
  index_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  double classifier_dropout = 0.1;

  /// Parses a config; `source` names it in error messages (a file path).
  static BertConfig from_json(const nlohmann::json& j, const std::string& source);
  /// Reads a config file; errors name the file and the problem.
  static BertConfig from_file(const std::string& path);
};

/// A compiled BERT shape family: hidden width, heads and intermediate width are part of
/// the types; everything else in BertConfig stays runtime.
template <index_t Hidden, index_t Heads, index_t Intermediate>
struct Family {
  static constexpr index_t hidden = Hidden, heads = Heads, intermediate = Intermediate;
  static_assert(Hidden % Heads == 0, "the hidden width must be a multiple of the head count");
};
using Tiny = Family<128, 2, 512>;
using Mini = Family<256, 4, 1024>;
using MiniLM = Family<384, 12, 1536>;
using Small = Family<512, 8, 2048>;
using Base = Family<768, 12, 3072>;
using Large = Family<1024, 16, 4096>;

/// Calls fn.template operator()<F>() for the compiled family F that matches `c`, or
/// throws an Error listing the families (and how to add one).
template <class Fn>
decltype(auto) dispatch(const BertConfig& c, Fn&& fn);

// ============================================================================

namespace detail {

template <class T>
T get_required(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key)) throw Error(source + ": missing key \"" + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(source + ": key \"" + key + "\" has the wrong type (" + j.at(key).dump() + ")");
  }
}

template <class T>
T get_optional(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return get_required<T>(j, key, source);
}

}  // namespace detail

inline BertConfig BertConfig::from_json(const nlohmann::json& j, const std::string& source) {
  using detail::get_optional;
  using detail::get_required;
  if (!j.is_object()) throw Error(source + ": a BERT config must be a JSON object");
  BertConfig c;
  c.vocab_size = get_required<index_t>(j, "vocab_size", source);
  c.hidden_size = get_required<index_t>(j, "hidden_size", source);
  c.num_hidden_layers = get_required<index_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = get_required<index_t>(j, "num_attention_heads", source);
  c.intermediate_size = get_required<index_t>(j, "intermediate_size", source);
  const auto act = get_optional<std::string>(j, "hidden_act", "gelu", source);
  if (act == "gelu") c.hidden_act = Activation::gelu_erf;
  else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_tanh") c.hidden_act = Activation::gelu_tanh;
  else throw Error(source + ": hidden_act \"" + act + "\" is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_tanh)");
  c.hidden_dropout_prob = get_optional<double>(j, "hidden_dropout_prob", 0.1, source);
  c.attention_probs_dropout_prob = get_optional<double>(j, "attention_probs_dropout_prob", 0.1, source);
  c.max_position_embeddings = get_optional<index_t>(j, "max_position_embeddings", 512, source);
  c.type_vocab_size = get_optional<index_t>(j, "type_vocab_size", 2, source);
  c.initializer_range = get_optional<double>(j, "initializer_range", 0.02, source);
  c.layer_norm_eps = get_optional<double>(j, "layer_norm_eps", 1e-12, source);
  c.classifier_dropout = get_optional<double>(j, "classifier_dropout", c.hidden_dropout_prob, source);
  auto positive = [&](index_t v, const char* key) {
    if (v <= 0) throw Error(source + ": " + key + " must be positive, not " + std::to_string(v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.max_position_embeddings, "max_position_embeddings");
  positive(c.type_vocab_size, "type_vocab_size");
  if (c.hidden_size % c.num_attention_heads != 0) {
    throw Error(source + ": hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                std::to_string(c.num_attention_heads));
  }
  return c;
}

inline BertConfig BertConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open the BERT config");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  return from_json(j, path);
}

template <class Fn>
decltype(auto) dispatch(const BertConfig& c, Fn&& fn) {
  auto is = [&]<class F>() {
    return c.hidden_size == F::hidden && c.num_attention_heads == F::heads && c.intermediate_size == F::intermediate;
  };
  if (is.template operator()<Tiny>()) return fn.template operator()<Tiny>();
  if (is.template operator()<Mini>()) return fn.template operator()<Mini>();
  if (is.template operator()<MiniLM>()) return fn.template operator()<MiniLM>();
  if (is.template operator()<Small>()) return fn.template operator()<Small>();
  if (is.template operator()<Base>()) return fn.template operator()<Base>();
  if (is.template operator()<Large>()) return fn.template operator()<Large>();
  std::ostringstream msg;
  msg << "no compiled BERT shape family for hidden_size " << c.hidden_size << ", num_attention_heads "
      << c.num_attention_heads << ", intermediate_size " << c.intermediate_size
      << ". Compiled (hidden/heads/intermediate): tiny 128/2/512, mini 256/4/1024, MiniLM 384/12/1536, "
         "small 512/8/2048, base 768/12/3072, large 1024/16/4096. To add one, add a line "
         "`if (is.template operator()<Family<H, A, I>>()) return fn.template operator()<Family<H, A, I>>();` "
         "to ctdl::bert::dispatch in include/ctdl/models/bert/config.hpp";
  throw Error(msg.str());
}

}  // namespace ctdl::bert

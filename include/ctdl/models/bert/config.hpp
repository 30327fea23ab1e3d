#pragma once
// BertConfig: bert_config.json (Google) / config.json (Hugging Face), and the shape
// families that a config dispatches to (a static one when its shape is compiled, else the
// runtime-shaped Dynamic).
//
// Keys read (Google and Hugging Face spell them alike): vocab_size, hidden_size,
// num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
// hidden_dropout_prob, attention_probs_dropout_prob, max_position_embeddings,
// type_vocab_size, initializer_range, layer_norm_eps (default 1e-12),
// classifier_dropout (default: hidden_dropout_prob; null means the default).
// hidden_act: "gelu" is the erf form; "gelu_new", "gelu_pytorch_tanh", "gelu_tanh" the
// tanh approximation (Hugging Face's names). Other keys are ignored.
//
// Every value is checked before anything is allocated, and an error names the file and
// the key: sizes are whole JSON numbers (768 or 768.0; not 128.9, true or "768"), at
// least 1 and at most 2^31-1 (token, position and type ids are int32); hidden_size is a
// multiple of num_attention_heads; dropout probabilities are in [0, 1); layer_norm_eps is
// positive and initializer_range not negative. The parameter count is computed with
// overflow checks, and from_file refuses a model whose fp32 parameters alone would not
// fit in this machine's memory, saying how many bytes they would need.

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/fwd.hpp"

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
  /// Where the config came from (the file from_file read), for error messages.
  std::string source = "<BertConfig>";

  /// Parses and checks a config (types, ranges, overflow of the parameter count);
  /// `source` names it in error messages (a file path).
  static BertConfig from_json(const nlohmann::json& j, const std::string& source);
  /// Reads a config file; errors name the file and the problem. Also refuses a model
  /// whose parameters would not fit in physical memory (check_memory).
  static BertConfig from_file(const std::string& path);

  /// Parameters of the encoder and pooler (heads aside). Throws an Error naming `source`
  /// and the keys when the count overflows 64 bits.
  std::int64_t parameter_count(const std::string& source = "<BertConfig>") const;
  /// Throws an Error naming `source`, the sizes and the bytes needed when the fp32
  /// parameters alone take more than `available_bytes`.
  void check_memory(const std::string& source, std::uint64_t available_bytes) const;
};

/// Physical memory of this machine in bytes (0 when unknown).
std::uint64_t physical_memory_bytes();

/// A BERT shape family: hidden width, heads and intermediate width as types (a width
/// mismatch is a compile error, or make()'s); everything else in BertConfig stays runtime.
/// Family<dyn, dyn, dyn> (Dynamic) is the runtime-shaped family: its widths and heads come
/// from the BertConfig at run time, so that one compiled program runs any shape (TinyBERT
/// 312/12/1200, a pruned BERT). It computes bit for bit what the static family of the same
/// shape computes, as fast: every kernel takes its widths as runtime arguments (a static
/// width is checked, never a loop bound), so both run the same arithmetic in the same
/// order (tests/models/bert/test_dynamic.cpp; docs/benchmarks.md for the speed).
template <index_t Hidden, index_t Heads, index_t Intermediate>
struct Family {
  static constexpr index_t hidden = Hidden, heads = Heads, intermediate = Intermediate;
  static constexpr bool is_dynamic = Hidden == dyn;
  static_assert(is_dynamic ? Heads == dyn && Intermediate == dyn : Hidden > 0 && Heads > 0 && Intermediate > 0,
                "a BERT family has either every extent static (positive) or every extent dyn");
  static_assert(is_dynamic || Hidden % Heads == 0, "the hidden width must be a multiple of the head count");

  /// The attention heads of a model of this family configured by `c` (the static count
  /// when static: make() checks that `c` agrees with it).
  static index_t heads_of(const BertConfig& c) { return is_dynamic ? c.num_attention_heads : Heads; }
};
using Tiny = Family<128, 2, 512>;
using Mini = Family<256, 4, 1024>;
using MiniLM = Family<384, 12, 1536>;
using Small = Family<512, 8, 2048>;
using Base = Family<768, 12, 3072>;
using Large = Family<1024, 16, 4096>;
using Dynamic = Family<dyn, dyn, dyn>;

/// The compiled static families (hidden/heads/intermediate), as a message lists them.
inline constexpr const char* kStaticFamilies =
    "Tiny 128/2/512, Mini 256/4/1024, MiniLM 384/12/1536, Small 512/8/2048, Base 768/12/3072, Large 1024/16/4096";

/// "312/12/1200": a config's hidden/heads/intermediate, as messages write a shape.
inline std::string shape_name(const BertConfig& c) {
  return std::to_string(c.hidden_size) + "/" + std::to_string(c.num_attention_heads) + "/" +
         std::to_string(c.intermediate_size);
}

/// Throws an Error naming the config's source and keys unless a model of family F can be
/// made from `c`: the sizes of a static family equal its extents; for Dynamic, the sizes
/// are positive and hidden_size is a multiple of num_attention_heads (from_json checks
/// these too; a config built in code meets them here).
template <class F>
void check_family(const BertConfig& c);

/// Calls fn.template operator()<F>() for the static family F that matches `c`'s hidden,
/// heads and intermediate sizes (the fast paths), or fn.template operator()<Dynamic>() when
/// none does.
template <class Fn>
decltype(auto) dispatch(const BertConfig& c, Fn&& fn);

// ============================================================================

namespace detail {

// Sizes are at most this: ids are int32, and products of a few such sizes stay far from
// int64 overflow before the checked sum in parameter_count.
inline constexpr index_t kMaxConfigSize = std::numeric_limits<std::int32_t>::max();

[[noreturn]] inline void bad_value(const std::string& source, const char* key, const std::string& want,
                                   const nlohmann::json& v) {
  throw Error(source + ": key \"" + key + "\" " + want + ", not " + v.dump());
}

template <class T>
T get_required(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key)) throw Error(source + ": missing key \"" + key + "\"");
  const auto& v = j.at(key);
  // nlohmann converts booleans to numbers and floats to integers silently; a config
  // that says true or 128.9 for a size is a mistake, not a value.
  if constexpr (std::is_integral_v<T>) {
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxConfigSize))
        bad_value(source, key, "must be at most " + std::to_string(kMaxConfigSize), v);
      if (!v.is_number_unsigned() && (v.get<std::int64_t>() > kMaxConfigSize))
        bad_value(source, key, "must be at most " + std::to_string(kMaxConfigSize), v);
      return static_cast<T>(v.get<std::int64_t>());
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (d != std::floor(d)) bad_value(source, key, "must be a whole number", v);
      if (d > static_cast<double>(kMaxConfigSize))
        bad_value(source, key, "must be at most " + std::to_string(kMaxConfigSize), v);
      if (d < -static_cast<double>(kMaxConfigSize)) bad_value(source, key, "must be positive", v);
      return static_cast<T>(d);
    }
    throw Error(source + ": key \"" + key + "\" has the wrong type (" + v.dump() + "; a whole number is needed)");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number())
      throw Error(source + ": key \"" + key + "\" has the wrong type (" + v.dump() + "; a number is needed)");
    return v.get<T>();
  } else {
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw Error(source + ": key \"" + key + "\" has the wrong type (" + v.dump() + ")");
    }
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
  c.source = source;
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
    if (v <= 0) throw Error(source + ": key \"" + key + "\" must be positive, not " + std::to_string(v));
  };
  // Dropout is a probability of dropping: 1 would drop everything (and scale by 1/0).
  auto probability = [&](double v, const char* key) {
    if (!(v >= 0 && v < 1)) throw Error(source + ": key \"" + key + "\" must be in [0, 1), not " + nlohmann::json(v).dump());
  };
  probability(c.hidden_dropout_prob, "hidden_dropout_prob");
  probability(c.attention_probs_dropout_prob, "attention_probs_dropout_prob");
  probability(c.classifier_dropout, "classifier_dropout");
  if (!(c.layer_norm_eps > 0 && std::isfinite(c.layer_norm_eps)))
    throw Error(source + ": key \"layer_norm_eps\" must be positive, not " + nlohmann::json(c.layer_norm_eps).dump());
  if (!(c.initializer_range >= 0 && std::isfinite(c.initializer_range)))
    throw Error(source + ": key \"initializer_range\" must not be negative, not " +
                nlohmann::json(c.initializer_range).dump());
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
  (void)c.parameter_count(source);  // overflow is an error here, before anything is allocated
  return c;
}

inline std::int64_t BertConfig::parameter_count(const std::string& source) const {
  std::int64_t total = 0;
  bool overflow = false;
  const auto mul = [&](std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    overflow |= __builtin_mul_overflow(a, b, &r);
    return r;
  };
  const auto add = [&](std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    overflow |= __builtin_add_overflow(a, b, &r);
    return r;
  };
  const std::int64_t H = hidden_size, I = intermediate_size;
  // embeddings: word + position + type tables, LayerNorm
  const std::int64_t embeddings = add(mul(add(add(vocab_size, max_position_embeddings), type_vocab_size), H), 2 * H);
  // a layer: query/key/value/output (weight + bias), LayerNorm, FFN in and out, LayerNorm
  const std::int64_t layer =
      add(add(add(mul(4, add(mul(H, H), H)), 4 * H), add(mul(H, I), I)), add(mul(I, H), H));
  total = add(add(embeddings, mul(num_hidden_layers, layer)), add(mul(H, H), H));  // + pooler
  if (overflow)
    throw Error(source + ": the parameter count overflows 64 bits (vocab_size " + std::to_string(vocab_size) +
                ", max_position_embeddings " + std::to_string(max_position_embeddings) + ", type_vocab_size " +
                std::to_string(type_vocab_size) + ", hidden_size " + std::to_string(hidden_size) +
                ", intermediate_size " + std::to_string(intermediate_size) + ", num_hidden_layers " +
                std::to_string(num_hidden_layers) + ")");
  return total;
}

inline void BertConfig::check_memory(const std::string& source, std::uint64_t available_bytes) const {
  const auto params = static_cast<std::uint64_t>(parameter_count(source));
  const std::uint64_t limit = available_bytes / 4;  // fp32 parameters
  if (params <= limit) return;
  // Name the largest term, the usual culprit (a position or vocabulary table).
  std::string culprit = "num_hidden_layers\" (" + std::to_string(num_hidden_layers) + " layers)";
  std::int64_t biggest = static_cast<std::int64_t>(params) / 2;
  for (auto [k, v] : {std::pair{"vocab_size", vocab_size}, {"max_position_embeddings", max_position_embeddings},
                      {"type_vocab_size", type_vocab_size}})
    if (v * hidden_size > biggest)
      culprit = std::string(k) + "\" (" + std::to_string(v) + " x hidden_size " + std::to_string(hidden_size) + ")",
      biggest = v * hidden_size;
  const long double bytes = static_cast<long double>(params) * 4;
  std::ostringstream msg;
  msg << source << ": the model's " << params << " fp32 parameters alone would need " << params * 4 << " bytes ("
      << std::fixed << std::setprecision(1) << bytes / (1024.0L * 1024 * 1024) << " GiB); this machine has "
      << available_bytes << " bytes (" << static_cast<long double>(available_bytes) / (1024.0L * 1024 * 1024)
      << " GiB). Check key \"" << culprit;
  throw Error(msg.str());
}

inline std::uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : 0;
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
  const BertConfig c = from_json(j, path);
  if (const auto memory = physical_memory_bytes()) c.check_memory(path, memory);
  return c;
}

template <class F>
void check_family(const BertConfig& c) {
  const auto key = [&](const char* name, index_t v) { return std::string("\"") + name + "\" " + std::to_string(v); };
  if constexpr (F::is_dynamic) {
    for (auto [name, v] : {std::pair{"hidden_size", c.hidden_size}, {"num_attention_heads", c.num_attention_heads},
                           {"intermediate_size", c.intermediate_size}})
      if (v <= 0) throw Error(c.source + ": key " + key(name, v) + " must be positive");
    if (c.hidden_size % c.num_attention_heads != 0)
      throw Error(c.source + ": key " + key("hidden_size", c.hidden_size) + " is not a multiple of key " +
                  key("num_attention_heads", c.num_attention_heads) + " (each head takes hidden_size / heads columns)");
  } else if (c.hidden_size != F::hidden || c.num_attention_heads != F::heads || c.intermediate_size != F::intermediate) {
    throw Error(c.source + ": keys \"hidden_size\"/\"num_attention_heads\"/\"intermediate_size\" are " + shape_name(c) +
                ", but the model is of the compiled family " + std::to_string(F::hidden) + "/" + std::to_string(F::heads) +
                "/" + std::to_string(F::intermediate) + " (bert::dispatch picks the family of a config)");
  }
}

template <class Fn>
decltype(auto) dispatch(const BertConfig& c, Fn&& fn) {
  auto is = [&]<class F>() {
    return c.hidden_size == F::hidden && c.num_attention_heads == F::heads && c.intermediate_size == F::intermediate;
  };
  // To add a static family: one line here, its name in kStaticFamilies, and its name in
  // examples/bert_instances/CMakeLists.txt and bert_instances.hpp.
  if (is.template operator()<Tiny>()) return fn.template operator()<Tiny>();
  if (is.template operator()<Mini>()) return fn.template operator()<Mini>();
  if (is.template operator()<MiniLM>()) return fn.template operator()<MiniLM>();
  if (is.template operator()<Small>()) return fn.template operator()<Small>();
  if (is.template operator()<Base>()) return fn.template operator()<Base>();
  if (is.template operator()<Large>()) return fn.template operator()<Large>();
  return fn.template operator()<Dynamic>();
}

}  // namespace ctdl::bert

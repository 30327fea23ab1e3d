#pragma once
// Loading a BERT classifier (an encoder under `bert`, a head under `classifier`, as
// bert::BertForSequenceClassification and BertForTokenClassification are) from a
// checkpoint, with every tensor of the checkpoint accounted for.
//
// The checkpoint is a tensor source, duck-typed as io/parameters.hpp describes (path,
// names, contains, at, tensor, read_into): io::SafetensorsFile or a TensorFlow checkpoint
// reader with the same API.
//
// The policy, written once here rather than in each program:
//   - The encoder's names start with "bert." (BertFor* models) or with nothing (a bare
//     BertModel, as BertModel.save_pretrained and sentence-transformers write it); which
//     one is told by the embeddings' name, and logged.
//   - Every tensor is either loaded or logged as skipped with its reason:
//       cls.*                  pre-training heads (masked LM, next sentence)
//       *.position_ids         a buffer of position indices that Hugging Face saves
//       <prefix>pooler.*       when the model has no pooler (a token classifier)
//       anything else unknown  "not a tensor of a BERT classifier" (another task's head)
//   - Encoder layers beyond the config's num_hidden_layers are an error naming the config
//     and the layer count the checkpoint has: a config that does not match its checkpoint
//     would otherwise run a truncated encoder without a word.
//   - The classifier head (classifier.weight [rows, H], classifier.bias [rows]) against
//     the run's L labels: rows == L loads; rows == L + 1 is the original pipeline's extra
//     class, whose row (last by default, or first) is dropped, saying which and checking
//     the drop against the biases (phantom_row_doubt); any other row count, a width other
//     than H, or a bias of another length is an error naming the tensors, the shapes and
//     the labels file. No head at all: the head keeps its initialisation, saying so.
//   - A checkpoint ctdl wrote has labels.txt beside it (the labels its rows stand for):
//     if that file's labels differ from the run's, that is an error naming both files,
//     even when the row counts agree.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/io/parameters.hpp"

namespace ctdl::io {

struct SkippedTensor {
  std::string name;
  std::string reason;
};

/// What a BERT classifier is checked against when it is loaded.
struct BertClassifierLoadOptions {
  std::vector<std::string> labels;  // the run's labels, in class-id order (a row each)
  std::string labels_file;          // where they came from (labels.txt), for messages
  // What a labels.txt beside the checkpoint must list when the classes are more than the
  // labels (the NER task's tensorflow scheme adds padding, X, [CLS] and [SEP] classes);
  // empty: `labels`.
  std::vector<std::string> listed_labels = {};
  std::string config_file;          // bert_config.json the model was built from, for messages
  std::string phantom_class = "last";  // which row of a head with one row too many to drop: last | first
  std::function<void(const std::string&)> log;  // receives each log line; may be empty
};

struct BertCheckpointReport {
  std::string prefix;                  // "bert." or ""
  std::vector<std::string> loaded;     // tensors that parameters took
  std::vector<SkippedTensor> skipped;  // tensors not loaded, each with its reason
  bool classifier_loaded = false;      // false: the checkpoint has no head
  std::optional<index_t> dropped_row;  // the phantom row dropped, if one was
};

/// "bert." or "", from the name of the word embeddings; an error naming the file when the
/// source has neither (not a BERT checkpoint) or both.
template <class Source>
std::string bert_prefix(const Source& source);

/// Throws, naming `config_file` and the count found, when the source has encoder layers
/// at or past `num_layers`.
template <class Source>
void check_encoder_layers(const Source& source, const std::string& prefix, index_t num_layers,
                          const std::string& config_file);

/// The checkpoint's tensors that `loaded` does not contain, each with the reason it is
/// skipped. Throws as check_encoder_layers does.
template <class Source>
std::vector<SkippedTensor> account_for_unused(const Source& source, const std::vector<std::string>& loaded,
                                              const std::string& prefix, index_t num_layers,
                                              const std::string& config_file);

/// Log lines for skipped tensors: one per reason, naming every tensor.
inline std::vector<std::string> describe_skipped(const std::string& path, const std::vector<SkippedTensor>& skipped);

/// Why classifier row `dropped` may be a used class rather than the phantom one, or ""
/// when its bias looks like the phantom's (see the definition for the argument).
inline std::string phantom_row_doubt(std::span<const float> bias, index_t dropped);

/// Loads `model.bert` and `model.classifier` from `source` under the policy above.
template <class Model, class Source>
BertCheckpointReport load_bert_classifier(Model& model, const Source& source, const BertClassifierLoadOptions& options);

// ============================================================================

namespace detail {

inline std::string shape_text(const std::vector<index_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline std::string number_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

/// The encoder layer index of `name` ("<prefix>encoder.layer.<n>.…"), if it is one.
inline std::optional<index_t> encoder_layer_of(const std::string& name, const std::string& prefix) {
  const std::string head = prefix + "encoder.layer.";
  if (!name.starts_with(head)) return std::nullopt;
  const auto dot = name.find('.', head.size());
  const std::string digits = name.substr(head.size(), dot == std::string::npos ? std::string::npos : dot - head.size());
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return static_cast<index_t>(std::stol(digits));
}

/// The labels of a labels.txt as the program reads them (one a line, surrounding
/// whitespace stripped, blank lines ignored), sorted, or nullopt when there is no file.
/// ASCII whitespace only: io sits below text/, and a label file that differs from
/// another only in Unicode spaces is rare enough to be reported as different.
inline std::optional<std::vector<std::string>> read_label_lines(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::vector<std::string> labels;
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r\n\f\v");
    if (b == std::string::npos) continue;
    const auto e = line.find_last_not_of(" \t\r\n\f\v");
    labels.push_back(line.substr(b, e - b + 1));
  }
  std::sort(labels.begin(), labels.end());
  return labels;
}

inline std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

/// A checkpoint directory's own labels.txt (written by ctdl beside model.safetensors) must
/// list the run's labels.
template <class Source>
void check_labels_beside(const Source& source, const BertClassifierLoadOptions& o) {
  namespace fs = std::filesystem;
  const fs::path beside = fs::path(source.path()).parent_path() / "labels.txt";
  std::error_code ec;
  if (!fs::is_regular_file(beside, ec)) return;
  if (!o.labels_file.empty() && fs::equivalent(beside, o.labels_file, ec)) return;
  const auto theirs = read_label_lines(beside);
  if (!theirs) return;
  std::vector<std::string> ours = o.listed_labels.empty() ? o.labels : o.listed_labels;
  std::sort(ours.begin(), ours.end());
  if (*theirs != ours)
    throw Error(beside.string() + " (beside the checkpoint " + source.path() + ") lists the labels " + joined(*theirs) +
                ", but " + (o.labels_file.empty() ? std::string("the run's labels") : o.labels_file) + " lists " +
                joined(ours) + ": the classifier's rows stand for the checkpoint's labels; give its labels.txt");
}

template <class Linear, class Source>
std::optional<index_t> load_classifier_head(Linear& head, const Source& source, const BertClassifierLoadOptions& o,
                                            const std::function<void(const std::string&)>& say, bool& loaded) {
  const std::string file = source.path();
  const bool has_w = source.contains("classifier.weight"), has_b = source.contains("classifier.bias");
  if (!has_w && !has_b) {
    say(file + " has no classifier (classifier.weight/bias): the classifier starts from random initialisation");
    loaded = false;
    return std::nullopt;
  }
  if (has_w != has_b)
    throw Error(file + ": has " + (has_w ? "classifier.weight but no classifier.bias" : "classifier.bias but no classifier.weight") +
                ": a classifier needs both");
  const auto w_shape = source.at("classifier.weight").shape;
  const auto b_shape = source.at("classifier.bias").shape;
  const auto L = static_cast<index_t>(o.labels.size());
  const index_t H = head.weight.value().extent(1);
  const std::string labels_file = o.labels_file.empty() ? std::string("the run's labels") : o.labels_file;
  if (w_shape.size() != 2)
    throw Error(file + ": tensor \"classifier.weight\" has shape " + shape_text(w_shape) + ", expected [rows, " +
                std::to_string(H) + "] (rank 2)");
  const index_t rows = w_shape[0];
  if (w_shape[1] != H)
    throw Error(file + ": tensor \"classifier.weight\" has shape " + shape_text(w_shape) + ", but the model's hidden size is " +
                std::to_string(H) + (o.config_file.empty() ? std::string() : " (hidden_size of " + o.config_file + ")") +
                ": expected [" + std::to_string(rows) + ", " + std::to_string(H) + "]");
  if (b_shape.size() != 1 || b_shape[0] != rows)
    throw Error(file + ": tensor \"classifier.bias\" has shape " + shape_text(b_shape) + ", but \"classifier.weight\" " +
                shape_text(w_shape) + " has " + std::to_string(rows) + " rows (expected [" + std::to_string(rows) + "])");
  loaded = true;
  if (rows == L) {
    source.read_into("classifier.weight", head.weight.value());
    source.read_into("classifier.bias", head.bias.value());
    return std::nullopt;
  }
  if (rows != L + 1)
    throw Error(file + ": the classifier has " + std::to_string(rows) + " rows (classifier.weight " + shape_text(w_shape) +
                "), but " + labels_file + " has " + std::to_string(L) + " labels: a classifier has a row per label, or one more (the original pipeline's unused extra class); " +
                std::to_string(rows) + " is neither " + std::to_string(L) + " nor " + std::to_string(L + 1));
  if (o.phantom_class != "first" && o.phantom_class != "last")
    throw Error("phantom_class must be first or last, not " + o.phantom_class);
  // The original pipeline's phantom extra class: it numbers the labels 0..L-1 and builds
  // L+1 outputs, so row L is the one no label maps to (phantom_class last, the default).
  const index_t skip = o.phantom_class == "first" ? 0 : L;
  auto full_w = source.template tensor<float, Shape<dyn, dyn>>("classifier.weight");
  auto full_b = source.template tensor<float, Shape<dyn>>("classifier.bias");
  say("warning: " + file + ": the classifier has " + std::to_string(L + 1) + " rows for " + std::to_string(L) +
      " labels of " + labels_file + " (the original pipeline's extra class); dropped row " + std::to_string(skip) +
      " of 0.." + std::to_string(L) + " (--phantom_class=" + o.phantom_class + ")");
  const std::string doubt = phantom_row_doubt(std::span<const float>(full_b.data(), static_cast<std::size_t>(L + 1)), skip);
  if (!doubt.empty()) say("warning: " + file + ": " + doubt);
  float* w = head.weight.value().data();
  float* b = head.bias.value().data();
  for (index_t r = 0, out = 0; r <= L; ++r) {
    if (r == skip) continue;
    std::copy_n(full_w.data() + r * H, H, w + out * H);
    b[out] = full_b.data()[r];
    ++out;
  }
  return skip;
}

}  // namespace detail

template <class Source>
std::string bert_prefix(const Source& source) {
  const bool prefixed = source.contains("bert.embeddings.word_embeddings.weight");
  const bool bare = source.contains("embeddings.word_embeddings.weight");
  if (prefixed && bare)
    throw Error(source.path() + ": has both bert.embeddings.word_embeddings.weight and embeddings.word_embeddings.weight: "
                "two encoders in one checkpoint?");
  if (!prefixed && !bare)
    throw Error(source.path() + ": not a BERT checkpoint: it has neither bert.embeddings.word_embeddings.weight "
                "(a BertFor* model) nor embeddings.word_embeddings.weight (a bare BertModel)");
  return prefixed ? "bert." : "";
}

template <class Source>
void check_encoder_layers(const Source& source, const std::string& prefix, index_t num_layers,
                          const std::string& config_file) {
  index_t layers_found = 0;
  std::string example;
  for (const auto& name : source.names())
    if (const auto layer = detail::encoder_layer_of(name, prefix)) {
      layers_found = std::max(layers_found, *layer + 1);
      if (*layer >= num_layers && example.empty()) example = name;
    }
  if (!example.empty())
    throw Error(source.path() + " has " + std::to_string(layers_found) + " encoder layers (e.g. \"" + example + "\"), but " +
                (config_file.empty() ? std::string("the config") : config_file) + " says num_hidden_layers " +
                std::to_string(num_layers) + ": give the checkpoint's own bert_config.json (its layers past " +
                std::to_string(num_layers) + " would be dropped)");
}

template <class Source>
std::vector<SkippedTensor> account_for_unused(const Source& source, const std::vector<std::string>& loaded,
                                              const std::string& prefix, index_t num_layers,
                                              const std::string& config_file) {
  check_encoder_layers(source, prefix, num_layers, config_file);
  std::vector<std::string> taken = loaded;
  std::sort(taken.begin(), taken.end());
  std::vector<SkippedTensor> skipped;
  for (const auto& name : source.names()) {
    if (std::binary_search(taken.begin(), taken.end(), name)) continue;
    if (name.starts_with("cls.predictions."))
      skipped.push_back({name, "the masked-LM pre-training head, not used by a classifier"});
    else if (name.starts_with("cls.seq_relationship."))
      skipped.push_back({name, "the next-sentence pre-training head, not used by a classifier"});
    else if (name.starts_with("cls."))
      skipped.push_back({name, "a pre-training head, not used by a classifier"});
    else if (name.ends_with(".position_ids"))
      skipped.push_back({name, "a buffer of position indices 0, 1, 2, ... (Hugging Face saves it), not a weight"});
    else if (name.starts_with(prefix + "pooler."))
      skipped.push_back({name, "the pooler, which this model does not have (a token classifier uses every token's vector)"});
    else
      skipped.push_back({name, "not a tensor of a BERT classifier (another task's head?)"});
  }
  return skipped;
}

inline std::vector<std::string> describe_skipped(const std::string& path, const std::vector<SkippedTensor>& skipped) {
  std::map<std::string, std::vector<std::string>> by_reason;
  for (const auto& s : skipped) by_reason[s.reason].push_back(s.name);
  std::vector<std::string> lines;
  for (const auto& [reason, names] : by_reason)
    lines.push_back("skipped " + std::to_string(names.size()) + " tensor" + (names.size() == 1 ? "" : "s") + " of " +
                    path + ", " + reason + ": " + detail::joined(names));
  return lines;
}

// Why the check works: no label maps to the phantom row, so it is never a training target,
// and softmax cross-entropy's gradient on its bias is its probability, always > 0:
// training only ever lowers that bias from its initial 0 (BERT initialises classifier
// biases to zero; AdamWeightDecay does not decay biases), and with Adam at the largest
// rate any row can move (its gradient never changes sign). So the phantom row's bias is
// <= 0 and no other row's is lower. Equal biases (a classifier that was never trained) say
// nothing either way.
inline std::string phantom_row_doubt(std::span<const float> bias, index_t dropped) {
  using detail::number_text;
  const auto d = static_cast<std::size_t>(dropped);
  const float b = bias[d];
  const auto lowest = static_cast<std::size_t>(std::min_element(bias.begin(), bias.end()) - bias.begin());
  const auto row = [](std::size_t r) { return "row " + std::to_string(r); };
  if (b > 0)
    return "the dropped " + row(d) + " looks used: its bias is " + number_text(b) +
           " > 0, but training only lowers the bias of the row no label maps to (it starts at 0); " +
           (lowest != d ? row(lowest) + " has the lowest bias (" + number_text(bias[lowest]) + ")"
                        : std::string("check --phantom_class"));
  if (bias[lowest] < b) {
    const std::string hint = lowest == 0                 ? " (--phantom_class=first drops it)"
                             : lowest + 1 == bias.size() ? " (--phantom_class=last drops it)"
                                                         : "";
    return "the dropped " + row(d) + " may be a used class: " + row(lowest) + " has a lower bias (" +
           number_text(bias[lowest]) + " < " + number_text(b) + "), and the row no label maps to has the lowest" + hint;
  }
  return "";
}

template <class Model, class Source>
BertCheckpointReport load_bert_classifier(Model& model, const Source& source, const BertClassifierLoadOptions& options) {
  const auto say = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  BertCheckpointReport report;
  detail::check_labels_beside(source, options);
  report.prefix = bert_prefix(source);
  say(source.path() + ": the encoder's tensors are named " +
      (report.prefix.empty() ? std::string("without a prefix (a bare BertModel, as BertModel.save_pretrained and "
                                           "sentence-transformers write it)")
                             : std::string("bert.* (a BertFor* model)")));
  // Too many layers is checked before anything is read: it explains a config mismatch
  // better than a shape error would.
  const index_t num_layers = model.bert.config.num_hidden_layers;
  check_encoder_layers(source, report.prefix, num_layers, options.config_file);
  auto loaded = load_parameters(model.bert, source, report.prefix);
  report.loaded = std::move(loaded.taken);
  report.dropped_row = detail::load_classifier_head(model.classifier, source, options, say, report.classifier_loaded);
  if (report.classifier_loaded) {
    report.loaded.push_back("classifier.weight");
    report.loaded.push_back("classifier.bias");
  }
  report.skipped = account_for_unused(source, report.loaded, report.prefix, num_layers, options.config_file);
  for (const auto& line : describe_skipped(source.path(), report.skipped)) say(line);
  return report;
}

}  // namespace ctdl::io

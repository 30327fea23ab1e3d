#pragma once
// BERT checkpoints from either source, under Hugging Face names:
//
//   BertTfCheckpoint      a TensorFlow 1.x checkpoint of Google's BERT (io/tf_checkpoint.hpp)
//                         seen under Hugging Face names (io/bert_names.hpp): kernels
//                         transposed on read, optimizer state and unknown names listed
//                         in skipped(). Its API is io::SafetensorsFile's (path, names,
//                         contains, at, tensor, read_into), so every loader that takes a
//                         safetensors file takes it too (io::load_parameters).
//   find_tf_checkpoint    what a user may pass as a TF checkpoint: a prefix X with X.index,
//                         or a directory holding TensorFlow's `checkpoint` file (its
//                         model_checkpoint_path, the newest) or model.ckpt-N.index files.
//   write_bert_safetensors  a TF checkpoint converted to model.safetensors, every tensor's
//                         shape checked against bert_config.json.
//
// The activation: Google's modeling.py computes "gelu" as the tanh approximation, while
// Hugging Face's "gelu" is the erf form. bert_config.json says "gelu" in both worlds, so
// which one a model needs depends on where its weights come from: tanh for a TF
// checkpoint, as the config says for safetensors. The loaders here leave that to the
// caller: bert::BertConfig reads "gelu" as erf (Hugging Face's reading), so code that
// loads a TF checkpoint sets config.hidden_act = bert::Activation::gelu_tanh itself, as
// ner_span_classifier does (docs/checkpoints.md).

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ctdl/io/bert_names.hpp"
#include "ctdl/io/safetensors_writer.hpp"
#include "ctdl/io/tf_checkpoint.hpp"

namespace ctdl::io {

class BertTfCheckpoint {
 public:
  using Entry = TfCheckpoint::Entry;
  struct Skipped {
    std::string name;    // the TensorFlow name
    std::string reason;  // "optimizer state ...", "unknown name", ...
  };

  explicit BertTfCheckpoint(const std::string& prefix);

  const std::string& path() const { return checkpoint_.path(); }
  bool contains(const std::string& name) const { return mapped_.count(name) > 0; }
  /// The entry under its Hugging Face name; a kernel's shape is given as [out, in].
  const Entry& at(const std::string& name) const;
  std::vector<std::string> names() const;
  /// The TensorFlow name a Hugging Face name comes from.
  const std::string& source_name(const std::string& name) const { return find(name).source; }
  /// Every tensor of the checkpoint that is not a parameter, with the reason.
  const std::vector<Skipped>& skipped() const { return skipped_; }
  const TfCheckpoint& checkpoint() const { return checkpoint_; }

  template <class T, class S>
  Tensor<T, S> tensor(const std::string& name) const;
  /// Copies the parameter `name` into `dst` ([out, in] for a kernel), converting the
  /// element type.
  template <class T, class S>
  void read_into(const std::string& name, Tensor<T, S>& dst) const;

 private:
  struct Mapped {
    std::string source;
    bool transpose = false;
    Entry entry;  // shape as the parameter has it
  };
  const Mapped& find(const std::string& name) const;

  TfCheckpoint checkpoint_;
  std::map<std::string, Mapped> mapped_;
  std::vector<Skipped> skipped_;
};

/// The checkpoint prefix `path` denotes, or nullopt when it is no TensorFlow checkpoint:
/// `path` itself when path.index exists; for a directory, the model_checkpoint_path of
/// its `checkpoint` file (relative to the directory; an absolute path from another
/// machine is looked up by its file name in the directory, as TensorFlow does), else the
/// model.ckpt-N.index of the highest N. A `checkpoint` file naming a missing prefix is an
/// Error.
std::optional<std::string> find_tf_checkpoint(const std::string& path);

/// Writes the parameters of `ckpt` (float32, Hugging Face names) to `out` atomically,
/// after checking each shape against `config`; `metadata` goes into __metadata__.
/// Returns the names written.
std::vector<std::string> write_bert_safetensors(const BertTfCheckpoint& ckpt, const bert::BertConfig& config,
                                                const std::string& out, const std::map<std::string, std::string>& metadata);

// ============================================================================

inline BertTfCheckpoint::BertTfCheckpoint(const std::string& prefix) : checkpoint_(prefix) {
  for (const auto& tf_name : checkpoint_.names()) {
    const BertNameMapping m = map_google_bert_name(tf_name);
    if (m.skipped()) {
      skipped_.push_back({tf_name, m.skip_reason});
      continue;
    }
    Entry e = checkpoint_.at(tf_name);
    if (m.transpose) {
      if (e.shape.size() != 2)
        throw ShapeError(prefix + ".index: tensor \"" + tf_name + "\" is a kernel of shape " +
                         format_extents(e.shape.data(), e.shape.size()) + ", expected [in, out]");
      std::swap(e.shape[0], e.shape[1]);
    }
    const auto [it, fresh] = mapped_.emplace(m.name, Mapped{tf_name, m.transpose, e});
    if (!fresh)
      throw Error(prefix + ".index: tensors \"" + it->second.source + "\" and \"" + tf_name + "\" both map to \"" +
                  m.name + "\"");
  }
}

inline const BertTfCheckpoint::Mapped& BertTfCheckpoint::find(const std::string& name) const {
  const auto it = mapped_.find(name);
  if (it == mapped_.end()) throw Error(path() + ".index: no tensor for \"" + name + "\"");
  return it->second;
}

inline const BertTfCheckpoint::Entry& BertTfCheckpoint::at(const std::string& name) const { return find(name).entry; }

inline std::vector<std::string> BertTfCheckpoint::names() const {
  std::vector<std::string> v;
  for (const auto& [k, m] : mapped_) v.push_back(k);
  return v;
}

template <class T, class S>
Tensor<T, S> BertTfCheckpoint::tensor(const std::string& name) const {
  return detail::whole_tensor<T, S>(*this, name);
}

template <class T, class S>
void BertTfCheckpoint::read_into(const std::string& name, Tensor<T, S>& dst) const {
  const Mapped& m = find(name);
  if (!m.transpose) {
    checkpoint_.read_into(m.source, dst);
    return;
  }
  const std::vector<index_t>& shape = m.entry.shape;  // [out, in]
  bool same = S::rank == 2;
  for (std::size_t i = 0; same && i < 2; ++i) same = shape[i] == dst.extents()[i];
  if (!same)
    throw ShapeError(path() + ": tensor \"" + name + "\" (\"" + m.source + "\" transposed) " +
                     format_extents(shape.data(), shape.size()) + " does not match " + describe<S>(dst.extents()));
  if constexpr (S::rank == 2) {
    const index_t out = shape[0], in = shape[1];
    Tensor<T, Shape<dyn, dyn>> stored({in, out});
    checkpoint_.read_into(m.source, stored);
    for (index_t i = 0; i < in; ++i)
      for (index_t o = 0; o < out; ++o) dst.data()[o * in + i] = stored.data()[i * out + o];
  }
}

inline std::optional<std::string> find_tf_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(path + ".index")) return path;
  if (!fs::is_directory(path)) return std::nullopt;
  const fs::path dir(path);
  if (const fs::path state = dir / "checkpoint"; fs::is_regular_file(state)) {
    std::ifstream in(state);
    std::string line;
    while (std::getline(in, line)) {
      // The text-format CheckpointState: model_checkpoint_path: "model.ckpt-1000"
      const std::string key = "model_checkpoint_path:";
      if (!line.starts_with(key)) continue;
      const auto q1 = line.find('"'), q2 = line.rfind('"');
      if (q1 == std::string::npos || q2 <= q1) throw Error(state.string() + ": malformed line: " + line);
      const fs::path named(line.substr(q1 + 1, q2 - q1 - 1));
      fs::path prefix = named.is_absolute() ? named : dir / named;
      if (!fs::is_regular_file(prefix.string() + ".index") && fs::is_regular_file((dir / named.filename()).string() + ".index"))
        prefix = dir / named.filename();  // written on another machine, or the directory was moved
      if (!fs::is_regular_file(prefix.string() + ".index"))
        throw Error(state.string() + ": model_checkpoint_path \"" + named.string() + "\", but " + prefix.string() +
                    ".index does not exist");
      return prefix.string();
    }
    throw Error(state.string() + ": no model_checkpoint_path line (not TensorFlow's checkpoint state file)");
  }
  // No state file: the model.ckpt-N.index with the highest N.
  std::optional<std::string> best;
  long long best_step = -1;
  for (const auto& f : fs::directory_iterator(dir)) {
    const std::string name = f.path().filename().string();
    if (!name.ends_with(".index")) continue;
    const std::string stem = name.substr(0, name.size() - 6);
    const auto dash = stem.rfind('-');
    long long step = 0;
    if (dash != std::string::npos && dash + 1 < stem.size() &&
        std::all_of(stem.begin() + static_cast<std::ptrdiff_t>(dash) + 1, stem.end(), [](char c) { return c >= '0' && c <= '9'; }))
      step = std::stoll(stem.substr(dash + 1, 18));
    if (step > best_step || (step == best_step && best && (dir / stem).string() > *best)) {
      best_step = step;
      best = (dir / stem).string();
    }
  }
  return best;
}

inline std::vector<std::string> write_bert_safetensors(const BertTfCheckpoint& ckpt, const bert::BertConfig& config,
                                                       const std::string& out,
                                                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::string> names = ckpt.names();
  std::vector<Tensor<float, Shape<dyn>>> data;  // kept until the writer is done
  data.reserve(names.size());
  SafetensorsWriter writer;
  for (const auto& name : names) {
    const auto& shape = ckpt.at(name).shape;
    std::vector<index_t> want;
    try {
      want = expected_bert_shape(name, config);
    } catch (const Error& e) {
      throw Error(ckpt.path() + ": tensor " + e.what() + " (from \"" + ckpt.source_name(name) + "\")");
    }
    bool ok = want.size() == shape.size();
    for (std::size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || want[i] == shape[i];
    if (!ok) {
      std::string w = "[";
      for (std::size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + (want[i] < 0 ? std::string("*") : std::to_string(want[i]));
      throw ShapeError(ckpt.path() + ": tensor \"" + ckpt.source_name(name) + "\" (" + name + ") has shape " +
                       format_extents(shape.data(), shape.size()) + ", but the config says " + w + "]");
    }
    index_t n = 1;
    for (index_t d : shape) n *= d;
    // Read in the parameter's layout (kernels transposed), then keep it flat.
    if (shape.size() == 2) {
      auto t = ckpt.tensor<float, Shape<dyn, dyn>>(name);
      Tensor<float, Shape<dyn>> flat({n});
      std::copy_n(t.data(), n, flat.data());
      data.push_back(std::move(flat));
    } else if (shape.size() == 1) {
      data.push_back(ckpt.tensor<float, Shape<dyn>>(name));
    } else {
      throw ShapeError(ckpt.path() + ": tensor \"" + ckpt.source_name(name) + "\" has rank " + std::to_string(shape.size()));
    }
    writer.add(name, "F32", std::vector<std::int64_t>(shape.begin(), shape.end()), data.back().data(),
               static_cast<std::size_t>(n) * sizeof(float));
  }
  // Every parameter the config implies must be there (a checkpoint of fewer layers
  // than the config says is not this config's model).
  std::vector<std::string> missing;
  std::vector<std::string> wanted = {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                                     "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
                                     "bert.embeddings.LayerNorm.bias"};
  for (index_t l = 0; l < config.num_hidden_layers; ++l)
    for (const char* sub : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                            "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"})
      for (const char* leaf : {".weight", ".bias"})
        wanted.push_back("bert.encoder.layer." + std::to_string(l) + "." + sub + leaf);
  for (const auto& w : wanted)
    if (!ckpt.contains(w)) missing.push_back(w);
  if (!missing.empty()) {
    std::string msg = ckpt.path() + ": " + std::to_string(missing.size()) + " parameter(s) of the config's BERT missing, e.g.";
    for (std::size_t i = 0; i < missing.size() && i < 5; ++i) msg += " \"" + missing[i] + "\"";
    throw Error(msg);
  }
  writer.write(out, metadata);
  return names;
}

}  // namespace ctdl::io

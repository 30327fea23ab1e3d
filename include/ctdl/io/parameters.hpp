#pragma once
// Loading a module's parameters by checkpoint name from a tensor source: a safetensors
// file (io::SafetensorsFile) or any reader with the same duck-typed API (a TensorFlow
// checkpoint reader offers it too), which is all these templates use:
//   path()                      the file, for messages
//   names()                     every tensor's name
//   contains(name), at(name)    at(name).dtype (string), at(name).shape (vector<index_t>)
//   tensor<T, S>(name), read_into(name, Tensor<T, S>&)

#include <algorithm>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/io/safetensors.hpp"
#include "ctdl/nn/module.hpp"

namespace ctdl::io {

struct LoadReport {
  std::vector<std::string> taken;   // tensors of the source that a parameter took
  std::vector<std::string> unused;  // tensors of the source that no parameter took
};

/// Copies every parameter of `m` from the tensor of the same name (after `prefix`),
/// converting the element type. A missing tensor or a shape mismatch throws an Error
/// that names the file and the parameter(s); nothing is half-loaded silently. What the
/// source holds beyond the parameters is returned in `unused`, for the caller to account
/// for (io/bert_checkpoint.hpp does, for BERT checkpoints).
template <nn::Module M, class Source>
LoadReport load_parameters(M& m, const Source& file, const std::string& prefix = "") {
  std::vector<std::string> missing;
  LoadReport r;
  nn::visit_parameters(m, [&](const std::string& name, auto& p) {
    const std::string key = prefix + name;
    if (!file.contains(key)) {
      missing.push_back(key);
      return;
    }
    file.read_into(key, p.value());
    r.taken.push_back(key);
  });
  if (!missing.empty()) {
    std::string msg = file.path() + ": " + std::to_string(missing.size()) + " parameter(s) missing, e.g.";
    for (std::size_t i = 0; i < missing.size() && i < 5; ++i) msg += " \"" + missing[i] + "\"";
    throw Error(msg);
  }
  std::vector<std::string> taken = r.taken;
  std::sort(taken.begin(), taken.end());
  for (const auto& n : file.names())
    if (!std::binary_search(taken.begin(), taken.end(), n)) r.unused.push_back(n);
  return r;
}

}  // namespace ctdl::io

#pragma once
// Loading a module's parameters from a safetensors file by checkpoint name.

#include <string>
#include <vector>

#include "ctdl/io/safetensors.hpp"
#include "ctdl/nn/module.hpp"

namespace ctdl::io {

struct LoadReport {
  std::vector<std::string> unused;  // tensors in the file that no parameter took
};

/// Copies every parameter of `m` from the tensor of the same name (after `prefix`),
/// converting the element type. A missing tensor or a shape mismatch throws an Error
/// that names the file and the parameter(s); nothing is half-loaded silently.
template <nn::Module M, class Source = SafetensorsFile>
LoadReport load_parameters(M& m, const Source& file, const std::string& prefix = "") {
  std::vector<std::string> missing;
  std::vector<std::string> taken;
  nn::visit_parameters(m, [&](const std::string& name, auto& p) {
    const std::string key = prefix + name;
    if (!file.contains(key)) {
      missing.push_back(key);
      return;
    }
    file.read_into(key, p.value());
    taken.push_back(key);
  });
  if (!missing.empty()) {
    std::string msg = file.path() + ": " + std::to_string(missing.size()) + " parameter(s) missing, e.g.";
    for (std::size_t i = 0; i < missing.size() && i < 5; ++i) msg += " \"" + missing[i] + "\"";
    throw Error(msg);
  }
  LoadReport r;
  for (const auto& n : file.names())
    if (std::find(taken.begin(), taken.end(), n) == taken.end()) r.unused.push_back(n);
  return r;
}

}  // namespace ctdl::io

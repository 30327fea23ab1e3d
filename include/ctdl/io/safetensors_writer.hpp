#pragma once
// Writing safetensors files: a module's parameters under their checkpoint names (Hugging
// Face's, so `transformers` loads the file), F32, with string metadata.
//
// The header's JSON is padded with spaces to a multiple of 8 bytes, as the reference
// writer does, so the data that follows is aligned. The file is an io::AtomicFile
// (checked writes, fsync, rename): a crash or a full disk never leaves half a checkpoint.

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/io/atomic_file.hpp"
#include "ctdl/nn/module.hpp"

namespace ctdl::io {

class SafetensorsWriter {
 public:
  /// Adds a tensor; `data` must stay valid until write().
  void add(std::string name, std::string dtype, std::vector<std::int64_t> shape, const void* data, std::size_t bytes) {
    if (entries_.count(name)) throw Error("safetensors: tensor \"" + name + "\" added twice");
    entries_.emplace(std::move(name), Entry{std::move(dtype), std::move(shape), data, bytes});
  }

  void write(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::size_t offset = 0;
    for (const auto& [name, e] : entries_) {  // sorted by name
      header[name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes}}};
      offset += e.bytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    AtomicFile f(path);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
    f.write(len, 8);
    f.write(text);
    for (const auto& [name, e] : entries_) f.write(e.data, e.bytes);
    f.commit();
  }

 private:
  struct Entry {
    std::string dtype;
    std::vector<std::int64_t> shape;
    const void* data;
    std::size_t bytes;
  };
  std::map<std::string, Entry> entries_;
};

/// Writes every parameter of `m` (float) under prefix + its checkpoint name.
template <nn::Module M>
void save_parameters(M& m, const std::string& path, const std::map<std::string, std::string>& metadata = {},
                     const std::string& prefix = "") {
  SafetensorsWriter w;
  nn::visit_parameters(m, [&](const std::string& name, auto& p) {
    using T = typename std::remove_cvref_t<decltype(p)>::value_type;
    static_assert(std::is_same_v<T, float>, "save_parameters writes float parameters (F32)");
    const auto& v = p.value();
    std::vector<std::int64_t> shape(v.extents().begin(), v.extents().end());
    w.add(prefix + name, "F32", std::move(shape), v.data(), static_cast<std::size_t>(v.size()) * sizeof(float));
  });
  w.write(path, metadata);
}

}  // namespace ctdl::io

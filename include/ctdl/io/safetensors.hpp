#pragma once
// Reading safetensors files (the Hugging Face weight format), memory-mapped.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the tensors' bytes, offsets relative to the end of the header. Every check that
// fails names the file and, where there is one, the tensor.
//
// This is the minimal reader the parity tests need; checkpoint writing, TensorFlow
// checkpoints and training state come with the checkpoint issue.

#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/io/mapped_file.hpp"

namespace ctdl::io {

class SafetensorsFile {
 public:
  struct Entry {
    std::string dtype;  // "F64", "F32", "BF16", "F16", "I64", "I32", "U8", "BOOL"
    std::vector<index_t> shape;
    const unsigned char* data = nullptr;
    std::size_t bytes = 0;
  };

  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const Entry& at(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensor `name` converted to element type T (rounding to nearest even where T is
  /// narrower); its extents must fit S.
  template <class T, class S>
  Tensor<T, S> tensor(const std::string& name) const;

  /// Copies tensor `name` into `dst`, whose extents it must equal exactly.
  template <class T, class S>
  void read_into(const std::string& name, Tensor<T, S>& dst) const;

 private:
  MappedFile file_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// ============================================================================

namespace detail {

inline std::size_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "BF16" || d == "F16" || d == "I16" || d == "U16") return 2;
  if (d == "U8" || d == "I8" || d == "BOOL") return 1;
  return 0;
}

template <class Src, class T>
void copy_converted(const unsigned char* src, T* dst, index_t n) {
  for (index_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, src + static_cast<std::size_t>(i) * sizeof(Src), sizeof(Src));
    if constexpr (std::is_integral_v<T> || std::is_integral_v<Src>) dst[i] = static_cast<T>(convert<double>(v));
    else dst[i] = convert<T>(v);
  }
}

}  // namespace detail

inline SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const std::size_t file_size = file_.size();
  if (file_size < 8)
    throw Error(path + ": too short to be a safetensors file (" + std::to_string(file_size) + " bytes)");
  const unsigned char* bytes = file_.data();
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > file_size - 8) {
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the file size " + std::to_string(file_size) +
                " (not a safetensors file, or truncated)");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + n);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": the header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw Error(path + ": the header is not a JSON object");
  const unsigned char* data = bytes + 8 + n;
  const std::size_t data_size = file_size - 8 - n;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : info.items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    const std::string where = path + ": tensor \"" + name + "\"";
    try {
      Entry e;
      e.dtype = info.at("dtype").get<std::string>();
      e.shape = info.at("shape").get<std::vector<index_t>>();
      const auto off = info.at("data_offsets").get<std::vector<std::uint64_t>>();
      const std::size_t es = detail::dtype_size(e.dtype);
      if (es == 0) throw Error(where + ": unknown dtype " + e.dtype);
      if (off.size() != 2 || off[0] > off[1] || off[1] > data_size) {
        throw Error(where + ": data offsets outside the file's data (" + info.at("data_offsets").dump() + ")");
      }
      std::size_t count = 1;
      for (index_t d : e.shape) {
        if (d < 0) throw Error(where + ": negative extent");
        count *= static_cast<std::size_t>(d);
      }
      if (count * es != off[1] - off[0]) {
        throw Error(where + ": " + std::to_string(off[1] - off[0]) + " bytes for " + std::to_string(count) + " " + e.dtype +
                    " elements");
      }
      e.data = data + off[0];
      e.bytes = off[1] - off[0];
      entries_.emplace(name, std::move(e));
    } catch (const nlohmann::json::exception& ex) {
      throw Error(where + ": malformed entry (" + ex.what() + ")");
    }
  }
}

inline const SafetensorsFile::Entry& SafetensorsFile::at(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw Error(path() + ": no tensor \"" + name + "\"");
  return it->second;
}

inline std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> v;
  for (const auto& [k, e] : entries_) v.push_back(k);
  return v;
}

template <class T, class S>
Tensor<T, S> SafetensorsFile::tensor(const std::string& name) const {
  const Entry& e = at(name);
  if (e.shape.size() != S::rank) {
    throw ShapeError(path() + ": tensor \"" + name + "\" has rank " + std::to_string(e.shape.size()) + ", expected " +
                     S::name());
  }
  std::array<index_t, S::rank> ext{};
  std::copy(e.shape.begin(), e.shape.end(), ext.begin());
  if (!S::accepts(ext)) throw ShapeError(path() + ": tensor \"" + name + "\" " + format_extents(ext) + " does not fit " + S::name());
  auto t = Tensor<T, S>::uninitialized(ext);
  read_into(name, t);
  return t;
}

template <class T, class S>
void SafetensorsFile::read_into(const std::string& name, Tensor<T, S>& dst) const {
  const Entry& e = at(name);
  bool same = e.shape.size() == S::rank;
  for (std::size_t i = 0; same && i < S::rank; ++i) same = e.shape[i] == dst.extents()[i];
  if (!same) {
    throw ShapeError(path() + ": tensor \"" + name + "\" " + format_extents(e.shape.data(), e.shape.size()) +
                     " does not match " + describe<S>(dst.extents()));
  }
  const index_t n = dst.size();
  T* out = dst.data();
  if (e.dtype == "F64") detail::copy_converted<double>(e.data, out, n);
  else if (e.dtype == "F32") detail::copy_converted<float>(e.data, out, n);
  else if (e.dtype == "BF16") detail::copy_converted<bf16>(e.data, out, n);
  else if (e.dtype == "F16") detail::copy_converted<fp16>(e.data, out, n);
  else if (e.dtype == "I64") detail::copy_converted<std::int64_t>(e.data, out, n);
  else if (e.dtype == "I32") detail::copy_converted<std::int32_t>(e.data, out, n);
  else throw Error(path() + ": tensor \"" + name + "\" has dtype " + e.dtype + ", which ctdl does not read");
}

}  // namespace ctdl::io

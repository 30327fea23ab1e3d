#pragma once
// Reading safetensors files (the Hugging Face weight format), memory-mapped.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the tensors' bytes, offsets relative to the end of the header.
//
// The header is checked whole when the file is opened, as Hugging Face's own reader
// (the `safetensors` crate) checks it, so that a broken or hostile file is an error and
// never a read out of bounds later:
//   - N fits in the file (and is at most 100 MB, the crate's limit);
//   - the JSON nests at most 3 levels (object -> entry -> shape array), checked before
//     parsing: a parser that recurses would overflow the stack on a deeper one;
//   - it is an object of objects with no key twice; every entry has exactly dtype (one of
//     the crate's, so that its element size is known), shape (extents >= 0) and
//     data_offsets [begin, end];
//   - end - begin == product(shape) * element size (checked multiplication);
//   - the entries cover the data region exactly: sorted by offset, each begins where the
//     one before ends, the first at 0 and the last at the end of the file (no overlap, no
//     gap, no trailing bytes);
//   - "__metadata__", if present, maps strings to strings.
// Every error names the file and, where there is one, the tensor. A known dtype that ctdl
// does not convert (U8, BOOL, ...) is an error when that tensor is read, naming it.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
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
    std::string dtype;  // "F64", "F32", "BF16", "F16", "I64", "I32", "U8", "BOOL", ...
    std::vector<index_t> shape;
    const unsigned char* data = nullptr;
    std::size_t bytes = 0;
    std::size_t begin = 0;  // offset of `data` in the data region (after the header)
  };

  /// The crate's limit on the header's length.
  static constexpr std::uint64_t max_header_bytes = 100'000'000;
  /// object -> tensor entry -> shape/data_offsets array: a valid header is never deeper.
  static constexpr int max_header_depth = 3;

  /// Maps and checks the file at `path`.
  explicit SafetensorsFile(const std::string& path);

  /// Checks a safetensors file held in memory (copied); `name` stands for the path in
  /// errors. For tests and the fuzzer.
  static SafetensorsFile from_bytes(std::span<const unsigned char> bytes, std::string name = "<memory>");

  const std::string& path() const { return path_; }
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
  SafetensorsFile() = default;
  void parse(const unsigned char* bytes, std::size_t size);

  std::string path_;
  MappedFile file_;                   // the bytes, when read from a file
  std::vector<unsigned char> owned_;  // the bytes, when given in memory
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// ============================================================================

namespace detail {

/// Bytes per element of a safetensors dtype (the crate's list), or 0 for an unknown one.
inline std::size_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "BF16" || d == "F16" || d == "I16" || d == "U16") return 2;
  if (d == "U8" || d == "I8" || d == "BOOL" || d == "F8_E5M2" || d == "F8_E4M3") return 1;
  return 0;
}

/// How deeply [ and { nest in the JSON text [b, e) (brackets inside strings do not
/// count), scanning no further than one level past `limit`. No JSON validation: the
/// parser does that once the depth is known to be safe.
inline int json_nesting_depth(const unsigned char* b, const unsigned char* e, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (const unsigned char* p = b; p != e; ++p) {
    if (in_string) {
      if (*p == '\\') {
        if (++p == e) break;
      } else if (*p == '"') {
        in_string = false;
      }
    } else if (*p == '"') {
      in_string = true;
    } else if (*p == '[' || *p == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if (*p == ']' || *p == '}') {
      --depth;
    }
  }
  return deepest;
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

inline SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), file_(path) {
  parse(file_.data(), file_.size());
}

inline SafetensorsFile SafetensorsFile::from_bytes(std::span<const unsigned char> bytes, std::string name) {
  SafetensorsFile f;
  f.path_ = std::move(name);
  f.owned_.assign(bytes.begin(), bytes.end());
  f.parse(f.owned_.data(), f.owned_.size());
  return f;
}

inline void SafetensorsFile::parse(const unsigned char* bytes, std::size_t file_size) {
  const std::string& path = path_;
  if (file_size < 8)
    throw Error(path + ": too short to be a safetensors file (" + std::to_string(file_size) + " bytes)");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > file_size - 8) {
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the file size " + std::to_string(file_size) +
                " (not a safetensors file, or truncated)");
  }
  if (n > max_header_bytes)
    throw Error(path + ": header length " + std::to_string(n) + " is above safetensors' limit of " +
                std::to_string(max_header_bytes) + " bytes");
  const unsigned char* header_begin = bytes + 8;
  const unsigned char* header_end = header_begin + n;
  if (const int depth = detail::json_nesting_depth(header_begin, header_end, max_header_depth); depth > max_header_depth)
    throw Error(path + ": the header's JSON nests more than " + std::to_string(max_header_depth) +
                " levels deep (a safetensors header is an object of tensor entries whose shape and offsets are "
                "arrays: 3 levels)");

  // Each key of the top-level object once: the parser itself would keep the last of two
  // entries of one name silently (depth 1 is inside the top-level object).
  std::set<std::string> seen;
  std::string duplicate;
  const auto once = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_end, once);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": the header is not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) throw Error(path + ": the header has the key \"" + duplicate + "\" twice");
  if (!header.is_object()) throw Error(path + ": the header is not a JSON object");

  const unsigned char* data = header_end;
  const std::size_t data_size = file_size - 8 - n;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw Error(path + ": __metadata__ is not a JSON object (of string values)");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string())
          throw Error(path + ": __metadata__ \"" + k + "\" is " + v.type_name() + ", not a string (" +
                      v.dump().substr(0, 40) + ")");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor \"" + name + "\"";
    if (!info.is_object()) throw Error(where + ": the entry is " + std::string(info.type_name()) + ", not an object");
    for (const auto& [key, value] : info.items())
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        throw Error(where + ": unexpected key \"" + key + "\" (an entry has dtype, shape and data_offsets)");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!info.contains(key)) throw Error(where + ": no " + key);
    const auto& dtype = info["dtype"];
    const auto& shape = info["shape"];
    const auto& offsets = info["data_offsets"];
    if (!dtype.is_string()) throw Error(where + ": dtype is not a string (" + dtype.dump() + ")");
    Entry e;
    e.dtype = dtype.get<std::string>();
    const std::size_t element_size = detail::dtype_size(e.dtype);
    if (element_size == 0)
      throw Error(where + ": unknown dtype \"" + e.dtype +
                  "\" (safetensors knows F64, F32, F16, BF16, F8_E5M2, F8_E4M3, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)");
    if (!shape.is_array()) throw Error(where + ": shape is not an array (" + shape.dump().substr(0, 40) + ")");
    // Elements, checked: a shape whose product overflows must not wrap to a small count.
    std::uint64_t count = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
        throw Error(where + ": shape " + shape.dump().substr(0, 60) + " has an extent that is not a whole number >= 0");
      e.shape.push_back(static_cast<index_t>(d.get<std::uint64_t>()));
      if (__builtin_mul_overflow(count, d.get<std::uint64_t>(), &count))
        throw Error(where + ": shape " + shape.dump().substr(0, 60) + " has more elements than 2^64");
    }
    std::uint64_t expected_bytes = 0;
    if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(element_size), &expected_bytes))
      throw Error(where + ": shape " + shape.dump().substr(0, 60) + " of " + e.dtype + " needs more than 2^64 bytes");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw Error(where + ": data_offsets must be [begin, end], whole numbers >= 0 (" + offsets.dump().substr(0, 60) + ")");
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data_size)
      throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                  "] are outside the file's data (" + std::to_string(data_size) + " bytes after the header)");
    if (end - begin != expected_bytes)
      throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                  std::to_string(end - begin) + " bytes, but shape " + shape.dump() + " of " + e.dtype + " needs " +
                  std::to_string(expected_bytes));
    e.begin = static_cast<std::size_t>(begin);
    e.bytes = static_cast<std::size_t>(end - begin);
    e.data = data + e.begin;
    entries_.emplace(name, std::move(e));
  }

  // The tensors tile the data region: overlapping tensors would alias (writing one
  // through a mapping changes the other), and bytes that belong to no tensor are either
  // a broken writer or something hidden in the file.
  std::vector<const std::pair<const std::string, Entry>*> by_offset;
  for (const auto& kv : entries_) by_offset.push_back(&kv);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return std::pair(a->second.begin, a->second.bytes) < std::pair(b->second.begin, b->second.bytes);
  });
  std::size_t covered = 0;
  const std::pair<const std::string, Entry>* previous = nullptr;
  const auto range = [](const Entry& e) {
    return "[" + std::to_string(e.begin) + ", " + std::to_string(e.begin + e.bytes) + "]";
  };
  for (const auto* kv : by_offset) {
    const Entry& e = kv->second;
    if (e.begin < covered)
      throw Error(path + ": tensor \"" + kv->first + "\": data_offsets " + range(e) + " overlap those of tensor \"" +
                  previous->first + "\" " + range(previous->second));
    if (e.begin > covered)
      throw Error(path + ": tensor \"" + kv->first + "\": data_offsets " + range(e) + " leave bytes [" +
                  std::to_string(covered) + ", " + std::to_string(e.begin) + ") of the data to no tensor" +
                  (previous ? " (after tensor \"" + previous->first + "\")" : std::string(" (before it, the first)")) +
                  "; safetensors' tensors cover the data without gaps");
    covered = e.begin + e.bytes;
    previous = kv;
  }
  if (covered != data_size)
    throw Error(path + ": the last " + std::to_string(data_size - covered) + " bytes of the file belong to no tensor" +
                (previous ? " (after tensor \"" + previous->first + "\", which ends at data offset " +
                                std::to_string(covered) + " of " + std::to_string(data_size) + ")"
                          : std::string(" (the header lists none)")));
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

namespace detail {

/// A checkpoint source's tensor `name` as a new Tensor<T, S>: its stored shape checked
/// against S (rank and static extents), then read with the source's read_into. Shared by
/// every source (safetensors, TensorFlow checkpoints and their BERT view).
template <class T, class S, class Source>
Tensor<T, S> whole_tensor(const Source& source, const std::string& name) {
  const auto& shape = source.at(name).shape;
  if (shape.size() != S::rank)
    throw ShapeError(source.path() + ": tensor \"" + name + "\" has rank " + std::to_string(shape.size()) + ", expected " +
                     S::name());
  std::array<index_t, S::rank> ext{};
  if constexpr (S::rank > 0) std::copy(shape.begin(), shape.end(), ext.begin());  // a scalar's has no storage
  if (!S::accepts(ext))
    throw ShapeError(source.path() + ": tensor \"" + name + "\" " + format_extents(ext) + " does not fit " + S::name());
  auto t = Tensor<T, S>::uninitialized(ext);
  source.read_into(name, t);
  return t;
}

}  // namespace detail

template <class T, class S>
Tensor<T, S> SafetensorsFile::tensor(const std::string& name) const {
  return detail::whole_tensor<T, S>(*this, name);
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

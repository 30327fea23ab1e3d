#pragma once
// NumPy .npy files and .npz archives in and out of ctdl tensors.
//
//   auto w = io::load_npy<float, Shape<dyn, 768>>("pooled.npy");   // Tensor<float, Shape<dyn, 768>>
//   io::save_npy("logits.npy", logits.view());                      // atomic (io/atomic_file.hpp)
//   xt::xarray<float> a = io::load_npy_xarray<float>("x.npy");      // any rank, for xtensor users
//   io::NpzFile z("arrays.npz");  auto b = z.tensor<float, Shape<dyn>>("b");   // np.savez archives
//   io::NpzWriter out("out.npz");  out.add("logits", logits.view());  out.commit();
//
// Format (numpy.lib.format): the magic "\x93NUMPY", a version byte pair (1.0: a 2-byte
// little-endian header length; 2.0 and 3.0: 4 bytes), then a Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and ended by '\n', then the elements.
//
// This header needs xtensor (Debian: libxtensor-dev); it is the only part of ctdl's io/
// that does, so a program that never includes it never needs xtensor (CMake: link
// ctdl::xtensor rather than ctdl::ctdl; see docs/architecture.md). Writing goes through
// xtensor's xt::dump_npy over a zero-copy xt::adapt of the tensor. Reading does not use
// xt::load_npy: in xtensor 0.24 it reads past a truncated file without noticing (the
// stream's failure is not checked), requires the header's keys in one order (the format
// says a reader must not), sign-extends a header-length byte >= 0x80, and allocates
// whatever the header's shape asks before reading a byte. ctdl checks the header whole
// first, as its safetensors reader does, so that a bad file is an error naming the file
// and the problem:
//   - the magic, a version of 1.0, 2.0 or 3.0, a header length that fits in the file;
//   - the dict has exactly descr, fortran_order and shape, in any order; descr is a
//     simple type string ('<f4', '|u1', ...; structured dtypes are refused);
//   - the data is exactly product(shape) * item size bytes: a shorter file is truncated,
//     a longer one has trailing bytes; both are errors;
//   - fortran_order True is refused (ctdl tensors are row-major): save
//     np.ascontiguousarray(a) instead;
//   - the dtype is exactly the requested element type's (float32 for float, int64 for
//     std::int64_t, ...; no silent conversion), except that big-endian data ('>f4') is
//     byte-swapped on load;
//   - the shape has the tensor's rank and fits its static extents.
// bf16 has no NumPy dtype: tensors of bf16/fp16 convert to float first.

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/core/shape.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/io/atomic_file.hpp"
#include "ctdl/io/mapped_file.hpp"

namespace ctdl::io {

/// What an .npy header says about its array.
struct NpyHeader {
  char byte_order = '<';        // '<' little-endian, '>' big-endian, '|' single byte
  char kind = 'f';              // 'f' float, 'i' signed, 'u' unsigned integer, 'b' bool
  std::size_t item_bytes = 4;
  bool fortran_order = false;
  std::vector<index_t> shape;
  std::size_t data_offset = 0;  // where the elements begin
  std::size_t data_bytes = 0;   // product(shape) * item_bytes

  /// "<f4", the header's descr.
  std::string descr() const { return std::string{byte_order, kind} + std::to_string(item_bytes); }
  /// "(2, 3)", the shape as NumPy prints it.
  std::string shape_string() const;
};

/// The element types that have a NumPy dtype ctdl reads and writes.
template <class T>
inline constexpr bool is_npy_element_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bool> ||
    std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::int16_t> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::uint16_t> ||
    std::is_same_v<T, std::uint32_t> || std::is_same_v<T, std::uint64_t>;

/// NumPy's name for T's dtype ("float32", "int64", ...), for messages.
template <class T>
std::string npy_dtype_name();

/// Checks the whole header of the .npy bytes `file` (see the list at the top) and returns
/// it; errors begin with `name` (the file's path, or "archive.npz:key.npy").
NpyHeader parse_npy_header(std::string_view file, const std::string& name);

/// A tensor from .npy bytes, checked against T and S; errors begin with `name`.
template <class T, ShapeType S>
Tensor<T, S> tensor_from_npy(std::string_view file, const std::string& name);

/// Reads the .npy file at `path` into a tensor of element type T and shape S.
template <class T, ShapeType S>
Tensor<T, S> load_npy(const std::string& path);

/// Reads the .npy file at `path` into an xt::xarray<T> of the file's rank (same checks,
/// less the shape's).
template <class T>
xt::xarray<T> load_npy_xarray(const std::string& path);

/// The .npy bytes of a tensor (little-endian, C order), written by xt::dump_npy.
template <class T, ShapeType S>
std::string npy_bytes(TensorView<const T, S, Cpu> tensor);

/// Writes a tensor as an .npy file, atomically: `path` is either the complete new file or
/// what it was before.
template <class T, ShapeType S>
void save_npy(const std::string& path, TensorView<const T, S, Cpu> tensor);
template <class T, ShapeType S>
void save_npy(const std::string& path, const Tensor<T, S, Cpu>& tensor) {
  save_npy<T, S>(path, tensor.view());
}
template <class T, ShapeType S>
void save_npy(const std::string& path, TensorView<T, S, Cpu> tensor)
  requires(!std::is_const_v<T>)
{
  save_npy<T, S>(path, TensorView<const T, S, Cpu>(tensor));
}

/// A NumPy .npz archive (np.savez: a zip of "<key>.npy" members, stored), memory-mapped.
/// The zip's central directory is checked when it is opened: every member stored
/// uncompressed (np.savez_compressed's deflated members are refused, naming the key),
/// not encrypted, inside the file, no name twice, and its CRC-32 right; each member is
/// then an .npy file with the checks above, its errors naming "archive.npz:key".
class NpzFile {
 public:
  explicit NpzFile(const std::string& path);

  /// The arrays' names (the members' names without ".npy"), in archive order.
  const std::vector<std::string>& keys() const { return keys_; }
  bool contains(const std::string& key) const { return members_.count(key) != 0; }
  /// The header of array `key`; an unknown key is an error listing the keys there are.
  NpyHeader header(const std::string& key) const { return parse_npy_header(member(key), where(key)); }
  /// Array `key` as a tensor of element type T and shape S.
  template <class T, ShapeType S>
  Tensor<T, S> tensor(const std::string& key) const {
    return tensor_from_npy<T, S>(member(key), where(key));
  }
  const std::string& path() const { return path_; }

 private:
  std::string_view member(const std::string& key) const;
  std::string where(const std::string& key) const { return path_ + ":" + key + ".npy"; }

  std::string path_;
  MappedFile map_;
  std::vector<std::string> keys_;
  std::map<std::string, std::string_view> members_;
};

/// Writes a .npz archive that np.load reads (members stored, as np.savez writes them),
/// atomically on commit(): `path` is the complete archive or what it was before.
class NpzWriter {
 public:
  explicit NpzWriter(std::string path) : path_(std::move(path)) {}
  /// Adds array `key` (np.load(path)[key]); a key given twice is an error.
  template <class T, ShapeType S>
  void add(const std::string& key, TensorView<const T, S, Cpu> tensor) {
    add_npy(key, npy_bytes<T, S>(tensor));
  }
  template <class T, ShapeType S>
  void add(const std::string& key, const Tensor<T, S, Cpu>& tensor) {
    add<T, S>(key, tensor.view());
  }
  /// Adds the bytes of an .npy file as array `key` (they are checked as one).
  void add_npy(const std::string& key, std::string npy);
  void commit();

 private:
  struct Member {
    std::string name, bytes;
  };
  std::string path_;
  std::vector<Member> members_;
};

// ============================================================================

inline std::string NpyHeader::shape_string() const {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

template <class T>
std::string npy_dtype_name() {
  static_assert(is_npy_element_v<T>,
                "this element type has no NumPy dtype that ctdl reads or writes (bf16/fp16: convert to float first)");
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_floating_point_v<T>) return "float" + std::to_string(8 * sizeof(T));
  else if constexpr (std::is_signed_v<T>) return "int" + std::to_string(8 * sizeof(T));
  else return "uint" + std::to_string(8 * sizeof(T));
}

namespace detail {

template <class T>
constexpr char npy_kind() {
  if constexpr (std::is_same_v<T, bool>) return 'b';
  else if constexpr (std::is_floating_point_v<T>) return 'f';
  else if constexpr (std::is_signed_v<T>) return 'i';
  else return 'u';
}

/// NumPy's name for a descr's dtype ("<i8" -> "int64"), for messages about a file.
inline std::string npy_dtype_name(const NpyHeader& h) {
  switch (h.kind) {
    case 'b': return "bool";
    case 'f': return "float" + std::to_string(8 * h.item_bytes);
    case 'i': return "int" + std::to_string(8 * h.item_bytes);
    case 'u': return "uint" + std::to_string(8 * h.item_bytes);
    default: return h.descr();
  }
}

/// A reader of the header's Python dict literal: strings in '' or "", True/False,
/// tuples of whole numbers. Nothing else occurs in a header NumPy writes.
class NpyDictParser {
 public:
  NpyDictParser(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n')) ++pos_;
  }
  bool at_end() {
    skip_space();
    return pos_ == text_.size();
  }
  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const char* what) {
    if (!accept(c)) fail(std::string("expected '") + c + "' " + what);
  }
  std::string string() {
    skip_space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) fail("expected a quoted string");
    const char quote = text_[pos_++];
    const std::size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) fail("a string is not closed");
    std::string s(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  bool boolean() {
    skip_space();
    for (auto [word, value] : {std::pair{std::string_view("True"), true}, {std::string_view("False"), false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    fail("fortran_order is not True or False");
  }
  std::vector<index_t> tuple() {
    std::vector<index_t> values;
    expect('(', "to begin the shape tuple");
    while (!accept(')')) {
      skip_space();
      const std::size_t begin = pos_;
      index_t v = 0;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        if (__builtin_mul_overflow(v, index_t{10}, &v) || __builtin_add_overflow(v, index_t(text_[pos_] - '0'), &v))
          fail("an extent of the shape does not fit in 64 bits");
        ++pos_;
      }
      if (pos_ == begin) fail("the shape has an entry that is not a whole number >= 0");
      values.push_back(v);
      if (!accept(',')) {
        expect(')', "to end the shape tuple");
        break;
      }
    }
    return values;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(name_ + ": the .npy header " + what + " (at character " + std::to_string(pos_) + " of \"" +
                std::string(text_.substr(0, 120)) + "\")");
  }

 private:
  std::string_view text_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

template <class T>
T byteswapped(T v) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  std::reverse(b, b + sizeof(T));
  std::memcpy(&v, b, sizeof(T));
  return v;
}

/// Checks that the file's dtype is T's and copies its elements to `out` (byte-swapping
/// big-endian data).
template <class T>
void copy_npy_elements(std::string_view file, const NpyHeader& h, const std::string& name, T* out) {
  static_assert(is_npy_element_v<T>,
                "this element type has no NumPy dtype that ctdl reads (bf16/fp16: read float and convert)");
  if (h.kind != npy_kind<T>() || h.item_bytes != sizeof(T)) {
    throw Error(name + ": dtype " + npy_dtype_name(h) + " ('" + h.descr() + "'), but " + ctdl::io::npy_dtype_name<T>() +
                " was asked for (convert with a.astype('" + npy_kind<T>() + std::to_string(sizeof(T)) + "') in NumPy)");
  }
  if (h.fortran_order && h.shape.size() > 1) {
    throw Error(name + ": the array is in Fortran (column-major) order and ctdl tensors are row-major; save "
                       "np.ascontiguousarray(a) instead");
  }
  if (h.data_bytes) std::memcpy(static_cast<void*>(out), file.data() + h.data_offset, h.data_bytes);
  if (h.byte_order == '>' && sizeof(T) > 1) {
    const std::size_t n = h.data_bytes / sizeof(T);
    for (std::size_t i = 0; i < n; ++i) out[i] = byteswapped(out[i]);
  }
}

}  // namespace detail

inline NpyHeader parse_npy_header(std::string_view file, const std::string& name) {
  static constexpr std::string_view magic = "\x93NUMPY";
  if (file.size() < magic.size() + 2 || file.substr(0, magic.size()) != magic) {
    throw Error(name + ": not an .npy file (it does not begin with \"\\x93NUMPY\")");
  }
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(file[i])); };
  const std::uint32_t major = byte(6), minor = byte(7);
  if (!((major == 1 || major == 2 || major == 3) && minor == 0)) {
    throw Error(name + ": .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                " is not one ctdl reads (1.0, 2.0, 3.0)");
  }
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  if (file.size() < 8 + length_bytes) throw Error(name + ": truncated inside the .npy header's length");
  std::size_t header_length = byte(8) | byte(9) << 8;
  if (length_bytes == 4) header_length |= std::size_t{byte(10)} << 16 | std::size_t{byte(11)} << 24;
  NpyHeader h;
  h.data_offset = 8 + length_bytes + header_length;
  if (h.data_offset > file.size()) {
    throw Error(name + ": truncated: the .npy header is " + std::to_string(header_length) + " bytes long and the file " +
                std::to_string(file.size()) + " bytes");
  }
  const std::string_view text = file.substr(8 + length_bytes, header_length);
  if (text.empty() || text.back() != '\n') throw Error(name + ": the .npy header does not end with a newline");

  detail::NpyDictParser p(text, name);
  bool seen_descr = false, seen_order = false, seen_shape = false;
  p.expect('{', "to begin the header dict");
  while (!p.accept('}')) {
    const std::string key = p.string();
    p.expect(':', "after a key");
    bool* seen = key == "descr" ? &seen_descr : key == "fortran_order" ? &seen_order : key == "shape" ? &seen_shape : nullptr;
    if (!seen) p.fail("has the key '" + key + "' (it has exactly descr, fortran_order and shape)");
    if (*seen) p.fail("has the key '" + key + "' twice");
    *seen = true;
    if (key == "descr") {
      p.skip_space();
      if (p.accept('[')) p.fail("describes a structured dtype, which ctdl does not read");
      const std::string descr = p.string();
      const bool simple = descr.size() >= 3 && std::string_view("<>|=").find(descr[0]) != std::string_view::npos &&
                          std::string_view("fiub").find(descr[1]) != std::string_view::npos &&
                          descr.find_first_not_of("0123456789", 2) == std::string::npos && descr.size() <= 4;
      if (!simple) p.fail("has descr '" + descr + "', not a number type ctdl reads (f, i, u or b)");
      h.byte_order = descr[0] == '=' ? '<' : descr[0];
      h.kind = descr[1];
      h.item_bytes = std::stoul(descr.substr(2));
      const bool known_size = h.kind == 'f' ? (h.item_bytes == 4 || h.item_bytes == 8)
                            : h.kind == 'b' ? h.item_bytes == 1
                                            : (h.item_bytes == 1 || h.item_bytes == 2 || h.item_bytes == 4 || h.item_bytes == 8);
      if (!known_size) p.fail("has descr '" + descr + "', an item size ctdl does not read");
    } else if (key == "fortran_order") {
      h.fortran_order = p.boolean();
    } else {
      h.shape = p.tuple();
    }
    if (!p.accept(',')) {
      p.expect('}', "to end the header dict");
      break;
    }
  }
  if (!p.at_end()) p.fail("has text after the dict");
  if (!(seen_descr && seen_order && seen_shape)) {
    p.fail(std::string("lacks ") + (!seen_descr ? "descr" : !seen_order ? "fortran_order" : "shape"));
  }

  std::size_t elements = 1;
  for (index_t e : h.shape) {
    if (__builtin_mul_overflow(elements, static_cast<std::size_t>(e), &elements) || elements > std::size_t(kMaxElements)) {
      // A zero extent makes any product zero.
      if (std::find(h.shape.begin(), h.shape.end(), index_t{0}) != h.shape.end()) { elements = 0; break; }
      throw Error(name + ": shape " + h.shape_string() + " has more than 2^59 elements");
    }
  }
  h.data_bytes = elements * h.item_bytes;
  const std::size_t have = file.size() - h.data_offset;
  if (have < h.data_bytes) {
    throw Error(name + ": truncated: shape " + h.shape_string() + " of " + detail::npy_dtype_name(h) + " needs " +
                std::to_string(h.data_bytes) + " bytes of data and the file has " + std::to_string(have));
  }
  if (have > h.data_bytes) {
    throw Error(name + ": " + std::to_string(have - h.data_bytes) + " bytes after the data of shape " + h.shape_string() +
                " of " + detail::npy_dtype_name(h) + " (an .npy file ends with its data)");
  }
  return h;
}

template <class T, ShapeType S>
Tensor<T, S> tensor_from_npy(std::string_view file, const std::string& name) {
  const NpyHeader h = parse_npy_header(file, name);
  if (h.shape.size() != S::rank) {
    throw Error(name + ": shape " + h.shape_string() + " has rank " + std::to_string(h.shape.size()) + ", " + S::name() +
                " has rank " + std::to_string(S::rank));
  }
  Extents<S> extents{};
  if constexpr (S::rank > 0) std::copy(h.shape.begin(), h.shape.end(), extents.begin());  // a scalar's has no storage
  if (!S::accepts(extents)) throw Error(name + ": shape " + h.shape_string() + " does not fit " + S::name());
  auto t = Tensor<T, S>::uninitialized(extents);
  detail::copy_npy_elements(file, h, name, t.data());
  return t;
}

template <class T, ShapeType S>
Tensor<T, S> load_npy(const std::string& path) {
  const MappedFile file(path);
  return tensor_from_npy<T, S>({reinterpret_cast<const char*>(file.data()), file.size()}, path);
}

template <class T>
xt::xarray<T> load_npy_xarray(const std::string& path) {
  const MappedFile map(path);
  const std::string_view file(reinterpret_cast<const char*>(map.data()), map.size());
  const NpyHeader h = parse_npy_header(file, path);
  std::vector<std::size_t> shape(h.shape.begin(), h.shape.end());
  xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
  detail::copy_npy_elements(file, h, path, a.data());
  return a;
}

template <class T, ShapeType S>
std::string npy_bytes(TensorView<const T, S, Cpu> tensor) {
  static_assert(is_npy_element_v<T>,
                "this element type has no NumPy dtype (bf16/fp16: convert to float before saving)");
  std::array<std::size_t, S::rank> shape;
  std::copy(tensor.extents().begin(), tensor.extents().end(), shape.begin());
  // A view of the tensor's own elements: dump_npy evaluates a container as itself, so
  // nothing is copied before the bytes are written.
  const auto adapted = xt::adapt(tensor.data(), static_cast<std::size_t>(tensor.size()), xt::no_ownership(), shape);
  return xt::dump_npy(adapted);
}

template <class T, ShapeType S>
void save_npy(const std::string& path, TensorView<const T, S, Cpu> tensor) {
  write_file_atomically(path, npy_bytes<T, S>(tensor));
}

namespace detail {

/// CRC-32 (zip's, polynomial 0xEDB88320), for checking and writing .npz members.
inline std::uint32_t crc32(std::string_view bytes) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

inline std::uint64_t read_le(std::string_view s, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes; i-- > 0;) v = v << 8 | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
  return v;
}

inline void append_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

}  // namespace detail

inline NpzFile::NpzFile(const std::string& path) : path_(path), map_(path) {
  const std::string_view f(reinterpret_cast<const char*>(map_.data()), map_.size());
  using detail::read_le;
  // The end-of-central-directory record: 22 bytes and a comment of at most 65535, at the end.
  constexpr std::size_t kEnd = 22;
  if (f.size() < kEnd) throw Error(path + ": not an .npz file (too short to be a zip archive)");
  std::size_t end = std::string_view::npos;
  for (std::size_t at = f.size() - kEnd + 1; at-- > 0 && f.size() - at <= kEnd + 65535;) {
    if (f.substr(at, 4) == "PK\x05\x06" && at + kEnd + read_le(f, at + 20, 2) == f.size()) {
      end = at;
      break;
    }
  }
  if (end == std::string_view::npos) throw Error(path + ": not an .npz file (no zip end-of-directory record; truncated?)");
  const std::uint64_t entries = read_le(f, end + 10, 2), dir_bytes = read_le(f, end + 12, 4), dir_at = read_le(f, end + 16, 4);
  if (entries == 0xFFFF || dir_at == 0xFFFFFFFF) throw Error(path + ": a zip64 archive of over 65535 members or 4 GiB, which ctdl does not read");
  if (dir_at + dir_bytes > end) throw Error(path + ": the zip directory lies outside the file (truncated?)");
  std::size_t at = dir_at;
  for (std::uint64_t e = 0; e < entries; ++e) {
    if (at + 46 > end || f.substr(at, 4) != "PK\x01\x02") throw Error(path + ": zip directory entry " + std::to_string(e) + " is damaged");
    const std::uint64_t flags = read_le(f, at + 8, 2), method = read_le(f, at + 10, 2), crc = read_le(f, at + 16, 4);
    std::uint64_t size = read_le(f, at + 20, 4), raw = read_le(f, at + 24, 4), local = read_le(f, at + 42, 4);
    const std::size_t name_len = read_le(f, at + 28, 2), extra_len = read_le(f, at + 30, 2), comment_len = read_le(f, at + 32, 2);
    if (at + 46 + name_len + extra_len + comment_len > end) throw Error(path + ": zip directory entry " + std::to_string(e) + " is damaged");
    const std::string name(f.substr(at + 46, name_len));
    // Zip64 sizes and offset, where the 32-bit fields say 0xFFFFFFFF (in that order).
    for (std::size_t x = at + 46 + name_len; x + 4 <= at + 46 + name_len + extra_len;) {
      const std::size_t id = read_le(f, x, 2), len = read_le(f, x + 2, 2);
      if (id == 1) {
        std::size_t y = x + 4;
        for (std::uint64_t* field : {&raw, &size, &local}) {
          if (*field == 0xFFFFFFFF && y + 8 <= x + 4 + len) {
            *field = read_le(f, y, 8);
            y += 8;
          }
        }
      }
      x += 4 + len;
    }
    at += 46 + name_len + extra_len + comment_len;
    const std::string key = name.size() > 4 && name.ends_with(".npy") ? name.substr(0, name.size() - 4) : name;
    const std::string here = path + ":" + name;
    if (flags & 1) throw Error(here + ": the member is encrypted");
    if (method != 0) {
      throw Error(here + ": the member is compressed (zip method " + std::to_string(method) +
                  ", as np.savez_compressed writes); ctdl reads np.savez archives, whose members are stored: re-save with np.savez");
    }
    if (size != raw) throw Error(here + ": a stored member whose sizes differ (" + std::to_string(size) + " vs " + std::to_string(raw) + ")");
    if (local + 30 > f.size() || f.substr(local, 4) != "PK\x03\x04") throw Error(here + ": its local header is missing or damaged");
    const std::size_t data = local + 30 + read_le(f, local + 26, 2) + read_le(f, local + 28, 2);
    if (data > f.size() || size > f.size() - data) {
      throw Error(here + ": truncated: the member's " + std::to_string(size) + " bytes run past the end of the file");
    }
    const std::string_view bytes = f.substr(data, size);
    if (detail::crc32(bytes) != crc) throw Error(here + ": CRC-32 mismatch: the member's bytes are damaged");
    if (!members_.emplace(key, bytes).second) throw Error(path + ": the archive has the array '" + key + "' twice");
    keys_.push_back(key);
  }
}

inline std::string_view NpzFile::member(const std::string& key) const {
  const auto it = members_.find(key);
  if (it == members_.end()) {
    std::string there;
    for (const auto& k : keys_) there += (there.empty() ? "" : ", ") + k;
    throw Error(path_ + ": no array '" + key + "' (the archive has: " + (there.empty() ? "none" : there) + ")");
  }
  return it->second;
}

inline void NpzWriter::add_npy(const std::string& key, std::string npy) {
  if (key.empty() || key.size() > 60000) throw Error(path_ + ": an array name must have 1 to 60000 characters");
  for (const auto& m : members_)
    if (m.name == key + ".npy") throw Error(path_ + ": the array '" + key + "' is added twice");
  parse_npy_header(npy, path_ + ":" + key + ".npy");
  members_.push_back({key + ".npy", std::move(npy)});
}

inline void NpzWriter::commit() {
  using detail::append_le;
  // A plain zip (no zip64): every offset and size must fit in 32 bits.
  std::string directory;
  AtomicFile out(path_);
  std::uint64_t offset = 0;
  for (const auto& m : members_) {
    if (offset + 30 + m.name.size() + m.bytes.size() >= 0xFFFFFFFFu) {
      throw Error(path_ + ": over 4 GiB, which ctdl's .npz writer does not write (zip64): save the arrays as .npy files");
    }
    const std::uint32_t crc = detail::crc32(m.bytes);
    std::string local;
    // signature, version needed 2.0, flags, method 0 (stored), time 0, date 1980-01-01
    append_le(local, 0x04034b50, 4);
    append_le(local, 20, 2);
    append_le(local, 0, 2);
    append_le(local, 0, 2);
    append_le(local, 0, 2);
    append_le(local, 0x21, 2);
    append_le(local, crc, 4);
    append_le(local, m.bytes.size(), 4);
    append_le(local, m.bytes.size(), 4);
    append_le(local, m.name.size(), 2);
    append_le(local, 0, 2);
    local += m.name;
    out.write(local);
    out.write(m.bytes);
    // The same in the central directory, with the member's offset.
    append_le(directory, 0x02014b50, 4);
    append_le(directory, 20, 2);  // made by: version 2.0
    directory.append(local, 4, 26);
    append_le(directory, 0, 2);  // comment length
    append_le(directory, 0, 2);  // disk
    append_le(directory, 0, 2);  // internal attributes
    append_le(directory, 0, 4);  // external attributes
    append_le(directory, offset, 4);
    directory += m.name;
    offset += local.size() + m.bytes.size();
  }
  std::string end;
  append_le(end, 0x06054b50, 4);
  append_le(end, 0, 4);  // disk numbers
  append_le(end, members_.size(), 2);
  append_le(end, members_.size(), 2);
  append_le(end, directory.size(), 4);
  append_le(end, offset, 4);
  append_le(end, 0, 2);  // comment length
  out.write(directory);
  out.write(end);
  out.commit();
}

}  // namespace ctdl::io

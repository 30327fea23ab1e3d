#pragma once
// Reading TensorFlow 1.x checkpoints (the "tensor bundle" that tf.compat.v1.train.Saver
// writes) without TensorFlow or a protobuf library.
//
// A checkpoint PREFIX is two kinds of file:
//   PREFIX.index                  a LevelDB-style sorted table (SSTable) of key -> value:
//                                 key "" holds a BundleHeaderProto, every other key is a
//                                 tensor name whose value is a BundleEntryProto
//   PREFIX.data-0000K-of-0000N    the tensors' bytes, back to back (N from the header)
//
// The table (tensorflow/core/lib/io/format.h, table_builder.cc):
//   file   = data blocks | metaindex block | index block | footer (48 bytes)
//   footer = BlockHandle metaindex, BlockHandle index (varint64 offset, varint64 size),
//            zero padding to 40 bytes, fixed64 magic 0xdb4775248b80fb57
//   block  = entries | fixed32 restart offsets[num_restarts] | fixed32 num_restarts,
//            followed by a 5-byte trailer: compression type (0: none, 1: snappy) and the
//            masked CRC-32C of the block and the type byte
//   entry  = varint32 shared, varint32 non_shared, varint32 value_length,
//            key bytes after the first `shared` of the previous key, value bytes
// The index block maps, for each data block, a key at or after its last key (and before
// the next block's first: TensorFlow writes the shortest such separator) to its handle.
// TensorFlow's BundleWriter writes uncompressed blocks (table::kNoCompression); a snappy
// block is refused, saying so.
//
// The protos (tensorflow/core/protobuf/tensor_bundle.proto), decoded by hand from the
// wire format; unknown fields are skipped:
//   BundleHeaderProto { int32 num_shards = 1; Endianness endianness = 2; VersionDef version = 3; }
//   BundleEntryProto  { DataType dtype = 1; TensorShapeProto shape = 2; int32 shard_id = 3;
//                       int64 offset = 4; int64 size = 5; fixed32 crc32c = 6;
//                       repeated TensorSliceProto slices = 7; }
//   TensorShapeProto  { repeated Dim dim = 2 { int64 size = 1; string name = 2; }; bool unknown_rank = 3; }
// An entry's crc32c is the masked CRC-32C of its bytes (crc32c_mask below), checked on
// every read. Partitioned variables (slices) and string tensors are listed but not read.
//
// Every error names the file and, where there is one, the tensor.

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/core/tensor.hpp"
#include "ctdl/io/mapped_file.hpp"
#include "ctdl/io/safetensors.hpp"

namespace ctdl::io {

/// CRC-32C (Castagnoli polynomial 0x82f63b78, reflected), continuing from `crc`.
std::uint32_t crc32c_extend(std::uint32_t crc, const unsigned char* data, std::size_t n);
inline std::uint32_t crc32c(const unsigned char* data, std::size_t n) { return crc32c_extend(0, data, n); }
/// LevelDB's and TensorFlow's masking of stored CRCs (a CRC of data that itself holds
/// CRCs is then not degenerate): rotate right by 15 bits and add a constant.
constexpr std::uint32_t crc32c_mask(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
constexpr std::uint32_t crc32c_unmask(std::uint32_t masked) {
  const std::uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

/// One TensorFlow checkpoint: the index read at construction, the data shards mapped.
/// The API is io::SafetensorsFile's, so that loaders take either.
class TfCheckpoint {
 public:
  struct Entry {
    std::string dtype;  // safetensors' names: "F32", "F64", "BF16", "F16", "I64", "I32", ...; "STRING"
    std::vector<index_t> shape;
    int tf_dtype = 0;  // TensorFlow's DataType enum value (DT_FLOAT = 1, ...)
    int shard = 0;
    std::uint64_t offset = 0, bytes = 0;
    std::uint32_t masked_crc32c = 0;
    bool sliced = false;  // a partitioned variable: the bytes live in slice entries, not read
  };
  struct Index {
    int num_shards = 1;
    std::map<std::string, Entry> entries;
  };

  /// Opens PREFIX.index and PREFIX.data-*-of-*; `prefix` is what Saver.save returned
  /// (e.g. "model.ckpt-1000").
  explicit TfCheckpoint(std::string prefix);

  /// Parses an index file's bytes (no file access; the fuzzer's entry point). `path` names
  /// the file in errors. Checks the table's structure and CRCs, every entry's fields and
  /// that its byte count matches its dtype and shape.
  static Index parse_index(const unsigned char* data, std::size_t size, const std::string& path);

  const std::string& path() const { return prefix_; }
  bool contains(const std::string& name) const { return index_.entries.count(name) > 0; }
  const Entry& at(const std::string& name) const;
  std::vector<std::string> names() const;
  int num_shards() const { return index_.num_shards; }
  /// The data file of shard k: PREFIX.data-0000k-of-0000N.
  std::string shard_path(int k) const;

  /// The tensor's bytes, after checking their CRC-32C (an Error names file and tensor).
  std::string_view bytes(const std::string& name) const;

  /// The tensor `name` converted to element type T; its extents must fit S.
  template <class T, class S>
  Tensor<T, S> tensor(const std::string& name) const;

  /// Copies tensor `name` into `dst`, whose extents it must equal exactly.
  template <class T, class S>
  void read_into(const std::string& name, Tensor<T, S>& dst) const;

 private:
  std::string prefix_;
  Index index_;
  std::vector<MappedFile> shards_;
};

// ============================================================================

namespace detail {

inline const std::array<std::uint32_t, 256>& crc32c_table() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

/// Bounds-checked reading of little-endian integers and protobuf varints from a byte
/// range; every failure throws an Error that starts with `where`.
class ByteReader {
 public:
  ByteReader(const unsigned char* begin, const unsigned char* end, const std::string& where)
      : p_(begin), end_(end), where_(where) {}
  bool done() const { return p_ == end_; }
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }
  const unsigned char* position() const { return p_; }

  std::uint64_t varint(int max_bytes = 10) {
    std::uint64_t v = 0;
    for (int i = 0; i < max_bytes; ++i) {
      if (p_ == end_) throw Error(where_ + ": truncated varint");
      const unsigned char b = *p_++;
      v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) return v;
    }
    throw Error(where_ + ": malformed varint (longer than " + std::to_string(max_bytes) + " bytes)");
  }
  std::uint32_t varint32() { return static_cast<std::uint32_t>(varint(5)); }
  template <class U>
  U fixed() {
    if (left() < sizeof(U)) throw Error(where_ + ": truncated (" + std::to_string(sizeof(U)) + "-byte field)");
    U v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p_[i]) << (8 * i));
    p_ += sizeof(U);
    return v;
  }
  std::string_view take(std::uint64_t n) {
    if (n > left())
      throw Error(where_ + ": a field of " + std::to_string(n) + " bytes runs past the end (" + std::to_string(left()) +
                  " left)");
    std::string_view s(reinterpret_cast<const char*>(p_), static_cast<std::size_t>(n));
    p_ += n;
    return s;
  }

 private:
  const unsigned char* p_;
  const unsigned char* end_;
  const std::string& where_;
};

inline const unsigned char* ubytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

/// Calls fn(field_number, wire_type, reader) for each field of a protobuf message; fn
/// consumes the field's value or returns false to have it skipped.
template <class Fn>
void for_each_field(std::string_view message, const std::string& where, Fn&& fn) {
  ByteReader r(ubytes(message), ubytes(message) + message.size(), where);
  while (!r.done()) {
    const std::uint64_t tag = r.varint();
    const auto field = static_cast<std::uint32_t>(tag >> 3);
    const auto wire = static_cast<int>(tag & 7);
    if (field == 0) throw Error(where + ": protobuf field number 0");
    if (fn(field, wire, r)) continue;
    switch (wire) {  // skip an unknown field
      case 0: r.varint(); break;
      case 1: r.take(8); break;
      case 2: r.take(r.varint()); break;
      case 5: r.take(4); break;
      default: throw Error(where + ": protobuf wire type " + std::to_string(wire) + " (field " + std::to_string(field) + ") is not supported");
    }
  }
}

inline void expect_wire(int wire, int want, std::uint32_t field, const std::string& where) {
  if (wire != want)
    throw Error(where + ": field " + std::to_string(field) + " has wire type " + std::to_string(wire) + ", expected " +
                std::to_string(want));
}

/// TensorFlow's DataType enum -> (safetensors dtype name, element bytes); {"", 0} when
/// ctdl does not know it. Strings are variable-length: size 0, listed but not read.
inline std::pair<std::string, std::size_t> tf_dtype_info(std::uint64_t dt) {
  switch (dt) {
    case 1: return {"F32", 4};
    case 2: return {"F64", 8};
    case 3: return {"I32", 4};
    case 4: return {"U8", 1};
    case 5: return {"I16", 2};
    case 6: return {"I8", 1};
    case 7: return {"STRING", 0};
    case 9: return {"I64", 8};
    case 10: return {"BOOL", 1};
    case 14: return {"BF16", 2};
    case 19: return {"F16", 2};
    default: return {"", 0};
  }
}

struct BlockHandle {
  std::uint64_t offset = 0, size = 0;
};

inline BlockHandle read_handle(ByteReader& r) { return {r.varint(), r.varint()}; }

/// The contents of the block at `h`, after checking that it lies inside the table
/// (before the footer), that its CRC matches and that it is uncompressed.
inline std::string_view read_block(const unsigned char* data, std::size_t table_end, BlockHandle h,
                                   const std::string& path, const std::string& what) {
  const std::string where = path + ": " + what + " block (offset " + std::to_string(h.offset) + ", " +
                            std::to_string(h.size) + " bytes)";
  if (h.offset > table_end || h.size > table_end - h.offset || table_end - h.offset - h.size < 5)
    throw Error(where + " lies outside the file's " + std::to_string(table_end) + " bytes of blocks (truncated or corrupt)");
  const unsigned char* block = data + h.offset;
  const unsigned char type = block[h.size];
  std::uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= static_cast<std::uint32_t>(block[h.size + 1 + i]) << (8 * i);
  const std::uint32_t actual = crc32c_extend(crc32c(block, h.size), &type, 1);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION  // the fuzzer mutates past the checksum to reach the parser
  if (crc32c_unmask(stored) != actual) throw Error(where + ": CRC-32C mismatch (the file is corrupt)");
#else
  (void)actual;
#endif
  if (type == 1)
    throw Error(where + " is snappy-compressed; ctdl reads uncompressed tables only (TensorFlow's BundleWriter "
                "writes them uncompressed)");
  if (type != 0) throw Error(where + ": unknown compression type " + std::to_string(type));
  return {reinterpret_cast<const char*>(block), static_cast<std::size_t>(h.size)};
}

/// Calls fn(key, value) for each entry of a block, checking that keys strictly increase
/// (`last_key` carries the order across blocks).
template <class Fn>
void for_each_block_entry(std::string_view block, const std::string& where, std::string& last_key, bool& have_key,
                          Fn&& fn) {
  if (block.size() < 4) throw Error(where + ": shorter than its restart count");
  ByteReader tail(ubytes(block) + block.size() - 4, ubytes(block) + block.size(), where);
  const std::uint32_t restarts = tail.fixed<std::uint32_t>();
  if (restarts == 0 || restarts > (block.size() - 4) / 4)
    throw Error(where + ": " + std::to_string(restarts) + " restart points do not fit in " + std::to_string(block.size()) +
                " bytes");
  const std::size_t entries_end = block.size() - 4 - 4 * static_cast<std::size_t>(restarts);
  ByteReader r(ubytes(block), ubytes(block) + entries_end, where);
  std::string key;  // prefix compression works within a block
  while (!r.done()) {
    const std::uint32_t shared = r.varint32(), non_shared = r.varint32(), value_len = r.varint32();
    if (shared > key.size())
      throw Error(where + ": an entry after key \"" + key + "\" shares " + std::to_string(shared) + " bytes of it");
    key.resize(shared);
    key.append(r.take(non_shared));
    const std::string_view value = r.take(value_len);
    if (have_key && key <= last_key)
      throw Error(where + ": key \"" + key + "\" does not come after \"" + last_key + "\" (the table is corrupt)");
    last_key = key;
    have_key = true;
    fn(key, value);
  }
}

inline TfCheckpoint::Entry parse_entry(std::string_view value, const std::string& where) {
  TfCheckpoint::Entry e;
  bool have_dtype = false;
  for_each_field(value, where, [&](std::uint32_t field, int wire, ByteReader& r) {
    switch (field) {
      case 1: expect_wire(wire, 0, field, where); e.tf_dtype = static_cast<int>(std::min<std::uint64_t>(r.varint(), 1u << 20)); have_dtype = true; return true;
      case 2:
        expect_wire(wire, 2, field, where);
        for_each_field(r.take(r.varint()), where + " (shape)", [&](std::uint32_t f, int w, ByteReader& sr) {
          if (f == 3) {
            expect_wire(w, 0, f, where);
            if (sr.varint() != 0) throw Error(where + ": the shape has unknown rank");
            return true;
          }
          if (f != 2) return false;
          expect_wire(w, 2, f, where);
          std::int64_t size = 0;
          for_each_field(sr.take(sr.varint()), where + " (shape dim)", [&](std::uint32_t df, int dw, ByteReader& dr) {
            if (df != 1) return false;
            expect_wire(dw, 0, df, where);
            size = static_cast<std::int64_t>(dr.varint());
            return true;
          });
          if (size < 0) throw Error(where + ": the shape has an unknown or negative extent (" + std::to_string(size) + ")");
          e.shape.push_back(static_cast<index_t>(size));
          return true;
        });
        return true;
      case 3: {
        expect_wire(wire, 0, field, where);
        const std::uint64_t s = r.varint();
        if (s > 99999) throw Error(where + ": shard_id " + std::to_string(s) + " out of range");
        e.shard = static_cast<int>(s);
        return true;
      }
      case 4: expect_wire(wire, 0, field, where); e.offset = r.varint(); return true;
      case 5: expect_wire(wire, 0, field, where); e.bytes = r.varint(); return true;
      case 6: expect_wire(wire, 5, field, where); e.masked_crc32c = r.fixed<std::uint32_t>(); return true;
      case 7: expect_wire(wire, 2, field, where); r.take(r.varint()); e.sliced = true; return true;
      default: return false;
    }
  });
  if (!have_dtype) throw Error(where + ": the entry has no dtype");
  const auto [name, size] = tf_dtype_info(static_cast<std::uint64_t>(e.tf_dtype));
  if (name.empty()) throw Error(where + ": unknown TensorFlow dtype " + std::to_string(e.tf_dtype));
  e.dtype = name;
  if (size > 0 && !e.sliced) {
    // elements * size == bytes, computed without overflow: a product past bytes / size
    // is a mismatch already (unless an extent is 0, which makes the product 0).
    const std::uint64_t limit = e.bytes / size;
    const bool empty = std::find(e.shape.begin(), e.shape.end(), index_t{0}) != e.shape.end();
    std::uint64_t count = empty ? 0 : 1;
    for (index_t d : e.shape) {
      if (empty) break;
      const auto u = static_cast<std::uint64_t>(d);
      count = count > limit / u ? limit + 1 : count * u;
    }
    if (count > e.bytes / size || count * size != e.bytes)
      throw Error(where + ": " + std::to_string(e.bytes) + " bytes for a " + name + " tensor of shape " +
                  format_extents(e.shape.data(), e.shape.size()));
  }
  return e;
}

}  // namespace detail

inline std::uint32_t crc32c_extend(std::uint32_t crc, const unsigned char* data, std::size_t n) {
  const auto& table = detail::crc32c_table();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

inline TfCheckpoint::Index TfCheckpoint::parse_index(const unsigned char* data, std::size_t size, const std::string& path) {
  constexpr std::size_t kFooter = 48;
  constexpr std::uint64_t kMagic = 0xdb4775248b80fb57ull;
  if (size < kFooter)
    throw Error(path + ": " + std::to_string(size) + " bytes, too short for a TensorFlow checkpoint index (truncated?)");
  const std::string footer_where = path + ": footer";
  detail::ByteReader magic(data + size - 8, data + size, footer_where);
  if (magic.fixed<std::uint64_t>() != kMagic)
    throw Error(path + ": bad magic number at the end (not a TensorFlow checkpoint index, or truncated)");
  detail::ByteReader footer(data + size - kFooter, data + size - 8, footer_where);
  detail::read_handle(footer);  // metaindex: TensorFlow writes it empty (no filter blocks)
  const detail::BlockHandle index_handle = detail::read_handle(footer);
  const std::size_t table_end = size - kFooter;

  Index out;
  bool have_header = false;
  std::string last_index_key, last_key;
  bool have_index_key = false, have_key = false;
  const std::string index_where = path + ": index block";
  const std::string_view index_block = detail::read_block(data, table_end, index_handle, path, "index");
  detail::for_each_block_entry(index_block, index_where, last_index_key, have_index_key, [&](const std::string&, std::string_view v) {
    detail::ByteReader hr(detail::ubytes(v), detail::ubytes(v) + v.size(), index_where);
    const detail::BlockHandle h = detail::read_handle(hr);
    const std::string block_where = path + ": data block at offset " + std::to_string(h.offset);
    const std::string_view block = detail::read_block(data, table_end, h, path, "data");
    detail::for_each_block_entry(block, block_where, last_key, have_key, [&](const std::string& key, std::string_view value) {
      if (key.empty()) {  // the header
        const std::string where = path + ": header";
        std::uint64_t shards = 1, endianness = 0, min_consumer = 0;
        detail::for_each_field(value, where, [&](std::uint32_t field, int wire, detail::ByteReader& r) {
          if (field == 1) { detail::expect_wire(wire, 0, field, where); shards = r.varint(); return true; }
          if (field == 2) { detail::expect_wire(wire, 0, field, where); endianness = r.varint(); return true; }
          if (field != 3) return false;
          detail::expect_wire(wire, 2, field, where);
          detail::for_each_field(r.take(r.varint()), where + " (version)", [&](std::uint32_t f, int w, detail::ByteReader& vr) {
            if (f != 2) return false;
            detail::expect_wire(w, 0, f, where);
            min_consumer = vr.varint();
            return true;
          });
          return true;
        });
        if (shards < 1 || shards > 99999) throw Error(where + ": " + std::to_string(shards) + " shards");
        if (endianness != 0) throw Error(where + ": a big-endian checkpoint; ctdl reads little-endian ones");
        if (min_consumer > 1)
          throw Error(where + ": needs a reader of bundle version " + std::to_string(min_consumer) + " (ctdl reads version 1)");
        out.num_shards = static_cast<int>(shards);
        have_header = true;
        return;
      }
      out.entries.emplace(key, detail::parse_entry(value, path + ": tensor \"" + key + "\""));
    });
  });
  if (!have_header) throw Error(path + ": no header entry (not a TensorFlow tensor bundle)");
  for (const auto& [name, e] : out.entries)
    if (e.shard >= out.num_shards)
      throw Error(path + ": tensor \"" + name + "\" is in shard " + std::to_string(e.shard) + " of " +
                  std::to_string(out.num_shards));
  return out;
}

inline TfCheckpoint::TfCheckpoint(std::string prefix) : prefix_(std::move(prefix)) {
  const MappedFile index(prefix_ + ".index");
  index_ = parse_index(index.data(), index.size(), index.path());
  shards_.resize(static_cast<std::size_t>(index_.num_shards));
  std::vector<bool> used(shards_.size(), false);
  for (const auto& [name, e] : index_.entries) used[static_cast<std::size_t>(e.shard)] = !e.sliced || used[static_cast<std::size_t>(e.shard)];
  for (int k = 0; k < index_.num_shards; ++k) {
    if (!used[static_cast<std::size_t>(k)]) continue;
    try {
      shards_[static_cast<std::size_t>(k)] = MappedFile(shard_path(k));
    } catch (const Error& err) {
      std::string first;  // name a tensor that lives there
      for (const auto& [name, e] : index_.entries)
        if (e.shard == k) { first = name; break; }
      throw Error(std::string(err.what()) + " (the data shard of tensor \"" + first + "\" and others in " + prefix_ +
                  ".index)");
    }
  }
  for (const auto& [name, e] : index_.entries) {
    if (e.sliced) continue;
    const std::size_t have = shards_[static_cast<std::size_t>(e.shard)].size();
    if (e.offset > have || e.bytes > have - e.offset)
      throw Error(shard_path(e.shard) + ": tensor \"" + name + "\" (bytes " + std::to_string(e.offset) + ".." +
                  std::to_string(e.offset + e.bytes) + ") lies past the end of the file (" + std::to_string(have) +
                  " bytes; truncated?)");
  }
}

inline std::string TfCheckpoint::shard_path(int k) const {
  char suffix[40];
  std::snprintf(suffix, sizeof suffix, ".data-%05d-of-%05d", k, index_.num_shards);
  return prefix_ + suffix;
}

inline const TfCheckpoint::Entry& TfCheckpoint::at(const std::string& name) const {
  const auto it = index_.entries.find(name);
  if (it == index_.entries.end()) throw Error(prefix_ + ".index: no tensor \"" + name + "\"");
  return it->second;
}

inline std::vector<std::string> TfCheckpoint::names() const {
  std::vector<std::string> v;
  for (const auto& [k, e] : index_.entries) v.push_back(k);
  return v;
}

inline std::string_view TfCheckpoint::bytes(const std::string& name) const {
  const Entry& e = at(name);
  if (e.sliced)
    throw Error(prefix_ + ".index: tensor \"" + name + "\" is a partitioned variable (saved in slices), which ctdl does not read");
  const MappedFile& f = shards_[static_cast<std::size_t>(e.shard)];
  const unsigned char* p = f.data() + e.offset;
  if (crc32c_unmask(e.masked_crc32c) != crc32c(p, e.bytes))
    throw Error(f.path() + ": tensor \"" + name + "\": CRC-32C mismatch (the data file is corrupt or not this index's)");
  return {reinterpret_cast<const char*>(p), static_cast<std::size_t>(e.bytes)};
}

template <class T, class S>
Tensor<T, S> TfCheckpoint::tensor(const std::string& name) const {
  return detail::whole_tensor<T, S>(*this, name);
}

template <class T, class S>
void TfCheckpoint::read_into(const std::string& name, Tensor<T, S>& dst) const {
  const Entry& e = at(name);
  bool same = e.shape.size() == S::rank;
  for (std::size_t i = 0; same && i < S::rank; ++i) same = e.shape[i] == dst.extents()[i];
  if (!same)
    throw ShapeError(prefix_ + ": tensor \"" + name + "\" " + format_extents(e.shape.data(), e.shape.size()) +
                     " does not match " + describe<S>(dst.extents()));
  const auto* src = detail::ubytes(bytes(name));
  const index_t n = dst.size();
  T* out = dst.data();
  if (e.dtype == "F64") detail::copy_converted<double>(src, out, n);
  else if (e.dtype == "F32") detail::copy_converted<float>(src, out, n);
  else if (e.dtype == "BF16") detail::copy_converted<bf16>(src, out, n);
  else if (e.dtype == "F16") detail::copy_converted<fp16>(src, out, n);
  else if (e.dtype == "I64") detail::copy_converted<std::int64_t>(src, out, n);
  else if (e.dtype == "I32") detail::copy_converted<std::int32_t>(src, out, n);
  else throw Error(prefix_ + ": tensor \"" + name + "\" has dtype " + e.dtype + ", which ctdl does not read");
}

}  // namespace ctdl::io

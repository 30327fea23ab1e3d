// SafetensorsFile: the header is checked whole when a file is opened; each defect is an
// error naming the file and the tensor, never a read out of bounds or a crash.
#include <catch2/catch.hpp>

#include <ctdl/io/safetensors.hpp>
#include <ctdl/io/safetensors_writer.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../test_util.hpp"

using namespace ctdl;

namespace {

/// A safetensors file's bytes: the header's length, the header as given, `data_bytes`
/// bytes of data (value i % 251 at offset i).
std::vector<unsigned char> file_bytes(const std::string& header, std::size_t data_bytes) {
  // Sized once and written in place (GCC 12 warns, wrongly, about growing a vector of 8
  // bytes by insert when this is inlined into a larger unit).
  std::vector<unsigned char> b(8 + header.size() + data_bytes);
  for (std::size_t i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  for (std::size_t i = 0; i < data_bytes; ++i) b[8 + header.size() + i] = static_cast<unsigned char>(i % 251);
  return b;
}

std::string error_of(const std::string& header, std::size_t data_bytes) {
  try {
    io::SafetensorsFile::from_bytes(file_bytes(header, data_bytes), "m.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("safetensors: a valid header is read, from memory or from a file") {
  const std::string h = R"({"b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},)"
                        R"( "a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},)"
                        R"( "empty": {"dtype": "F32", "shape": [0, 3], "data_offsets": [16, 16]},)"
                        R"( "__metadata__": {"format": "pt"}})";
  const auto f = io::SafetensorsFile::from_bytes(file_bytes(h, 16), "m.safetensors");
  CHECK(f.path() == "m.safetensors");
  CHECK(f.names() == std::vector<std::string>{"a", "b", "empty"});
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.at("b").bytes == 8);
  CHECK(f.at("b").begin == 8);
  CHECK(f.at("empty").shape == std::vector<index_t>{0, 3});

  // What the writer writes, the reader reads back.
  const std::string path = test::scratch_dir("io", "safetensors") + "/w.safetensors";
  const std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  const std::vector<float> v = {4.0f};
  io::SafetensorsWriter writer;
  writer.add("w", "F32", {2, 3}, w.data(), w.size() * sizeof(float));
  writer.add("v", "F32", {1}, v.data(), sizeof(float));
  writer.write(path, {{"k", "v"}});
  const io::SafetensorsFile g(path);
  const auto t = g.tensor<float, Shape<dyn, 3>>("w");
  CHECK(t.data()[2] == 3.25f);
  CHECK(g.tensor<float, Shape<1>>("v").data()[0] == 4.0f);
}

TEST_CASE("safetensors: the header length must fit the file") {
  CHECK_THAT(error_of("{}", 0), Catch::Equals("no error"));
  auto b = file_bytes("{}", 0);
  b[0] = 0xff;
  CHECK_THROWS_WITH(io::SafetensorsFile::from_bytes(b, "m.safetensors"),
                    Catch::StartsWith("m.safetensors: header length 255 exceeds the file size 10"));
  CHECK_THROWS_WITH(io::SafetensorsFile::from_bytes(std::vector<unsigned char>(5), "m.safetensors"),
                    Catch::Contains("m.safetensors: too short to be a safetensors file (5 bytes)"));
}

TEST_CASE("safetensors: nesting past 3 levels is refused before parsing (no stack overflow)") {
  // 100,000 levels used to overflow the stack of the recursive JSON parser (a crash).
  std::string deep = R"({"__metadata__": )";
  for (int i = 0; i < 100000; ++i) deep += R"({"a": )";
  deep += "1";
  deep += std::string(100000, '}') + "}";
  CHECK_THAT(error_of(deep, 0), Catch::StartsWith("m.safetensors: the header's JSON nests more than 3 levels deep"));
  // One level too many is refused as well; brackets inside strings do not count.
  CHECK_THAT(error_of(R"({"x": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})", 4),
             Catch::Contains("nests more than 3 levels"));
  CHECK(error_of(R"({"[[[{{{": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4) == "no error");
  CHECK(error_of(R"({"a\"[[[": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4) == "no error");
}

TEST_CASE("safetensors: the header must be an object of entries with dtype, shape and data_offsets") {
  CHECK_THAT(error_of("[1, 2]", 0), Catch::Equals("m.safetensors: the header is not a JSON object"));
  CHECK_THAT(error_of("{", 0), Catch::StartsWith("m.safetensors: the header is not valid JSON"));
  CHECK_THAT(error_of(R"({"w": 3})", 0), Catch::Equals("m.safetensors: tensor \"w\": the entry is number, not an object"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1]}})", 4),
             Catch::Equals("m.safetensors: tensor \"w\": no data_offsets"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}})", 4),
             Catch::Contains("tensor \"w\": unexpected key \"extra\""));
  CHECK_THAT(error_of(R"({"w": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", 4),
             Catch::Contains("tensor \"w\": dtype is not a string"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
             Catch::Contains("tensor \"w\": shape [-1] has an extent that is not a whole number >= 0"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4),
             Catch::Contains("tensor \"w\": shape [1.5] has an extent"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4),
             Catch::Contains("tensor \"w\": data_offsets must be [begin, end]"));
  // Two entries of one name: the JSON parser would keep the last one silently.
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
             Catch::Equals("m.safetensors: the header has the key \"w\" twice"));
}

TEST_CASE("safetensors: an unknown dtype is an error naming the tensor when the file is opened") {
  CHECK_THAT(error_of(R"({"w": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}})", 4),
             Catch::StartsWith("m.safetensors: tensor \"w\": unknown dtype \"F31\""));
  // A known dtype ctdl does not convert opens, and is an error naming it when read.
  const auto f = io::SafetensorsFile::from_bytes(
      file_bytes(R"({"m": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}})", 4), "m.safetensors");
  auto t = Tensor<float, Shape<4>>({4});
  CHECK_THROWS_WITH(f.read_into("m", t), Catch::Equals("m.safetensors: tensor \"m\" has dtype BOOL, which ctdl does not read"));
}

TEST_CASE("safetensors: the bytes must be exactly the shape's, counted without overflow") {
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 12),
             Catch::Equals("m.safetensors: tensor \"w\": data_offsets [0, 12] hold 12 bytes, but shape [2,2] of F32 needs 16"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})", 4),
             Catch::Contains("tensor \"w\": data_offsets [0, 8] are outside the file's data (4 bytes after the header)"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4),
             Catch::Contains("tensor \"w\": data_offsets [4, 0] are outside"));
  // 2^32 * 2^32 * 4 bytes wraps to 0 in 64 bits: it must not pass for an empty tensor.
  CHECK_THAT(error_of(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0),
             Catch::Contains("tensor \"w\": shape [4294967296,4294967296] has more elements than 2^64"));
  CHECK_THAT(error_of(R"({"w": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0),
             Catch::Contains("tensor \"w\": shape [4611686018427387904] of F64 needs more than 2^64 bytes"));
}

TEST_CASE("safetensors: tensors cover the data exactly, without overlap or gap") {
  CHECK_THAT(error_of(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
             Catch::Equals("m.safetensors: tensor \"b\": data_offsets [4, 12] overlap those of tensor \"a\" [0, 8]"));
  // The same bytes for two tensors.
  CHECK_THAT(error_of(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4),
             Catch::Contains("overlap those of tensor"));
  CHECK_THAT(error_of(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})", 12),
             Catch::Contains("tensor \"b\": data_offsets [8, 12] leave bytes [4, 8) of the data to no tensor (after tensor \"a\")"));
  CHECK_THAT(error_of(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
             Catch::Contains("leave bytes [0, 4) of the data to no tensor (before it, the first)"));
  CHECK_THAT(error_of(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 10),
             Catch::Equals("m.safetensors: the last 6 bytes of the file belong to no tensor (after tensor \"a\", which ends at data offset 4 of 10)"));
  CHECK_THAT(error_of("{}", 3), Catch::Contains("the last 3 bytes of the file belong to no tensor (the header lists none)"));
}

TEST_CASE("safetensors: __metadata__ maps strings to strings") {
  CHECK_THAT(error_of(R"({"__metadata__": {"a": {"b": "c"}}})", 0),
             Catch::StartsWith("m.safetensors: __metadata__ \"a\" is object, not a string"));
  CHECK_THAT(error_of(R"({"__metadata__": {"n": 5}})", 0), Catch::Contains("__metadata__ \"n\" is number, not a string (5)"));
  CHECK_THAT(error_of(R"({"__metadata__": ["x"]})", 0), Catch::Contains("__metadata__ is not a JSON object"));
}

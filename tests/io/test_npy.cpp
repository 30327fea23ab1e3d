// io/npy.hpp: .npy files NumPy wrote (tests/fixtures/npy, made by
// tools/make_npy_fixture.py) read into ctdl tensors and xt::xarray with the values the
// fixture's formulas give; each defect of a file is an error naming the file and the
// problem. That NumPy reads what ctdl writes is checked by the ctest test
// io/npy_numpy_reads (tests/io/npy_write_for_numpy.cpp + check_npy_written.py).
#include <catch2/catch.hpp>

#include <ctdl/interop/xtensor.hpp>
#include <ctdl/io/npy.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numbers>
#include <string>

#include "../test_util.hpp"

using namespace ctdl;
using Catch::Matchers::Contains;

namespace {

const std::string kNpyDir = std::string(CTDL_FIXTURES_DIR) + "/npy/";

std::string npy_fixture_bytes(const std::string& name) {
  const std::string b = test::read_file(kNpyDir + name);
  REQUIRE(!b.empty());
  return b;
}

template <class T, ShapeType S>
std::string npy_error_of(std::string_view bytes, const std::string& name = "x.npy") {
  try {
    io::tensor_from_npy<T, S>(bytes, name);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

/// The .npy bytes of a header dict as given (version 1.0), then `data_bytes` zero bytes.
std::string npy_with_header(const std::string& dict, std::size_t data_bytes) {
  std::string header = dict + "\n";
  std::string b = "\x93NUMPY";
  b += '\x01';
  b += '\x00';
  b += static_cast<char>(header.size() & 0xff);
  b += static_cast<char>(header.size() >> 8);
  return b + header + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("npy: float32 (2, 3) written by NumPy reads with the fixture's values") {
  const auto t = io::load_npy<float, Shape<dyn, 3>>(kNpyDir + "f32_2x3.npy");
  REQUIRE(t.extents() == std::array<index_t, 2>{2, 3});
  for (index_t i = 0; i < 6; ++i) CHECK(t.data()[i] == 0.5f * static_cast<float>(i) - 1.25f);
  // Static extents that fit, and fully dynamic ones, read the same file.
  CHECK(io::load_npy<float, Shape<2, 3>>(kNpyDir + "f32_2x3.npy")(1, 2) == 1.25f);
  CHECK(io::load_npy<float, Shape<dyn, dyn>>(kNpyDir + "f32_2x3.npy")(1, 0) == 0.25f);
}

TEST_CASE("npy: float64, int32, int64, uint8 and bool read exactly") {
  const auto d = io::load_npy<double, Shape<dyn>>(kNpyDir + "f64_4.npy");
  REQUIRE(d.size() == 4);
  CHECK(d(0) == 1.0 / 3.0);
  CHECK(d(1) == -2.5e-300);
  CHECK(d(2) == 1e300);
  CHECK(d(3) == std::numbers::pi);

  const auto i32 = io::load_npy<std::int32_t, Shape<2, 2, 3>>(kNpyDir + "i32_2x2x3.npy");
  CHECK(i32.data()[0] == std::numeric_limits<std::int32_t>::min());
  for (index_t i = 1; i < 11; ++i) CHECK(i32.data()[i] == static_cast<std::int32_t>(i * 1000003 - 6000000));
  CHECK(i32.data()[11] == std::numeric_limits<std::int32_t>::max());

  const auto i64 = io::load_npy<std::int64_t, Shape<3>>(kNpyDir + "i64_3.npy");
  CHECK(i64(0) == std::numeric_limits<std::int64_t>::min());
  CHECK(i64(1) == (std::int64_t{1} << 53) + 1);
  CHECK(i64(2) == std::numeric_limits<std::int64_t>::max());

  const auto u8 = io::load_npy<std::uint8_t, Shape<dyn>>(kNpyDir + "u8_5.npy");
  CHECK(std::vector<int>(u8.data(), u8.data() + 5) == std::vector<int>{0, 1, 127, 128, 255});
  const auto b = io::load_npy<bool, Shape<4>>(kNpyDir + "bool_4.npy");
  CHECK((b(0) && !b(1) && !b(2) && b(3)));
}

TEST_CASE("npy: big-endian data is byte-swapped, and empty, scalar and long-header files read") {
  const auto be = io::load_npy<float, Shape<2, 2>>(kNpyDir + "f32_be_2x2.npy");
  for (index_t i = 0; i < 4; ++i) CHECK(be.data()[i] == 0.5f * static_cast<float>(i) - 1.25f);

  const auto empty = io::load_npy<float, Shape<dyn, 4>>(kNpyDir + "f32_0x4.npy");
  CHECK(empty.extents() == std::array<index_t, 2>{0, 4});
  CHECK(io::load_npy<float, Shape<>>(kNpyDir + "f32_scalar.npy").item() == 2.5f);

  // A 192-byte header: its length's low byte is 0xb6.
  const xt::xarray<float> a = io::load_npy_xarray<float>(kNpyDir + "f32_rank20.npy");
  REQUIRE(a.dimension() == 20);
  CHECK(a.shape()[19] == 3);
  CHECK(a.size() == 3);
  CHECK(a.data()[0] == 1.5f);
  CHECK(a.data()[1] == -2.0f);
  CHECK(a.data()[2] == 4.25f);
  const xt::xarray<double> d = io::load_npy_xarray<double>(kNpyDir + "f64_4.npy");
  CHECK(d(3) == std::numbers::pi);
}

TEST_CASE("npy: a wrong dtype, rank or extent is an error naming the file and both sides") {
  const std::string f = kNpyDir + "f32_2x3.npy";
  CHECK_THROWS_WITH((io::load_npy<double, Shape<dyn, 3>>(f)),
                    Contains(f) && Contains("dtype float32 ('<f4')") && Contains("float64 was asked for"));
  CHECK_THROWS_WITH((io::load_npy<std::int32_t, Shape<dyn, 3>>(f)), Contains("int32 was asked for"));
  CHECK_THROWS_WITH((io::load_npy<std::int64_t, Shape<3>>(kNpyDir + "i32_2x2x3.npy")),
                    Contains("shape (2, 2, 3) has rank 3, Shape<3> has rank 1"));
  CHECK_THROWS_WITH((io::load_npy<float, Shape<dyn, 4>>(f)), Contains(f) && Contains("shape (2, 3) does not fit Shape<dyn, 4>"));
  CHECK_THROWS_WITH((io::load_npy<std::int32_t, Shape<dyn>>(kNpyDir + "i64_3.npy")),
                    Contains("dtype int64 ('<i8')") && Contains("int32 was asked for"));
  CHECK_THROWS_WITH((io::load_npy_xarray<float>(kNpyDir + "i64_3.npy")), Contains("i64_3.npy: dtype int64"));
}

TEST_CASE("npy: Fortran order is refused, saying what to do") {
  const std::string f = kNpyDir + "f32_fortran_2x3.npy";
  CHECK_THROWS_WITH((io::load_npy<float, Shape<2, 3>>(f)),
                    Contains(f) && Contains("Fortran (column-major) order") && Contains("np.ascontiguousarray"));
}

TEST_CASE("npy: a truncated file or trailing bytes are errors") {
  const std::string good = npy_fixture_bytes("f32_2x3.npy");
  CHECK(npy_error_of<float, Shape<2, 3>>(good) == "no error");
  CHECK_THAT((npy_error_of<float, Shape<2, 3>>(std::string_view(good).substr(0, good.size() - 1), "cut.npy")),
             Contains("cut.npy: truncated: shape (2, 3) of float32 needs 24 bytes of data and the file has 23"));
  CHECK_THAT((npy_error_of<float, Shape<2, 3>>(good + "xy", "long.npy")), Contains("long.npy: 2 bytes after the data"));
  // Cut inside the header, and inside the magic.
  CHECK_THAT((npy_error_of<float, Shape<2, 3>>(std::string_view(good).substr(0, 40))), Contains("truncated: the .npy header is"));
  CHECK_THAT((npy_error_of<float, Shape<2, 3>>(std::string_view(good).substr(0, 5))), Contains("not an .npy file"));
  CHECK_THAT((npy_error_of<float, Shape<2, 3>>(std::string_view(good).substr(0, 9))),
             Contains("truncated inside the .npy header's length"));
}

TEST_CASE("npy: a malformed header is an error naming the problem") {
  using S = Shape<dyn>;
  CHECK(npy_error_of<float, S>(npy_with_header("{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}", 8)) == "no error");
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f4', 'fortran_order': False}", 0))), Contains("lacks shape"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4))),
             Contains("has the key 'descr' twice"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4))),
             Contains("has the key 'x'"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", 4))),
             Contains("structured dtype"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<U5', 'fortran_order': False, 'shape': (1,)}", 20))),
             Contains("descr '<U5'"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f2', 'fortran_order': False, 'shape': (1,)}", 2))),
             Contains("descr '<f2', an item size ctdl does not read"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", 4))),
             Contains("fortran_order is not True or False"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", 4))),
             Contains("not a whole number >= 0"));
  CHECK_THAT((npy_error_of<float, S>(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 4))),
             Contains("does not fit in 64 bits"));
  CHECK_THAT((npy_error_of<float, Shape<dyn, dyn>>(npy_with_header(
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 4))),
             Contains("more than 2^59 elements"));
  std::string v4 = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4);
  v4[6] = '\x04';
  CHECK_THAT((npy_error_of<float, S>(v4)), Contains("version 4.0 is not one ctdl reads"));
  std::string no_newline = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4);
  no_newline[no_newline.size() - 5] = ' ';
  CHECK_THAT((npy_error_of<float, S>(no_newline)), Contains("does not end with a newline"));
  CHECK_THROWS_WITH((io::load_npy<float, S>("/nonexistent/dir/a.npy")), Contains("/nonexistent/dir/a.npy: cannot open"));
}

TEST_CASE("npy: save_npy writes what load_npy reads back, atomically") {
  const std::filesystem::path dir = std::filesystem::path(CTDL_TEST_TMP) / "npy_roundtrip";
  std::filesystem::create_directories(dir);
  Tensor<float, Shape<dyn, 3>> t({2, 3}, {1.5f, -0.0f, 3e-38f, 1e38f, -7.25f, 0.1f});
  const std::string path = (dir / "t.npy").string();
  io::save_npy(path, t);
  const auto back = io::load_npy<float, Shape<dyn, 3>>(path);
  REQUIRE(back.extents() == t.extents());
  CHECK(std::memcmp(back.data(), t.data(), sizeof(float) * 6) == 0);
  // The bytes are xt::dump_npy's: a version 1.0 header padded to a multiple of 64.
  const std::string bytes = test::read_file(path);
  CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  CHECK((bytes.size() - 24) % 64 == 0);
  CHECK_THAT(bytes, Contains("'descr': '<f4'") && Contains("'shape': (2, 3)"));
  // No temporary is left beside it.
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  CHECK(files == 1);
}

TEST_CASE("interop: to_xtensor and from_xtensor share the buffer, no copy") {
  Tensor<float, Shape<dyn, 3>> t({2, 3}, {0, 1, 2, 3, 4, 5});
  auto x = interop::to_xtensor(t);
  REQUIRE(x.dimension() == 2);
  CHECK(x.shape()[0] == 2);
  CHECK(x.shape()[1] == 3);
  CHECK(x(1, 2) == 5.0f);
  CHECK(x.data() == t.data());
  x(0, 1) = 42.0f;  // a write through the adaptor changes the tensor
  CHECK(t(0, 1) == 42.0f);
  const auto& ct = t;
  CHECK(interop::to_xtensor(ct)(1, 0) == 3.0f);

  xt::xtensor<double, 2> a = {{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}};
  auto v = interop::from_xtensor<Shape<dyn, 3>>(a);
  static_assert(std::is_same_v<decltype(v), TensorView<double, Shape<dyn, 3>, Cpu>>);
  CHECK(v.data() == a.data());
  CHECK(v(1, 1) == 5.0);
  v(1, 1) = -1.0;
  CHECK(a(1, 1) == -1.0);
  const xt::xarray<double> ca = a;
  auto cv = interop::from_xtensor<Shape<2, 3>>(ca);
  static_assert(std::is_same_v<decltype(cv), TensorView<const double, Shape<2, 3>, Cpu>>);
  CHECK(cv(1, 1) == -1.0);
}

TEST_CASE("interop: from_xtensor refuses a wrong rank, extent or a column-major layout") {
  xt::xarray<float> a = xt::xarray<float>::from_shape({2, 3});
  CHECK_THROWS_WITH(interop::from_xtensor<Shape<dyn>>(a), Contains("the container has rank 2, Shape<dyn> has rank 1"));
  CHECK_THROWS_AS((interop::from_xtensor<Shape<dyn, 4>>(a)), ShapeError);
  xt::xtensor<float, 2, xt::layout_type::column_major> f = xt::zeros<float>({2, 3});
  CHECK_THROWS_WITH((interop::from_xtensor<Shape<2, 3>>(f)), Contains("not row-major and contiguous"));
  // A column of one row is contiguous in either order.
  xt::xtensor<float, 2, xt::layout_type::column_major> col = xt::zeros<float>({1, 3});
  CHECK_NOTHROW((interop::from_xtensor<Shape<1, 3>>(col)));
}

TEST_CASE("npz: an np.savez archive reads by key with the fixture's values") {
  const io::NpzFile z(kNpyDir + "arrays.npz");
  CHECK(z.keys() == std::vector<std::string>{"weights", "ids"});
  CHECK(z.contains("ids"));
  const auto w = z.tensor<float, Shape<2, 3>>("weights");
  for (index_t i = 0; i < 6; ++i) CHECK(w.data()[i] == 0.5f * static_cast<float>(i) - 1.25f);
  const auto ids = z.tensor<std::int64_t, Shape<dyn>>("ids");
  CHECK(ids(0) == std::numeric_limits<std::int64_t>::min());
  CHECK(ids(1) == (std::int64_t{1} << 53) + 1);
  CHECK(z.header("ids").descr() == "<i8");
  // Errors name the archive and the member.
  CHECK_THROWS_WITH((z.tensor<float, Shape<2, 3>>("bias")), Contains("arrays.npz: no array 'bias' (the archive has: weights, ids)"));
  CHECK_THROWS_WITH((z.tensor<float, Shape<dyn>>("ids")), Contains("arrays.npz:ids.npy: dtype int64"));
}

TEST_CASE("npz: compressed, truncated or damaged archives are errors") {
  CHECK_THROWS_WITH(io::NpzFile(kNpyDir + "compressed.npz"),
                    Contains("compressed.npz:weights.npy: the member is compressed (zip method 8") && Contains("re-save with np.savez"));
  const std::string good = npy_fixture_bytes("arrays.npz");
  const std::filesystem::path dir = std::filesystem::path(CTDL_TEST_TMP) / "npz_bad";
  std::filesystem::create_directories(dir);
  const auto error_of_file = [&](const std::string& bytes) -> std::string {
    const std::string p = (dir / "bad.npz").string();
    io::write_file_atomically(p, bytes);
    try {
      io::NpzFile z(p);
      for (const auto& k : z.keys()) z.header(k);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(error_of_file(good) == "no error");
  CHECK_THAT(error_of_file(good.substr(0, good.size() - 30)), Contains("no zip end-of-directory record"));
  CHECK_THAT(error_of_file("short"), Contains("too short to be a zip archive"));
  // One flipped byte inside the first member's data fails its CRC-32.
  std::string flipped = good;
  flipped[200] = static_cast<char>(flipped[200] ^ 0x40);
  CHECK_THAT(error_of_file(flipped), Contains("weights.npy: CRC-32 mismatch"));
}

TEST_CASE("npz: NpzWriter writes an archive that NpzFile reads back, atomically") {
  const std::filesystem::path dir = std::filesystem::path(CTDL_TEST_TMP) / "npz_roundtrip";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "out.npz").string();
  Tensor<float, Shape<dyn, 2>> a({3, 2}, {1, 2, 3, 4, 5, 6.5f});
  Tensor<std::int32_t, Shape<4>> b({4}, {-1, 0, 1, 2147483647});
  io::NpzWriter w(path);
  w.add("a", a);
  w.add("b", b);
  CHECK_THROWS_WITH(w.add("a", a), Contains("the array 'a' is added twice"));
  CHECK(!std::filesystem::exists(path));  // nothing before commit()
  w.commit();
  const io::NpzFile z(path);
  CHECK(z.keys() == std::vector<std::string>{"a", "b"});
  CHECK(z.tensor<float, Shape<dyn, 2>>("a")(2, 1) == 6.5f);
  CHECK(z.tensor<std::int32_t, Shape<4>>("b")(3) == 2147483647);
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  CHECK(files == 1);
}

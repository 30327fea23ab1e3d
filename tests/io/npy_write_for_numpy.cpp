// Writes .npy files with io::save_npy for tests/io/check_npy_written.py, which checks them
// with NumPy (ctest: io/npy_numpy_reads).
//
//   npy_write_for_numpy <fixtures/npy> <out dir>
//
// Two kinds of files: arrays made here from formulas that the Python side recomputes
// (formula_*.npy), and each readable fixture read with io::load_npy and written back
// (roundtrip_<fixture>.npy), which NumPy must find equal to the fixture it wrote itself;
// the same for .npz archives (formula.npz, roundtrip_arrays.npz).
#include <ctdl/io/npy.hpp>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

using namespace ctdl;

template <class T, ShapeType S>
void roundtrip(const std::string& in, const std::string& out, const std::string& name) {
  io::save_npy(out + "/roundtrip_" + name, io::load_npy<T, S>(in + "/" + name));
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: npy_write_for_numpy <fixtures/npy> <out dir>\n";
    return 2;
  }
  const std::string in = argv[1], out = argv[2];
  try {
    std::filesystem::create_directories(out);
    // float32 (3, 4): i / 7 - 0.75
    auto f = Tensor<float, Shape<dyn, 4>>::uninitialized({3, 4});
    for (index_t i = 0; i < f.size(); ++i) f.data()[i] = static_cast<float>(i) / 7.0f - 0.75f;
    io::save_npy(out + "/formula_f32_3x4.npy", f);
    // float64 (5,): 1 / (i + 1)
    auto d = Tensor<double, Shape<5>>::uninitialized({5});
    for (index_t i = 0; i < 5; ++i) d.data()[i] = 1.0 / static_cast<double>(i + 1);
    io::save_npy(out + "/formula_f64_5.npy", d);
    // int64 (2, 3): (i - 3) * 2^40
    auto l = Tensor<std::int64_t, Shape<2, 3>>::uninitialized({2, 3});
    for (index_t i = 0; i < 6; ++i) l.data()[i] = (i - 3) * (std::int64_t{1} << 40);
    io::save_npy(out + "/formula_i64_2x3.npy", l);
    // int32 (0, 7): empty; and a float32 scalar 2.5 (rank 0)
    io::save_npy(out + "/formula_i32_0x7.npy", Tensor<std::int32_t, Shape<dyn, 7>>({0, 7}));
    io::save_npy(out + "/formula_f32_scalar.npy", Tensor<float, Shape<>>::full({}, 2.5f));

    // .npz: the two arrays above in one archive, and the fixture archive read and written back
    io::NpzWriter npz(out + "/formula.npz");
    npz.add("f32", f);
    npz.add("i64", l);
    npz.commit();
    const io::NpzFile arrays(in + "/arrays.npz");
    io::NpzWriter back(out + "/roundtrip_arrays.npz");
    back.add("weights", arrays.tensor<float, Shape<dyn, dyn>>("weights"));
    back.add("ids", arrays.tensor<std::int64_t, Shape<dyn>>("ids"));
    back.commit();

    roundtrip<float, Shape<dyn, dyn>>(in, out, "f32_2x3.npy");
    roundtrip<double, Shape<dyn>>(in, out, "f64_4.npy");
    roundtrip<std::int32_t, Shape<dyn, dyn, dyn>>(in, out, "i32_2x2x3.npy");
    roundtrip<std::int64_t, Shape<dyn>>(in, out, "i64_3.npy");
    roundtrip<std::uint8_t, Shape<dyn>>(in, out, "u8_5.npy");
    roundtrip<bool, Shape<dyn>>(in, out, "bool_4.npy");
    roundtrip<float, Shape<dyn, dyn>>(in, out, "f32_be_2x2.npy");  // written back little-endian
    roundtrip<float, Shape<dyn, 4>>(in, out, "f32_0x4.npy");
    roundtrip<float, Shape<>>(in, out, "f32_scalar.npy");
  } catch (const std::exception& e) {
    std::cerr << "npy_write_for_numpy: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// Builds against the installed package with ctdl::xtensor: a tensor written as .npy and
// read back, and an xtensor view of it.
#include <ctdl/interop/xtensor.hpp>
#include <ctdl/io/npy.hpp>

#include <cstdio>

int main() {
  using namespace ctdl;
  Tensor<float, Shape<dyn, 2>> t({2, 2}, {1, 2, 3, 4.5f});
  io::save_npy("consumer_npy.npy", t);
  const auto back = io::load_npy<float, Shape<dyn, 2>>("consumer_npy.npy");
  const auto x = interop::to_xtensor(back.view());
  if (x(1, 1) != 4.5f) {
    std::printf("read back %g, wanted 4.5\n", static_cast<double>(x(1, 1)));
    return 1;
  }
  std::printf("consumer_npy: ok\n");
  return 0;
}

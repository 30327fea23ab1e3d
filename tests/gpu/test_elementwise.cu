// The CUDA evaluator: compiled and linked by nvcc in every CTDL_WITH_CUDA build. With a
// device present it runs expressions on it and compares with the CPU evaluator; without
// one it exits 77 (Skipped), naming why.
#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cuda/elementwise.cuh>

#include "gpu/gpu_test.hpp"

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  using namespace ctdl;
  gpu_test::require_device("gpu/elementwise");
  using S = Shape<dyn, 5>;
  Tensor<float, S> a({3, 5}), b({3, 5}), host_out({3, 5}), back({3, 5});
  Tensor<float, Shape<5>> bias({5});
  for (index_t i = 0; i < a.size(); ++i) {
    a.data()[i] = 0.1f * static_cast<float>(i) - 0.7f;
    b.data()[i] = 0.05f * static_cast<float>(i);
  }
  for (index_t i = 0; i < 5; ++i) bias.data()[i] = 0.3f * static_cast<float>(i);
  host_out = gelu(a * b + bias);

  Tensor<float, S, Cuda> da({3, 5}), db({3, 5}), dout({3, 5});
  Tensor<float, Shape<5>, Cuda> dbias({5});
  cuda::check(cudaMemcpy(da.data(), a.data(), sizeof(float) * 15, cudaMemcpyHostToDevice), "copy a");
  cuda::check(cudaMemcpy(db.data(), b.data(), sizeof(float) * 15, cudaMemcpyHostToDevice), "copy b");
  cuda::check(cudaMemcpy(dbias.data(), bias.data(), sizeof(float) * 5, cudaMemcpyHostToDevice), "copy bias");
  using L = expr::Leaf<float, S>;
  using LB = expr::Leaf<float, Shape<5>>;
  const auto e = gelu(L{{}, da.data(), da.extents(), {}} * L{{}, db.data(), db.extents(), {}} +
                      LB{{}, dbias.data(), dbias.extents(), {}});
  cuda::evaluate(e, dout.data(), dout.extents());
  cuda::check(cudaMemcpy(back.data(), dout.data(), sizeof(float) * 15, cudaMemcpyDeviceToHost), "copy out");
  for (index_t i = 0; i < 15; ++i) {
    if (std::abs(back.data()[i] - host_out.data()[i]) > 1e-5f) {
      std::printf("mismatch at %td: device %g host %g\n", i, back.data()[i], host_out.data()[i]);
      return 1;
    }
  }
  std::printf("device and host agree on 15 elements\n");

  // Tensor<T, S, Cuda> itself: zero-filled construction, values, copies, full() and
  // expression assignment all act on device memory.
  auto to_host = [](const auto& dev) {
    Tensor<float, S> h({dev.extent(0), 5});
    cuda::check(cudaMemcpy(h.data(), dev.data(), sizeof(float) * h.size(), cudaMemcpyDeviceToHost), "copy back");
    return h;
  };
  auto expect = [&](const char* what, const Tensor<float, S>& got, auto&& want) {
    for (index_t i = 0; i < got.size(); ++i) {
      if (std::abs(got.data()[i] - want(i)) > 1e-5f) {
        std::printf("%s: mismatch at %td: device %g expected %g\n", what, i, got.data()[i], want(i));
        return false;
      }
    }
    return true;
  };
  Tensor<float, S, Cuda> zeros({3, 5});
  Tensor<float, S, Cuda> copy = da;
  auto sevens = Tensor<float, S, Cuda>::full({3, 5}, 7.0f);
  Tensor<float, S, Cuda> fused = gelu(da * db + dbias);  // construction from an expression
  Tensor<float, S, Cuda> updated({3, 5});
  updated.fill(1.0f);
  updated += sevens * 2.0f;
  Tensor<float, Shape<2>, Cuda> listed({2}, {4.0f, -3.0f});
  float listed_back[2] = {};
  cuda::check(cudaMemcpy(listed_back, listed.data(), sizeof listed_back, cudaMemcpyDeviceToHost), "copy listed");
  bool ok = expect("zero-filled", to_host(zeros), [](index_t) { return 0.0f; }) &&
            expect("copy", to_host(copy), [&](index_t i) { return a.data()[i]; }) &&
            expect("full", to_host(sevens), [](index_t) { return 7.0f; }) &&
            expect("expression", to_host(fused), [&](index_t i) { return host_out.data()[i]; }) &&
            expect("fill and +=", to_host(updated), [](index_t) { return 15.0f; }) && listed_back[0] == 4.0f &&
            listed_back[1] == -3.0f;
  if (!ok) return 1;
  std::printf("Tensor<float, S, Cuda>: construction, copy, full, fill and expressions agree\n");

  // A destination read at other positions goes through a temporary, as on the CPU
  // (expr/test_eval.cpp): one thread would otherwise read row 0 after another wrote it.
  using S4 = Shape<dyn, 4>;
  auto rows_of = [](const auto& dev) {
    std::vector<float> h(static_cast<std::size_t>(dev.size()));
    cuda::check(cudaMemcpy(h.data(), dev.data(), sizeof(float) * h.size(), cudaMemcpyDeviceToHost), "copy back");
    return h;
  };
  // 4,096 rows: more threads than one block, so a race would show.
  const index_t n_rows = 4096;
  std::vector<float> init(static_cast<std::size_t>(n_rows * 4));
  for (std::size_t i = 0; i < init.size(); ++i) init[i] = static_cast<float>(i % 97) + 1.0f;
  Tensor<float, S4, Cuda> t({n_rows, 4}), u({n_rows, 4});
  cuda::check(cudaMemcpy(t.data(), init.data(), sizeof(float) * init.size(), cudaMemcpyHostToDevice), "copy t");
  cuda::check(cudaMemcpy(u.data(), init.data(), sizeof(float) * init.size(), cudaMemcpyHostToDevice), "copy u");
  t = t - t[0];
  u += lazy(u[1]);
  const auto th = rows_of(t), uh = rows_of(u);
  bool aliased_ok = true;
  for (std::size_t i = 0; i < init.size() && aliased_ok; ++i) {
    const float want_t = init[i] - init[i % 4], want_u = init[i] + init[4 + i % 4];
    if (th[i] != want_t || uh[i] != want_u) {
      std::printf("aliased assignment: element %zu: t = t - t[0] gave %g (want %g), u += u[1] gave %g (want %g)\n",
                  i, th[i], want_t, uh[i], want_u);
      aliased_ok = false;
    }
  }
  if (!aliased_ok) return 1;
  std::printf("a destination read at other positions (t = t - t[0], u += u[1]) is evaluated through a temporary\n");
  return 0;
}

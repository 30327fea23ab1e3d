#pragma once
// Ops on Var<T, S, Cuda> against the same ops on Var<T, S> (the CPU path), for the GPU
// op tests: a Twin holds the same values on the host and on the device; run an op on
// both, seed both backward passes with the same random upstream gradient, and compare
// the results and every gradient with Report::close.
//
//   auto x = ops_twin::make<float, Shape<dyn, dyn>>({4, 37}, 1);
//   Tape tc, tg;
//   auto yc = ops::softmax(tc, x.cpu);
//   auto yg = ops::softmax(tg, x.gpu);
//   ops_twin::backward(tc, tg, yc, yg, 2);
//   ops_twin::compare(report, "softmax", yc, yg, 1e-5);        // forward values
//   ops_twin::compare_grad(report, "softmax dx", x, 1e-5);    // gradients
//
// Inputs are random, never zero; gradients may be pre-filled (prefill_grad) so that an
// op that overwrites instead of adding (+=) fails.

#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cuda/elementwise.cuh>

#include <string>
#include <vector>

#include "gpu/gpu_test.hpp"

namespace ctdl::ops_twin {

template <class T, class S>
struct Twin {
  Var<T, S> cpu;
  Var<T, S, Cuda> gpu;
};

/// The elements of a tensor on either device, in a host vector.
template <class T, class S, class D>
std::vector<T> values(const Tensor<T, S, D>& t) {
  const auto h = to_host(t);
  return std::vector<T>(h.data(), h.data() + h.size());
}

/// A host tensor of the given extents, uniform in [lo, hi) rounded to T.
template <class T, class S>
Tensor<T, S> random_tensor(const Extents<S>& extents, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  auto t = Tensor<T, S>::uninitialized(extents);
  const auto v = gpu_test::random_values<T>(static_cast<std::size_t>(t.size()), seed, lo, hi);
  std::copy(v.begin(), v.end(), t.data());
  return t;
}

/// The same random values as a Var on the host and on the device.
template <class T, class S>
Twin<T, S> make(const Extents<S>& extents, unsigned seed, bool requires_grad = true, float lo = -1.0f,
                float hi = 1.0f) {
  auto h = random_tensor<T, S>(extents, seed, lo, hi);
  auto d = to_device<Cuda>(h);
  return {Var<T, S>(std::move(h), requires_grad), Var<T, S, Cuda>(std::move(d), requires_grad)};
}

/// Both gradients start from the same random values (so += is checked).
template <class T, class S>
void prefill_grad(Twin<T, S>& x, unsigned seed) {
  auto g = random_tensor<T, S>(x.cpu.extents(), seed, -0.1f, 0.1f);
  x.cpu.node_ptr()->accumulate(lazy(g));
  x.gpu.node_ptr()->accumulate(Var<T, S, Cuda>(to_device<Cuda>(g), false).as_expression());
}

/// Both tapes' backward from y with the same random seed gradient.
template <class T, class S>
void backward(Tape& tc, Tape& tg, const Var<T, S>& yc, const Var<T, S, Cuda>& yg, unsigned seed) {
  auto seed_grad = random_tensor<T, S>(yc.extents(), seed);
  tg.backward(yg, to_device<Cuda>(seed_grad));
  tc.backward(yc, seed_grad);
}

/// The device's forward values against the host's.
template <class T, class S>
bool compare(gpu_test::Report& report, const std::string& what, const Var<T, S>& yc, const Var<T, S, Cuda>& yg,
             double tol) {
  if (yc.extents() != yg.extents()) return report.expect(what, false, "the extents differ");
  return report.close(what, values(yg.value()), values(yc.value()), tol);
}

/// The device's gradient against the host's.
template <class T, class S>
bool compare_grad(gpu_test::Report& report, const std::string& what, const Twin<T, S>& x, double tol) {
  if (x.cpu.has_grad() != x.gpu.has_grad()) {
    return report.expect(what, false, x.cpu.has_grad() ? "the device has no gradient" : "only the device has one");
  }
  // Two missing gradients would compare equal (grad() zero-fills both): a gradient asked
  // for and made by neither device is a failure (tests of "no gradient" say so with expect).
  if (!x.cpu.has_grad()) return report.expect(what, false, "neither device made a gradient");
  return report.close(what, values(x.gpu.grad()), values(x.cpu.grad()), tol);
}

}  // namespace ctdl::ops_twin

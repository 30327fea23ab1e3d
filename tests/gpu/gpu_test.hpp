#pragma once
// What the GPU tests share (compiled by nvcc, run on a CUDA device):
//   - require_device(): without a usable device the test prints why and exits 77, which
//     CTest reports as Skipped (SKIP_RETURN_CODE 77, label `gpu`);
//   - Buffer<T>: device memory filled from and read back into host vectors;
//   - random inputs (never zeros: they hide unwritten outputs) and ids, NaN poison before a run;
//   - Report: named comparisons of a device result with the CPU path's, one line each,
//     and the exit status; guarded() runs a group of checks so that an exception fails
//     that group alone.
//
// Comparisons convert both sides to double. `close` passes when no element is NaN or
// infinite where the reference is finite, ||got - want|| / ||want|| <= tol, and every
// element is within tol * max(|want_i|, rms(want)) (so one wrong element cannot hide
// in a large norm). `equal` passes when every element has the same value (NaN where the
// reference has NaN: an fp16 LayerNorm of a constant row overflows rstd on both sides).

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "ctdl/core/dtype.hpp"
#include "ctdl/kernels/cuda/common.cuh"

namespace ctdl::gpu_test {

/// Exits 77 (Skipped) naming the reason when no CUDA device can run kernels.
inline void require_device(const char* test) {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess || n == 0) {
    std::printf("%s: skipped: no CUDA device (%s)\n", test,
                status != cudaSuccess ? cudaGetErrorString(status) : "cudaGetDeviceCount found none");
    std::exit(77);
  }
  cudaDeviceProp prop{};
  cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("%s: on %s (sm_%d%d)\n", test, prop.name, prop.major, prop.minor);
}

/// Device memory for n values of T, freed on destruction.
template <class T>
class Buffer {
 public:
  explicit Buffer(std::size_t n) : n_(n) {
    if (n_) cuda::check(cudaMalloc(&p_, n_ * sizeof(T)), "cudaMalloc (test buffer)");
  }
  explicit Buffer(const std::vector<T>& host) : Buffer(host.size()) { upload(host); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (p_) cudaFree(p_);
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw Error("gpu_test::Buffer::upload: size mismatch");
    if (n_) cuda::check(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    cuda::check(cudaDeviceSynchronize(), "kernel (before download)");
    if (n_) cuda::check(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return host;
  }
  /// All bytes 0xFF: NaN in float, bf16 and fp16, so an element no kernel wrote fails.
  void poison() {
    if (n_) cuda::check(cudaMemset(p_, 0xFF, n_ * sizeof(T)), "poison");
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// n values uniform in [lo, hi), rounded to T, from a seeded generator.
template <class T = float>
std::vector<T> random_values(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

/// n ids in [0, id_range) from a seeded generator (id_range < n repeats ids).
template <class I>
std::vector<I> random_ids(std::int64_t n, std::int64_t id_range, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, id_range - 1);
  std::vector<I> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<I>(dist(gen));
  return ids;
}

/// The ids 0, 0, 1, 1, 2, 2, ... (mod rows), shuffled: every id at most twice.
template <class I>
std::vector<I> ids_at_most_twice(std::int64_t n, std::int64_t rows, unsigned seed) {
  std::vector<I> ids(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = static_cast<I>((i / 2) % rows);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  return ids;
}

template <class T>
double as_double(const T& v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
inline double as_double<double>(const double& v) {
  return v;
}

/// Collects named checks; finish() prints the tally and gives the exit status.
class Report {
 public:
  explicit Report(std::string test) : test_(std::move(test)) {}

  /// got within tol of want, relative to the larger of each element's magnitude, want's
  /// rms and `floor`: a tensor that is zero in exact arithmetic (the attention key bias's
  /// gradient: softmax ignores a per-row constant) holds only rounding noise on both
  /// devices, which scales with the model's other values (pass 1e-2 of their largest), not
  /// with its own. A NaN in want is a failure unless got has one there too.
  template <class A, class B>
  bool close(const std::string& what, const std::vector<A>& got, const std::vector<B>& want, double tol,
             double floor = 0) {
    if (got.size() != want.size()) return fail(what, "sizes differ: " + std::to_string(got.size()) + " vs " +
                                                         std::to_string(want.size()));
    double diff2 = 0, ref2 = 0, max_abs = 0;
    for (std::size_t i = 0; i < want.size(); ++i)
      if (std::isfinite(as_double(want[i]))) ref2 += as_double(want[i]) * as_double(want[i]);
    const double rms = want.empty() ? 0.0 : std::sqrt(ref2 / static_cast<double>(want.size()));
    std::size_t worst = 0;
    double worst_ratio = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double g = as_double(got[i]), w = as_double(want[i]);
      if (std::isfinite(w) != std::isfinite(g) || std::isnan(w) != std::isnan(g)) {
        return fail(what, "element " + std::to_string(i) + " is " + std::to_string(g) + ", expected " +
                              std::to_string(w));
      }
      if (!std::isfinite(w)) {
        if (g != w && !std::isnan(w)) return fail(what, "element " + std::to_string(i) + " is " + std::to_string(g) +
                                                           ", expected " + std::to_string(w));
        continue;  // the same non-finite value on both sides
      }
      const double d = std::abs(g - w);
      diff2 += d * d;
      max_abs = std::max(max_abs, d);
      const double bound = std::max({std::abs(w), rms, floor});
      const double ratio = bound > 0 ? d / bound : d;
      if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
    }
    const double ref = std::max(ref2, floor * floor * static_cast<double>(want.size()));
    const double rel = ref > 0 ? std::sqrt(diff2 / ref) : std::sqrt(diff2);
    char line[320];
    std::snprintf(line, sizeof line, "rel %.2e, max abs %.2e, worst element %zu (%.6g vs %.6g), tol %.0e", rel,
                  max_abs, worst, want.empty() ? 0.0 : as_double(got[worst]),
                  want.empty() ? 0.0 : as_double(want[worst]), tol);
    if (rel > tol || worst_ratio > tol) return fail(what, line);
    return pass(what, line);
  }

  template <class A, class B>
  bool equal(const std::string& what, const std::vector<A>& got, const std::vector<B>& want) {
    if (got.size() != want.size()) return fail(what, "sizes differ");
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double g = as_double(got[i]), w = as_double(want[i]);
      if (!(g == w) && !(std::isnan(g) && std::isnan(w))) {  // NaN on both sides is the same result
        return fail(what, "element " + std::to_string(i) + " differs: " + std::to_string(as_double(got[i])) +
                              " vs " + std::to_string(as_double(want[i])));
      }
    }
    return pass(what, "identical, " + std::to_string(got.size()) + " elements");
  }

  bool expect(const std::string& what, bool ok, const std::string& detail = "") {
    return ok ? pass(what, detail) : fail(what, detail);
  }

  int finish() const {
    std::printf("%s: %d checks, %d failed\n", test_.c_str(), checks_, failures_);
    return failures_ ? 1 : 0;
  }

 private:
  bool pass(const std::string& what, const std::string& detail) {
    ++checks_;
    std::printf("  ok    %s: %s\n", what.c_str(), detail.c_str());
    return true;
  }
  bool fail(const std::string& what, const std::string& detail) {
    ++checks_, ++failures_;
    std::printf("  FAIL  %s: %s\n", what.c_str(), detail.c_str());
    return false;
  }
  std::string test_;
  int checks_ = 0, failures_ = 0;
};

/// Runs one group of checks; an exception fails it (named, with the message) instead of
/// ending the test, so one failure hides no other.
template <class F>
void guarded(Report& report, const std::string& what, F&& checks) {
  try {
    checks();
  } catch (const std::exception& e) {
    report.expect(what, false, std::string("threw: ") + e.what());
  }
}

/// f must throw ctdl::Error whose message contains `piece`.
template <class F>
void expect_error(Report& report, const std::string& what, const std::string& piece, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string message = e.what();
    report.expect(what, message.find(piece) != std::string::npos, message);
    return;
  } catch (const std::exception& e) {
    report.expect(what, false, std::string("not a ctdl::Error: ") + e.what());
    return;
  }
  report.expect(what, false, "no error was thrown (expected one containing \"" + piece + "\")");
}

/// What a gradient that flows through a LayerNorm's input (ds) must hold after backward:
/// the CPU op's result, except for float rows of width 1. There the LayerNorm's output is
/// beta whatever its input, so exactly nothing flows back (ds = 0), while rstd =
/// 1/sqrt(eps) = 1e6 multiplies any rounding of g - mean(g): the CPU op, compiled with
/// fused multiply-adds, adds that noise (measured: -0.0128 for one element of dy 0.765
/// and gamma 1.23); the float kernels round g first and add nothing. So for float at
/// width 1 the reference is the exact answer, the gradient as it was before backward.
/// In bf16 and fp16 the kernels keep the CPU's rounding points (mean(g) rounded to T,
/// g not), so both compute the same amplified rounding and are compared as elsewhere.
template <class T>
std::vector<T> through_ds(std::int64_t width, std::vector<T> cpu, const std::vector<T>& before) {
  return width == 1 && std::is_same_v<T, float> ? before : cpu;
}

}  // namespace ctdl::gpu_test

#pragma once
// gradcheck: compares backward() with central finite differences, in double.
//
//   auto r = gradcheck([](Tape& t, const auto& x, const auto& w) {
//     return t.record(gelu(x * w));
//   }, x, w);
//   REQUIRE(r.ok);   // r.report says which element disagrees, by how much
//
// With a fixed random projection r of the output, L(x) = sum(r * f(x)); backward seeded
// with r gives dL/dx analytically, and each element's (L(x + eps) - L(x - eps)) / 2eps
// gives it numerically. An element passes when |analytic - numeric| <= atol +
// rtol * |numeric|. f is run again for every perturbed element, under NoGrad.

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include "ctdl/autograd/tape.hpp"

namespace ctdl {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-6;
  std::uint64_t seed = 2024;
  int max_reported = 5;  // failing elements listed in the report
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  double max_rel_error = 0;
  std::size_t checked = 0;  // elements compared
  std::string report;
  explicit operator bool() const { return ok; }
};

template <class F, class... V>
GradcheckResult gradcheck(const GradcheckOptions& opt, F&& f, V... inputs);

/// gradcheck with default options.
template <class F, class... V>
  requires(is_var<V>::value && ...)
GradcheckResult gradcheck(F&& f, V... inputs) {
  return gradcheck(GradcheckOptions{}, std::forward<F>(f), std::move(inputs)...);
}

// ============================================================================

template <class F, class... V>
GradcheckResult gradcheck(const GradcheckOptions& opt, F&& f, V... inputs) {
  static_assert((std::is_same_v<typename V::value_type, double> && ...),
                "gradcheck runs in double: pass Var<double, ...> inputs");
  GradcheckResult res;
  std::ostringstream report;
  report.precision(10);

  // Analytic gradients of L = sum(r * f(x)).
  (inputs.zero_grad(), ...);
  auto y = [&] {
    Tape tape;
    auto out = f(tape, inputs...);
    using Y = decltype(out);
    static_assert(std::is_same_v<typename Y::value_type, double>, "gradcheck: f must return a Var<double, ...>");
    std::mt19937_64 rng(opt.seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    auto r = Tensor<double, typename Y::shape_type>::uninitialized(out.extents());
    for (index_t i = 0; i < r.size(); ++i) r.data()[i] = u(rng);
    if (out.requires_grad()) tape.backward(out, r);
    return std::make_pair(out, r);
  }();
  const auto& r = y.second;

  auto loss = [&] {
    Tape tape;
    NoGrad no_grad(tape);
    auto out = f(tape, inputs...);
    if (out.extents() != r.extents()) throw ShapeError("gradcheck: f changed its output extents between calls");
    return sum(out.value() * r).item();
  };

  int input_index = 0, reported = 0;
  auto check_input = [&](auto& x) {
    if (x.requires_grad()) {
      const auto& analytic = x.grad();
      // Each change through a fresh value(), so kernels see it (var.hpp: version).
      auto set = [&](index_t i, double value) { x.value().data()[i] = value; };
      for (index_t i = 0; i < x.value().size(); ++i) {
        const double v0 = std::as_const(x).value().data()[i];
        set(i, v0 + opt.eps);
        const double lp = loss();
        set(i, v0 - opt.eps);
        const double lm = loss();
        set(i, v0);
        const double numeric = (lp - lm) / (2 * opt.eps);
        const double a = analytic.data()[i];
        const double err = std::abs(a - numeric);
        const double rel = err / std::max(std::abs(numeric), 1e-300);
        ++res.checked;
        res.max_abs_error = std::max(res.max_abs_error, err);
        if (std::abs(numeric) > opt.atol) res.max_rel_error = std::max(res.max_rel_error, rel);
        if (!(err <= opt.atol + opt.rtol * std::abs(numeric))) {
          if (reported++ < opt.max_reported) {
            report << "input " << input_index << " element " << i << ": analytic " << a << ", numeric " << numeric
                   << ", |diff| " << err << "\n";
          }
          res.ok = false;
        }
      }
    }
    ++input_index;
  };
  (check_input(inputs), ...);

  std::ostringstream head;
  head << (res.ok ? "gradcheck passed" : "gradcheck FAILED") << ": " << res.checked
       << " elements, max |analytic - numeric| = " << res.max_abs_error << ", max relative = " << res.max_rel_error
       << " (eps " << opt.eps << ", atol " << opt.atol << ", rtol " << opt.rtol << ")\n";
  res.report = head.str() + report.str();
  return res;
}

}  // namespace ctdl

// The program behind docs/expressions-and-autograd.md: a layer built from scratch with
// expressions and the tape, and checked with gradcheck. Run: build/bin/tutorial_layer
#include <ctdl/ctdl.hpp>

#include <cstdio>
#include <random>

using namespace ctdl;

// ---- Step 1: an elementwise layer is one expression -------------------------------
// y = gelu(x * gamma + beta): gamma and beta broadcast along the rows of x. Recording it
// on the tape evaluates it in one fused loop and adds one tape entry whose backward is
// derived at compile time.
template <class T, index_t H>
Var<T, Shape<dyn, H>> scale_shift_gelu(Tape& tape, const Var<T, Shape<dyn, H>>& x, const Var<T, Shape<H>>& gamma,
                                       const Var<T, Shape<H>>& beta) {
  return tape.record(gelu(x * gamma + beta));
}

// ---- Step 2: a coarse op with a hand-written backward -----------------------------
// Centering each row: y = x - mean(x) over the last axis. Its backward is not
// elementwise (every output of a row depends on every input of the row):
//   dx = dy - mean(dy)   (row-wise)
// The backward reads no value, only y's gradient and x's, so the entry holds GradRefs:
// a Var member would keep x's and y's values alive until backward.
template <class T, class S>
struct CenterRowsEntry final : TapeEntry {
  GradRef<T, S> x, y;  // gradients only: this backward reads no values
  CenterRowsEntry(GradRef<T, S> x_, GradRef<T, S> y_) : x(std::move(x_)), y(std::move(y_)) {}
  const char* name() const override { return "center_rows"; }
  void backward() override {
    if (!y.has_grad()) return;
    const auto& dy = y.grad();
    const auto dy_mean = mean(dy, last_axis);  // Shape<dyn, 1>: broadcasts back
    x.node_ptr()->accumulate(dy - dy_mean);
  }
};

template <class T, class S>
Var<T, S> center_rows(Tape& tape, const Var<T, S>& x) {
  const auto m = mean(x.value(), last_axis);                 // reduces the value: a Var is refused
  Tensor<T, S> value = x.value() - m;                        // forward: one fused loop
  const bool needs_grad = tape.recording() && x.requires_grad();
  auto y = make_result(std::move(value), needs_grad);
  if (needs_grad) tape.push(std::make_unique<CenterRowsEntry<T, S>>(x, y));
  return y;
}

int main() {
  constexpr index_t H = 6;
  using X = Shape<dyn, H>;
  std::mt19937 rng(7);
  std::normal_distribution<double> n01;
  auto random = [&](auto extents) {
    using S = std::conditional_t<std::tuple_size_v<decltype(extents)> == 2, X, Shape<H>>;
    auto t = Tensor<double, S>::uninitialized(extents);
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = n01(rng);
    return t;
  };
  Var<double, X> x(random(std::array<index_t, 2>{4, H}));
  Var<double, Shape<H>> gamma(random(std::array<index_t, 1>{H})), beta(random(std::array<index_t, 1>{H}));

  // ---- Step 3: check both against finite differences --------------------------------
  auto layer = [](Tape& t, const auto& xv, const auto& g, const auto& b) {
    return center_rows(t, scale_shift_gelu(t, xv, g, b));
  };
  const auto r = gradcheck(layer, x, gamma, beta);
  std::printf("%s", r.report.c_str());

  // ---- Step 4: train it a little: pull the outputs towards zero ---------------------
  for (int step = 0; step < 3; ++step) {
    Tape tape;
    auto y = layer(tape, x, gamma, beta);
    auto loss = ops::mean(tape, tape.record(square(y)));
    std::printf("step %d: loss %.6f\n", step, loss.value().item());
    x.zero_grad();  // x is an input, but a Var requires a gradient by default: backward adds to x.grad() too
    gamma.zero_grad();
    beta.zero_grad();
    tape.backward(loss);
    gamma.value() -= lazy(gamma.grad()) * 0.5;  // plain SGD, one fused loop per tensor
    beta.value() -= lazy(beta.grad()) * 0.5;
  }
  return r.ok ? 0 : 1;
}

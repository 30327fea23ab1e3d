// Builds against the installed package: shaped tensors, a fused expression, a gradient.
#include <ctdl/ctdl.hpp>

#include <cmath>
#include <cstdio>

int main() {
  using namespace ctdl;
  Var<double, Shape<dyn, 4>> x(Tensor<double, Shape<dyn, 4>>({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8}));
  Var<double, Shape<4>> w(Tensor<double, Shape<4>>({4}, {0.5, -1, 2, 0.25}));
  Tape tape;
  auto y = tape.record(x * w + 1.0);
  auto loss = ops::sum(tape, y);
  tape.backward(loss);
  // d loss / d w = column sums of x = {6, 8, 10, 12}
  const double expected[4] = {6, 8, 10, 12};
  for (int i = 0; i < 4; ++i) {
    if (std::abs(w.grad().data()[i] - expected[i]) > 1e-12) {
      std::printf("wrong gradient at %d: %g\n", i, w.grad().data()[i]);
      return 1;
    }
  }
  std::printf("consumer ok: loss %g\n", loss.value().item());
  return 0;
}

// The eager reductions (ctdl::sum/mean/max) refuse an autograd Var and an expression of
// one: they return a Tensor now, which the tape would record as a constant, so
// `tape.record(x - mean(x, last_axis))` would silently get dx = dy instead of
// dy - mean(dy). The control build reduces x.value() (a number, not differentiated) and
// checks the trait that decides on a Var, an expression of one, and a plain tensor.
#include <ctdl/ctdl.hpp>
using namespace ctdl;
int main() {
  Tape tape;
  Var<float, Shape<dyn, 4>> x(Tensor<float, Shape<dyn, 4>>::full({2, 4}, 1.0f));
#ifdef CTDL_CONTROL
  static_assert(expr::holds_var_v<expr::expr_t<const Var<float, Shape<dyn, 4>>&>>);
  static_assert(expr::holds_var_v<decltype(x * 2.0f)>);
  static_assert(!expr::holds_var_v<expr::expr_t<const Tensor<float, Shape<dyn, 4>>&>>);
  auto y = tape.record(x - mean(x.value(), last_axis));
#else
  auto y = tape.record(x - mean(x * 2.0f, last_axis));
#endif
  return static_cast<int>(y.value().size());
}

// Adding tensors whose static hidden widths differ must not compile.
#include <ctdl/ctdl.hpp>
using namespace ctdl;
int main() {
  Tensor<float, Shape<dyn, 768>> a({2, 768});
#ifdef CTDL_CONTROL
  Tensor<float, Shape<dyn, 768>> b({2, 768});
#else
  Tensor<float, Shape<dyn, 1024>> b({2, 1024});
#endif
  auto c = a + b;
  (void)c;
}

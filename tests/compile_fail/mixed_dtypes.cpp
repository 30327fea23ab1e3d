// Mixing element types in one expression must not compile: convert with cast<T>.
#include <ctdl/ctdl.hpp>
using namespace ctdl;
int main() {
  Tensor<float, Shape<dyn>> a({3});
#ifdef CTDL_CONTROL
  Tensor<float, Shape<dyn>> b({3});
#else
  Tensor<double, Shape<dyn>> b({3});
#endif
  Tensor<float, Shape<dyn>> c = a + b;
  (void)c;
}

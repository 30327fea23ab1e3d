// Constructing a tensor from an expression of another static width must not compile.
#include <ctdl/ctdl.hpp>
using namespace ctdl;
int main() {
  Tensor<float, Shape<dyn, 768>> a({2, 768});
#ifdef CTDL_CONTROL
  Tensor<float, Shape<dyn, 768>> b = a * 2.0f;
#else
  Tensor<float, Shape<dyn, 1024>> b = a * 2.0f;
#endif
  (void)b;
}

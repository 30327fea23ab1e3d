// Assigning an expression that cannot broadcast to the destination must not compile.
#include <ctdl/ctdl.hpp>
using namespace ctdl;
int main() {
  Tensor<float, Shape<4, 5>> out;
#ifdef CTDL_CONTROL
  Tensor<float, Shape<4, 1>> a;
#else
  Tensor<float, Shape<4, 3>> a;
#endif
  out = a * 2.0f;
}

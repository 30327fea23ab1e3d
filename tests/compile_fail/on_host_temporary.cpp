// A pointer into on_host's copy of a device tensor must not be taken from the temporary:
// the copy is freed at the end of the statement (on the CPU, where on_host copies
// nothing, the same line works, so only this check catches it before a GPU does).
#include <ctdl/ctdl.hpp>
using namespace ctdl;
float first(const Tensor<float, Shape<dyn>, Cuda>& t) {
#ifdef CTDL_CONTROL
  const auto& host = on_host(t);
  const float* p = host.data();
#else
  const float* p = on_host(t).data();
#endif
  return p[0];
}
int main() {}

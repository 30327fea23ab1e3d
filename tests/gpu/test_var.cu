// Var and Tape on a CUDA device: a Var<T, S, Cuda> keeps its value and gradient in device
// memory; gradients accumulate there (the tape's seed, expressions over device tensors
// evaluated by the CUDA evaluator), GradRef reads them, zero_grad forgets them. The
// host never touches device memory except through copies.
#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cuda/elementwise.cuh>

#include "gpu/gpu_test.hpp"

namespace {

using namespace ctdl;
using S = Shape<dyn, dyn>;

template <class T>
std::vector<T> to_host(const Tensor<T, S, Cuda>& t) {
  std::vector<T> h(static_cast<std::size_t>(t.size()));
  DeviceAllocator<Cuda>::copy_to_host(h.data(), t.data(), sizeof(T) * h.size());
  return h;
}

template <class T>
Tensor<T, S, Cuda> to_device(const std::vector<T>& h, index_t rows, index_t cols) {
  Tensor<T, S, Cuda> t({rows, cols});
  DeviceAllocator<Cuda>::copy_from_host(t.data(), h.data(), sizeof(T) * h.size());
  return t;
}

}  // namespace

int main() {
  gpu_test::require_device("gpu/var");
  gpu_test::Report report("gpu/var");
  try {
    const index_t rows = 3, cols = 37;
    const std::size_t n = static_cast<std::size_t>(rows * cols);
    const auto x0 = gpu_test::random_values<float>(n, 1), seed = gpu_test::random_values<float>(n, 2);
    const auto a = gpu_test::random_values<float>(n, 3), b = gpu_test::random_values<float>(n, 4);

    Var<float, S, Cuda> x(to_device(x0, rows, cols));
    report.expect("a new Var needs a gradient and has none yet", x.requires_grad() && !x.has_grad());
    report.equal("its value lives on the device", to_host(x.value()), x0);

    // The tape's seed lands in the gradient, twice over for two backward passes.
    Tape tape;
    tape.backward(x, to_device(seed, rows, cols));
    report.equal("backward(y, seed): grad = seed", to_host(x.grad()), seed);
    tape.backward(x, to_device(seed, rows, cols));
    std::vector<float> twice(n);
    for (std::size_t i = 0; i < n; ++i) twice[i] = seed[i] + seed[i];
    report.equal("a second backward adds the seed again", to_host(x.grad()), twice);

    // An expression over device tensors accumulates through the CUDA evaluator.
    const auto da = to_device(a, rows, cols), db = to_device(b, rows, cols);
    x.node_ptr()->accumulate(da * db + 1.0f);
    std::vector<float> want(n);
    for (std::size_t i = 0; i < n; ++i) want[i] = twice[i] + (a[i] * b[i] + 1.0f);
    report.close("grad += a * b + 1 on the device", to_host(x.grad()), want, 1e-6);

    // A GradRef sees the same gradient; zero_grad forgets it, and the next read is zeros.
    const GradRef<float, S, Cuda> ref(x);
    report.equal("GradRef reads the gradient", to_host(ref.grad()), to_host(x.grad()));
    x.zero_grad();
    report.expect("zero_grad forgets the gradient", !x.has_grad());
    report.equal("then grad() is zero-filled", to_host(x.grad()), std::vector<float>(n, 0.0f));

    // A one-element loss is seeded with 1; a loss of more elements is an Error.
    Var<float, S, Cuda> loss(Tensor<float, S, Cuda>::full({1, 1}, 2.5f));
    tape.backward(loss);
    report.equal("backward(loss) seeds 1", to_host(loss.grad()), std::vector<float>{1.0f});
    bool named = false;
    try {
      tape.backward(x);
    } catch (const ShapeError& e) {
      named = std::string(e.what()).find("one element") != std::string::npos;
    }
    report.expect("backward of a loss of 111 elements is a ShapeError", named);

    // bf16 Vars too (the seed's storage type is the Var's).
    const auto h16 = gpu_test::random_values<bf16>(n, 5);
    Var<bf16, S, Cuda> y(Tensor<bf16, S, Cuda>({rows, cols}));
    tape.backward(y, to_device(h16, rows, cols));
    report.equal("bf16: grad = seed", to_host(y.grad()), h16);
  } catch (const std::exception& e) {
    report.expect("no exception", false, e.what());
  }
  return report.finish();
}

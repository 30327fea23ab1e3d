// The matmul floor of a BERT-base step on the GPU (issue 13): the step's matrix products
// alone, back to back through cuda::gemm (cuBLASLt), with nothing else in between. No
// implementation of the step can beat it, so it bounds sentences/s from above.
//
// Per layer (12; hidden 768, 12 heads of 64, intermediate 3072; T = batch * seq tokens):
//   forward:  QKV  x W^T  (T x 768 -> 2304)      attention output (T x 768 -> 768)
//             FFN in (T x 768 -> 3072)          FFN out (T x 3072 -> 768)
//             scores Q K^T (batch*heads x S x S, K = 64)   context P V (batch*heads x S x 64)
//   backward: two products per forward product, with their real shapes and transposes:
//             linear dx = dy W and dW += dy^T x; scores dQ = dZ K and dK = dZ^T Q;
//             context dP = dC V^T and dV = P^T dC.
// Training = forward + backward (3x the forward's flops); inference = forward alone.
// Flops: 2 M N K per product (times the batch count). The same products and flop count
// as the PyTorch floor in ../shared/anchors (which repeats the forward shapes 3 times).
//
// Configurations, batch 64 x 128 unless named:
//   bf16            bf16 inputs and outputs (the PyTorch floor's)
//   bf16 -> fp32    bf16 inputs, fp32 outputs: how ctdl's Bf16Mixed runs its products
//   tf32, fp32      float inputs and outputs, with and without TF32 tensor cores
//   inference       bf16 and fp32 at 64 x 128, bf16 at 1 x 128
// Each: 3 warm-up steps, then 10 timed steps (CUDA events around each), median reported.
//
// Usage: bench_cuda_matmul_floor [reps]. Exits 77 without a GPU. About 5 s on an H100.

#include <ctdl/kernels/cuda/blas.cuh>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using namespace ctdl;

struct Bert {
  index_t layers = 12, hidden = 768, heads = 12, intermediate = 3072;
};

struct Product {
  cuda::GemmDims dims;
  float beta = 0.0f;  // 1 for the weight gradients, which accumulate
};

/// The products of one layer (forward, then backward when training).
std::vector<Product> layer_products(const Bert& m, index_t batch, index_t seq, bool training) {
  const index_t tokens = batch * seq, d = m.hidden / m.heads, bh = batch * m.heads;
  struct Linear {
    index_t in, out;
  };
  const Linear linears[] = {{m.hidden, 3 * m.hidden}, {m.hidden, m.hidden}, {m.hidden, m.intermediate},
                            {m.intermediate, m.hidden}};
  std::vector<Product> p;
  for (const auto& l : linears) p.push_back({{1, tokens, l.out, l.in, false, true}});  // y = x W^T
  p.push_back({{bh, seq, seq, d, false, true}});                                       // scores = Q K^T
  p.push_back({{bh, seq, d, seq, false, false}});                                      // context = P V
  if (training) {
    for (const auto& l : linears) {
      p.push_back({{1, tokens, l.in, l.out, false, false}});          // dx = dy W
      p.push_back({{1, l.out, l.in, tokens, true, false}, 1.0f});     // dW += dy^T x
    }
    p.push_back({{bh, seq, d, seq, false, false}});  // dQ = dZ K
    p.push_back({{bh, seq, d, seq, true, false}});   // dK = dZ^T Q
    p.push_back({{bh, seq, seq, d, false, true}});   // dP = dC V^T
    p.push_back({{bh, seq, d, seq, true, false}});   // dV = P^T dC
  }
  return p;
}

template <class T>
__global__ void fill_kernel(T* p, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // Small values of both signs from a hash of i: no zeros (which some hardware runs
  // faster) and no overflow in fp16.
  if (i < n) cuda::store(p, i, static_cast<float>((static_cast<std::uint32_t>(i) * 2654435761u) >> 22) / 1024.0f - 0.5f);
}

template <class T>
T* device_values(std::int64_t n) {
  T* p = nullptr;
  cuda::check(cudaMalloc(&p, static_cast<std::size_t>(n) * sizeof(T)), "cudaMalloc (benchmark operand)");
  fill_kernel<<<cuda::blocks_for(n), cuda::kThreads>>>(p, n);
  cuda::check_launch("fill");
  return p;
}

std::int64_t elements(const cuda::GemmDims& d, char which) {
  if (which == 'a') return d.batch * d.m * d.k;
  if (which == 'b') return d.batch * d.k * d.n;
  return d.batch * d.m * d.n;
}

/// Runs one configuration and prints its line.
template <class T, class TC>
void run(const char* name, index_t batch, index_t seq, bool training, bool tf32, int reps) {
  const Bert bert;
  const auto products = layer_products(bert, batch, seq, training);
  std::int64_t most_a = 0, most_b = 0, most_c = 0;
  double flops = 0;
  for (const auto& p : products) {
    most_a = std::max(most_a, elements(p.dims, 'a'));
    most_b = std::max(most_b, elements(p.dims, 'b'));
    most_c = std::max(most_c, elements(p.dims, 'c'));
    flops += 2.0 * static_cast<double>(p.dims.batch) * static_cast<double>(p.dims.m) * static_cast<double>(p.dims.n) *
             static_cast<double>(p.dims.k);
  }
  flops *= static_cast<double>(bert.layers);
  // One buffer per operand, as large as the largest use: the floor measures the products,
  // not where their operands live.
  T* a = device_values<T>(most_a);
  T* b = device_values<T>(most_b);
  TC* c = device_values<TC>(most_c);
  auto step = [&] {
    for (index_t layer = 0; layer < bert.layers; ++layer)
      for (const auto& p : products) cuda::gemm<T, TC>(a, b, c, p.dims, {.beta = p.beta, .tf32 = tf32});
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: cuBLASLt's heuristics and plans, clocks
  cudaEvent_t start, stop;
  cuda::check(cudaEventCreate(&start), "cudaEventCreate");
  cuda::check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> ms(static_cast<std::size_t>(reps));
  for (auto& t : ms) {
    cuda::check(cudaEventRecord(start, cuda::current_stream()), "cudaEventRecord");
    step();
    cuda::check(cudaEventRecord(stop, cuda::current_stream()), "cudaEventRecord");
    cuda::check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    cuda::check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf("%-10s %-14s batch %3td x %3td  %8.3f ms/step  %6.1f TFLOP/s  %9.1f sentences/s  (%zu products)\n",
              training ? "train" : "inference", name, batch, seq, median, flops / (median * 1e-3) / 1e12,
              static_cast<double>(batch) / (median * 1e-3), products.size() * static_cast<std::size_t>(bert.layers));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("bench_cuda_matmul_floor: skipped: no CUDA device (%s)\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "cudaGetDeviceCount found none");
    return 77;
  }
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  try {
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("BERT-base matmul floor (12 layers, the step's products alone, cuBLASLt) on %s, median of %d\n",
                prop.name, reps);
    run<bf16, bf16>("bf16", 64, 128, true, false, reps);
    run<bf16, float>("bf16 -> fp32", 64, 128, true, false, reps);
    run<float, float>("tf32", 64, 128, true, true, reps);
    run<float, float>("fp32", 64, 128, true, false, reps);
    run<bf16, bf16>("bf16", 64, 128, false, false, reps);
    run<bf16, float>("bf16 -> fp32", 64, 128, false, false, reps);
    run<float, float>("tf32", 64, 128, false, true, reps);
    run<float, float>("fp32", 64, 128, false, false, reps);
    run<bf16, bf16>("bf16", 1, 128, false, false, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_matmul_floor: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Builds against the installed package with ctdl::nccl: NcclComm from the installed
// headers, linked with the NCCL the installed config found. With a CUDA device it also
// runs one all-reduce on one rank; without one it says so and stops there.
#include <ctdl/dist/nccl.hpp>

#include <cuda_runtime_api.h>

#include <cstdio>

static_assert(ctdl::dist::AsyncCommunicator<ctdl::dist::NcclComm>);

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("consumer_nccl: ok (built; no CUDA device to run NCCL on)\n");
    return 0;
  }
  ctdl::dist::NcclComm comm(0);
  float* x = nullptr;
  const float one = 1.f;
  float back = 0.f;
  if (cudaMalloc(reinterpret_cast<void**>(&x), sizeof(float)) != cudaSuccess) return 1;
  cudaMemcpy(x, &one, sizeof(float), cudaMemcpyHostToDevice);
  comm.all_reduce(x, 1, ctdl::dist::ReduceOp::sum);
  cudaMemcpy(&back, x, sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(x);
  std::printf("consumer_nccl: %s (one rank's all-reduce of 1: %g)\n", back == 1.f ? "ok" : "WRONG",
              static_cast<double>(back));
  return back == 1.f ? 0 : 1;
}

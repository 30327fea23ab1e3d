#pragma once
// Devices are tag types. Each op dispatches on the tag; elementwise math is written once
// in CTDL_HOST_DEVICE functors shared by both backends.

#include <cstdlib>
#include <new>
#include <string>

#include "ctdl/core/config.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/fwd.hpp"

#if defined(CTDL_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace ctdl {

struct Cpu {
  static constexpr const char* name = "cpu";
};
struct Cuda {
  static constexpr const char* name = "cuda";
};


/// Raw, aligned, uninitialised memory on a device.
template <Device D>
struct DeviceAllocator;

// ============================================================================

template <>
struct DeviceAllocator<Cpu> {
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
    void* p = std::aligned_alloc(kTensorAlignment, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void deallocate(void* p) noexcept { std::free(p); }
};

template <>
struct DeviceAllocator<Cuda> {
  static void* allocate(std::size_t bytes) {
#if defined(CTDL_WITH_CUDA)
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      throw Error("cudaMalloc of " + std::to_string(bytes) + " bytes failed");
    }
    return p;
#else
    (void)bytes;
    throw Error("this program was built without CUDA (configure with -DCTDL_WITH_CUDA=ON)");
#endif
  }
  static void deallocate(void* p) noexcept {
#if defined(CTDL_WITH_CUDA)
    if (p) cudaFree(p);
#else
    (void)p;
#endif
  }
};

}  // namespace ctdl

#pragma once
// Devices are tag types. Each op dispatches on the tag; elementwise math is written once
// in CTDL_HOST_DEVICE functors shared by both backends.

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>

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

/// CPU memory, 64-byte aligned. Blocks of at least kCacheMinBytes are kept after they
/// are freed and handed out again for a request of the same rounded size: a training
/// step allocates the same activation and gradient sizes every step, so after the
/// first step no large allocation reaches the operating system (fresh pages from it
/// must be faulted in and zeroed, which costs as much as a large elementwise pass).
/// release_cached() returns the kept blocks.
template <>
struct DeviceAllocator<Cpu> {
  static constexpr std::size_t kCacheMinBytes = std::size_t{1} << 20;

  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = round_up(bytes);
    if (rounded >= kCacheMinBytes) {
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mutex);
      auto it = c.free.find(rounded);
      if (it != c.free.end()) {
        void* p = it->second;
        c.free.erase(it);
        c.sizes[p] = rounded;
        c.cached_bytes -= rounded;
        c.note_live(rounded);
        return p;
      }
    }
    void* p = std::aligned_alloc(kTensorAlignment, rounded);
    if (!p) {
      release_cached();
      p = std::aligned_alloc(kTensorAlignment, rounded);
      if (!p) throw std::bad_alloc();
    }
    if (rounded >= kCacheMinBytes) {
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mutex);
      c.sizes[p] = rounded;
      c.note_live(rounded);
      ++c.system_allocations;
    }
    return p;
  }

  static void deallocate(void* p) noexcept {
    if (!p) return;
    Cache& c = cache();
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      auto it = c.sizes.find(p);
      if (it != c.sizes.end()) {
        c.free.emplace(it->second, p);
        c.cached_bytes += it->second;
        c.live_bytes -= it->second;
        c.sizes.erase(it);
        return;
      }
    }
    std::free(p);
  }

  /// The most bytes ever in use at once in blocks of at least kCacheMinBytes (kept
  /// blocks not counted): what a perfect allocator would need for them.
  static std::size_t peak_live_bytes() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.peak_live_bytes;
  }

  /// How many blocks of at least kCacheMinBytes had to come from the operating system
  /// (none were kept of their size). Steady-state training steps should add none.
  static std::size_t system_allocations() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.system_allocations;
  }

  /// Frees every kept block; returns how many bytes that was.
  static std::size_t release_cached() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto& [size, p] : c.free) std::free(p);
    c.free.clear();
    return std::exchange(c.cached_bytes, 0);
  }

 private:
  struct Cache {
    std::mutex mutex;
    std::multimap<std::size_t, void*> free;      // kept blocks by size
    std::unordered_map<void*, std::size_t> sizes;  // live cacheable blocks
    std::size_t cached_bytes = 0;
    std::size_t live_bytes = 0, peak_live_bytes = 0;  // of the cacheable blocks in use
    std::size_t system_allocations = 0;               // cacheable blocks not found kept
    void note_live(std::size_t bytes) {
      live_bytes += bytes;
      peak_live_bytes = std::max(peak_live_bytes, live_bytes);
    }
  };
  static Cache& cache() {
    static Cache* c = new Cache;  // never destroyed: tensors may be freed during exit
    return *c;
  }
  static std::size_t round_up(std::size_t bytes) {
    const std::size_t unit = bytes >= (std::size_t{1} << 20) ? std::size_t{1} << 16 : kTensorAlignment;
    return (bytes + unit - 1) / unit * unit;
  }
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

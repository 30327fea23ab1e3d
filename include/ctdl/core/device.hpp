#pragma once
// Devices are tag types. Each op dispatches on the tag; elementwise math is written once
// in CTDL_HOST_DEVICE functors shared by both backends.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

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

/// CPU memory, 64-byte aligned, with a bounded cache of large blocks.
///
/// Blocks of at least kCacheMinBytes are kept after they are freed and handed out again:
/// a training step allocates the same activation and gradient sizes every step, so after
/// the first step no large allocation reaches the operating system (fresh pages from it
/// must be faulted in and zeroed, which costs as much as a large elementwise pass).
///
/// Contract (what keeps varying shapes from growing memory without bound):
///   - a request takes the smallest kept block of its rounded size up to 1/8 larger
///     (best fit; the exact size when there is one), else a new block;
///   - kept + live large bytes never exceed cache_limit() = max(kCacheFloorBytes,
///     2 x the most large bytes live at once since the start or the last
///     release_cached()): a new block or a freed one that
///     would pass it evicts kept blocks, largest first (a freed block is itself
///     returned to the system when still over) (the factor 2 leaves room for a step's sizes that are live at
///     different times, so steady-state training still reuses every block);
///   - when the system refuses a block, every kept block is returned and it is asked
///     again (release on pressure); release_cached() does the same on demand.
template <>
struct DeviceAllocator<Cpu> {
  static constexpr std::size_t kCacheMinBytes = std::size_t{1} << 20;
  /// The cache limit never drops below this, so small programs keep reusing blocks.
  static constexpr std::size_t kCacheFloorBytes = std::size_t{64} << 20;

  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = round_up(bytes);
    if (rounded >= kCacheMinBytes) {
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mutex);
      auto it = c.free.lower_bound(rounded);
      if (it != c.free.end() && it->first - rounded <= rounded / 8) {
        const auto [size, p] = *it;
        c.free.erase(it);
        c.sizes[p] = size;
        c.cached_bytes -= size;
        c.note_live(size);
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
      c.evict_until(c.limit());
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
        const std::size_t size = it->second;
        c.sizes.erase(it);
        c.live_bytes -= size;
        const std::size_t limit = c.limit();
        c.evict_until(limit - std::min(limit, size));  // room to keep this one
        if (c.cached_bytes + c.live_bytes + size <= limit) {
          c.free.emplace(size, p);
          c.cached_bytes += size;
          return;
        }
      }
    }
    std::free(p);
  }

  /// Memory operations shared with the other devices' allocators (Tensor uses them).
  template <class T>
  static void fill(T* p, std::size_t n, const T& v) {
    std::fill(p, p + n, v);
  }
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  static void copy_from_host(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }

  /// The most bytes in use at once in blocks of at least kCacheMinBytes since the start
  /// or the last reset_peak_live_bytes() (kept blocks not counted): what a perfect
  /// allocator would need for them.
  static std::size_t peak_live_bytes() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.peak_live_bytes;
  }
  /// Starts a new peak_live_bytes() measurement from the bytes live now. (The cache
  /// limit follows its own high-water mark, which this does not reset.)
  static void reset_peak_live_bytes() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    c.peak_live_bytes = c.live_bytes;
  }
  /// Bytes in use now in blocks of at least kCacheMinBytes.
  static std::size_t live_bytes() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.live_bytes;
  }
  /// Bytes in kept (freed, not yet reused) blocks.
  static std::size_t cached_bytes() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.cached_bytes;
  }
  /// The bound on live_bytes() + cached_bytes() that freeing enforces (see the contract).
  static std::size_t cache_limit() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.limit();
  }

  /// How many blocks of at least kCacheMinBytes had to come from the operating system
  /// (none were kept of their size). Steady-state training steps should add none.
  static std::size_t system_allocations() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.system_allocations;
  }

  /// Frees every kept block and starts the limit's high-water mark anew from the bytes
  /// live now (a program past a phase that needed much memory, or a test that needs
  /// the limit of a fresh process); returns how many bytes were freed.
  static std::size_t release_cached() noexcept {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto& [size, p] : c.free) std::free(p);
    c.free.clear();
    c.high_water_live = c.live_bytes;
    return std::exchange(c.cached_bytes, 0);
  }

 private:
  struct Cache {
    std::mutex mutex;
    std::multimap<std::size_t, void*> free;      // kept blocks by size
    std::unordered_map<void*, std::size_t> sizes;  // live cacheable blocks
    std::size_t cached_bytes = 0;
    std::size_t live_bytes = 0, peak_live_bytes = 0;  // of the cacheable blocks in use
    std::size_t high_water_live = 0;                  // the limit's basis; reset by release_cached()
    std::size_t system_allocations = 0;               // cacheable blocks not found kept
    void note_live(std::size_t bytes) {
      live_bytes += bytes;
      peak_live_bytes = std::max(peak_live_bytes, live_bytes);
      high_water_live = std::max(high_water_live, live_bytes);
    }
    std::size_t limit() const { return std::max(kCacheFloorBytes, 2 * high_water_live); }
    /// Frees kept blocks, largest first, until live + kept bytes are at most `bytes`.
    void evict_until(std::size_t bytes) {
      while (!free.empty() && cached_bytes + live_bytes > bytes) {
        auto largest = std::prev(free.end());
        cached_bytes -= largest->first;
        std::free(largest->second);
        free.erase(largest);
      }
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

/// CUDA device memory from the device's stream-ordered memory pool (cudaMallocAsync).
///
/// Contract:
///   - allocate/deallocate are ordered on cuda::current_stream() (the legacy default
///     stream), so a block freed after the kernels that used it is reused by later work
///     without a synchronisation;
///   - freed memory stays in the pool (release threshold: unlimited), so steady-state
///     training steps allocate nothing from the driver; the pool never holds more than
///     the most memory live at once since the start or the last release_cached();
///   - when the pool cannot grow (the device is full), every kept block is returned to
///     the driver and the allocation is tried once more, then fails with an Error that
///     names the size asked for and the device's free and total memory;
///   - plain device memory only, never managed memory;
///   - small host-to-device copies are staged through pinned buffers and do not make the
///     host wait for the device (copy_from_host); device-to-host copies wait, as they must.
/// peak_live_bytes() is the pool's high-water mark of memory in use, the figure to set
/// beside PyTorch's max_memory_allocated().
template <>
struct DeviceAllocator<Cuda> {
  static void* allocate(std::size_t bytes) {
#if defined(CTDL_WITH_CUDA)
    if (bytes == 0) return nullptr;
    cudaMemPool_t pool = current_pool();
    void* p = nullptr;
    cudaError_t status = cudaMallocFromPoolAsync(&p, bytes, pool, nullptr);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it, give the kept blocks back, ask again
      release_cached();
      status = cudaMallocFromPoolAsync(&p, bytes, pool, nullptr);
    }
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      std::size_t free = 0, total = 0;
      (void)cudaMemGetInfo(&free, &total);
      throw Error("CUDA allocation of " + std::to_string(bytes) + " bytes failed (" + cudaGetErrorString(status) +
                  "; the device has " + std::to_string(free >> 20) + " of " + std::to_string(total >> 20) +
                  " MiB free)");
    }
    return p;
#else
    (void)bytes;
    unavailable();
#endif
  }
  static void deallocate(void* p) noexcept {
#if defined(CTDL_WITH_CUDA)
    if (p) (void)cudaFreeAsync(p, nullptr);
#else
    (void)p;
#endif
  }

  /// n elements at device pointer p set to v: cudaMemset where v's bytes are all zero,
  /// otherwise a host buffer of v copied over (no kernel needed, so host compilers can
  /// build it).
  template <class T>
  static void fill(T* p, std::size_t n, const T& v) {
    if (n == 0) return;
    const auto* bytes = reinterpret_cast<const unsigned char*>(&v);
    const bool zero = std::all_of(bytes, bytes + sizeof(T), [](unsigned char b) { return b == 0; });
#if defined(CTDL_WITH_CUDA)
    if (zero) {
      check(cudaMemset(p, 0, n * sizeof(T)), "cudaMemset");
    } else {
      std::vector<T> host(n, v);
      copy_from_host(p, host.data(), n * sizeof(T));
    }
#else
    (void)p, (void)zero;
    unavailable();
#endif
  }
  /// Device to device.
  static void copy(void* dst, const void* src, std::size_t bytes) {
#if defined(CTDL_WITH_CUDA)
    if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy device to device");
#else
    (void)dst, (void)src, (void)bytes;
    unavailable();
#endif
  }
  /// Host-to-device copies up to this size are staged (copy_from_host).
  static constexpr std::size_t kStagedCopyBytes = std::size_t{1} << 20;

  /// Host to device. `src` may be reused as soon as this returns, and work queued after it
  /// on cuda::current_stream() sees the data. Copies of up to kStagedCopyBytes (a batch's
  /// ids, masks and labels) go through pinned staging buffers with cudaMemcpyAsync, so the
  /// host does not wait for the device: a cudaMemcpy from pageable memory first waits for
  /// the stream, which held the host at every step's upload until the GPU caught up.
  /// Larger copies (weights), or any where pinned memory cannot be had, use cudaMemcpy.
  static void copy_from_host(void* dst, const void* src, std::size_t bytes) {
#if defined(CTDL_WITH_CUDA)
    if (!bytes) return;
    if (bytes <= kStagedCopyBytes && staged_copy(dst, src, bytes)) return;
    check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy host to device");
#else
    (void)dst, (void)src, (void)bytes;
    unavailable();
#endif
  }
  static void copy_to_host(void* dst, const void* src, std::size_t bytes) {
#if defined(CTDL_WITH_CUDA)
    if (bytes) check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device to host");
#else
    (void)dst, (void)src, (void)bytes;
    unavailable();
#endif
  }

  /// The most bytes in use at once since the start or the last reset_peak_live_bytes().
  static std::size_t peak_live_bytes() { return pool_attribute(kUsedHigh); }
  /// Starts a new peak_live_bytes() measurement.
  static void reset_peak_live_bytes() {
#if defined(CTDL_WITH_CUDA)
    std::uint64_t zero = 0;
    check(cudaMemPoolSetAttribute(current_pool(), cudaMemPoolAttrUsedMemHigh, &zero), "cudaMemPoolSetAttribute");
#endif
  }
  /// Bytes in use now.
  static std::size_t live_bytes() { return pool_attribute(kUsedNow); }
  /// Bytes the pool holds from the driver now (in use + kept).
  static std::size_t reserved_bytes() { return pool_attribute(kReservedNow); }

  /// Waits for the device, then returns every kept block to the driver; returns how many
  /// bytes were returned.
  static std::size_t release_cached() {
#if defined(CTDL_WITH_CUDA)
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before trimming the memory pool)");
    const std::size_t before = reserved_bytes();
    check(cudaMemPoolTrimTo(current_pool(), 0), "cudaMemPoolTrimTo");
    return before - std::min(before, reserved_bytes());
#else
    return 0;
#endif
  }

 private:
  enum Attribute { kUsedNow, kUsedHigh, kReservedNow };
#if defined(CTDL_WITH_CUDA)
  static void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw Error(std::string(what) + " failed: " + cudaGetErrorString(status));
  }
  /// The current device's default pool, set once per device to keep what is freed.
  static cudaMemPool_t current_pool() {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    static std::mutex mutex;
    static std::map<int, cudaMemPool_t> pools;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = pools.find(device);
    if (it != pools.end()) return it->second;
    cudaMemPool_t pool = nullptr;
    check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
    std::uint64_t keep_all = ~std::uint64_t{0};
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all), "cudaMemPoolSetAttribute");
    pools.emplace(device, pool);
    return pool;
  }
#endif
  static std::size_t pool_attribute(Attribute which) {
#if defined(CTDL_WITH_CUDA)
    const cudaMemPoolAttr attr = which == kUsedNow    ? cudaMemPoolAttrUsedMemCurrent
                                 : which == kUsedHigh ? cudaMemPoolAttrUsedMemHigh
                                                      : cudaMemPoolAttrReservedMemCurrent;
    std::uint64_t value = 0;
    check(cudaMemPoolGetAttribute(current_pool(), attr, &value), "cudaMemPoolGetAttribute");
    return static_cast<std::size_t>(value);
#else
    (void)which;
    return 0;
#endif
  }
  [[noreturn]] static void unavailable() {
    throw Error("this program was built without CUDA (configure with -DCTDL_WITH_CUDA=ON)");
  }

#if defined(CTDL_WITH_CUDA)
  static constexpr int kStagingSlots = 8;
  /// A thread's staging buffers on one device: pinned blocks of kStagedCopyBytes used in
  /// turn, each with an event recorded after the copy that last read it (a block is
  /// reused once that copy is done: eight uploads later, long finished in practice).
  struct StagingRing {
    void* host[kStagingSlots] = {};
    cudaEvent_t read[kStagingSlots] = {};
    int next = 0;
    bool unavailable = false;  // pinned memory refused: copy synchronously
  };
  /// Copies through this thread's ring on the current device; false if pinned memory or
  /// an event cannot be had (the caller falls back to cudaMemcpy).
  static bool staged_copy(void* dst, const void* src, std::size_t bytes) {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice (staged copy)");
    // Per thread, so no lock; never freed (pinned memory is the process's until it ends,
    // and the runtime may be gone when a thread's destructors run at exit).
    thread_local auto* rings = new std::map<int, StagingRing>;
    StagingRing& ring = (*rings)[device];
    if (ring.unavailable) return false;
    const int k = ring.next;
    if (!ring.host[k]) {
      if (cudaHostAlloc(&ring.host[k], kStagedCopyBytes, cudaHostAllocPortable) != cudaSuccess ||
          cudaEventCreateWithFlags(&ring.read[k], cudaEventDisableTiming) != cudaSuccess) {
        (void)cudaGetLastError();  // not an error of the caller's work: clear it and copy synchronously
        ring.unavailable = true;
        return false;
      }
    } else {
      check(cudaEventSynchronize(ring.read[k]), "cudaEventSynchronize (a staging buffer's last copy)");
    }
    std::memcpy(ring.host[k], src, bytes);
    // The legacy default stream: cuda::current_stream(), where every ctdl kernel runs.
    check(cudaMemcpyAsync(dst, ring.host[k], bytes, cudaMemcpyHostToDevice, nullptr),
          "cudaMemcpyAsync host to device (staged)");
    check(cudaEventRecord(ring.read[k], nullptr), "cudaEventRecord (staged copy)");
    ring.next = (k + 1) % kStagingSlots;
    return true;
  }
#endif
};

/// Where the programs run: `cpu`, `cuda` (device 0) or `cuda:N`.
struct DeviceSpec {
  bool cuda = false;
  int ordinal = 0;

  /// Parses a --device value; anything else is an Error naming the value.
  static DeviceSpec parse(const std::string& text) {
    if (text == "cpu") return {};
    if (text == "cuda") return {true, 0};
    if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 8 &&
        std::all_of(text.begin() + 5, text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return {true, std::stoi(text.substr(5))};
    }
    throw Error("--device=" + text + ": expected cpu, cuda or cuda:N (N a device number)");
  }
  std::string str() const { return cuda ? "cuda:" + std::to_string(ordinal) : "cpu"; }
};

/// Makes CUDA device `ordinal` the current one for this thread and checks that it can run
/// work (a context is created on it), or throws an Error that says why: no CUDA in this
/// build, no driver, no such device (naming how many there are), or the device busy
/// (exclusive-process mode held by another process) or unusable. Returns the device's name.
inline std::string use_cuda_device(int ordinal) {
#if defined(CTDL_WITH_CUDA)
  const std::string which = "cuda:" + std::to_string(ordinal);
  int count = 0;
  if (const cudaError_t s = cudaGetDeviceCount(&count); s != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error("--device=" + which + ": no usable CUDA device: " + cudaGetErrorString(s));
  }
  if (ordinal < 0 || ordinal >= count) {
    throw Error("--device=" + which + ": no such device (this machine has " + std::to_string(count) +
                " CUDA device" + (count == 1 ? "" : "s") + ")");
  }
  // Since CUDA 12 cudaSetDevice creates the context itself, so a busy device fails there;
  // before, at the first call that needed one (cudaFree(nullptr) forces it).
  const auto unusable = [&](cudaError_t s) {
    (void)cudaGetLastError();
    return Error("--device=" + which + ": cannot use the device (" + cudaGetErrorString(s) +
                 (s == cudaErrorDevicesUnavailable ? "; it is busy: another process holds it exclusively" : "") + ")");
  };
  if (const cudaError_t s = cudaSetDevice(ordinal); s != cudaSuccess) throw unusable(s);
  if (const cudaError_t s = cudaFree(nullptr); s != cudaSuccess) throw unusable(s);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) return which;
  return prop.name;
#else
  throw Error("--device=cuda:" + std::to_string(ordinal) +
              ": this program was built without CUDA (configure with -DCTDL_WITH_CUDA=ON)");
#endif
}

}  // namespace ctdl

// Device memory and device selection on a CUDA device: the stream-ordered pool reuses
// freed blocks (steady-state steps take nothing new from the driver), tracks the peak,
// gives kept memory back on release_cached(); Tensor<T, S, Cuda> copies to and from the
// host keep every value, staged uploads included (more in a row than the staging ring
// holds, the source reused at once); a device number that does not exist is an Error
// naming it.
#include <ctdl/ctdl.hpp>
#include <ctdl/kernels/cuda/elementwise.cuh>

#include "gpu/gpu_test.hpp"

int main() {
  using namespace ctdl;
  gpu_test::require_device("gpu/device_memory");
  gpu_test::Report report("gpu/device_memory");
  using Alloc = DeviceAllocator<Cuda>;
  try {
    report.expect("use_cuda_device(0)", !use_cuda_device(0).empty());
    bool named = false;
    try {
      use_cuda_device(97);
    } catch (const Error& e) {
      named = std::string(e.what()).find("no such device") != std::string::npos;
      std::printf("  (the message: %s)\n", e.what());
    }
    report.expect("a missing device is an Error naming it", named);
    (void)use_cuda_device(0);

    // Steady state: the same sizes allocated and freed again come from the pool.
    constexpr std::size_t kBlock = std::size_t{64} << 20;
    for (int step = 0; step < 3; ++step) {
      void* a = Alloc::allocate(kBlock);
      void* b = Alloc::allocate(kBlock / 2);
      Alloc::deallocate(a);
      Alloc::deallocate(b);
    }
    cuda::check(cudaDeviceSynchronize(), "sync");
    const std::size_t reserved = Alloc::reserved_bytes();
    for (int step = 0; step < 5; ++step) {
      void* a = Alloc::allocate(kBlock);
      void* b = Alloc::allocate(kBlock / 2);
      Alloc::deallocate(a);
      Alloc::deallocate(b);
    }
    cuda::check(cudaDeviceSynchronize(), "sync");
    report.expect("steady-state steps reserve nothing new", Alloc::reserved_bytes() == reserved,
                  std::to_string(reserved >> 20) + " MiB reserved before, " +
                      std::to_string(Alloc::reserved_bytes() >> 20) + " MiB after");

    Alloc::reset_peak_live_bytes();
    {
      void* a = Alloc::allocate(kBlock);
      void* b = Alloc::allocate(kBlock);
      Alloc::deallocate(a);
      Alloc::deallocate(b);
    }
    const std::size_t peak = Alloc::peak_live_bytes();
    report.expect("peak_live_bytes sees two live 64 MiB blocks", peak >= 2 * kBlock && peak < 3 * kBlock,
                  std::to_string(peak >> 20) + " MiB");
    report.expect("nothing live after freeing", Alloc::live_bytes() < kBlock,
                  std::to_string(Alloc::live_bytes()) + " bytes");
    const std::size_t returned = Alloc::release_cached();
    report.expect("release_cached gives the kept blocks back", returned >= kBlock,
                  std::to_string(returned >> 20) + " MiB returned");

    // Values survive host -> device -> device -> host, in every storage type.
    auto round_trip = [&](auto tag, const char* name) {
      using T = decltype(tag);
      const auto values = gpu_test::random_values<T>(1000, 7);
      Tensor<T, Shape<dyn>, Cuda> dev({1000});
      Alloc::copy_from_host(dev.data(), values.data(), sizeof(T) * values.size());
      Tensor<T, Shape<dyn>, Cuda> copy = dev;
      std::vector<T> back(values.size());
      Alloc::copy_to_host(back.data(), copy.data(), sizeof(T) * back.size());
      report.equal(std::string("round trip, ") + name, back, values);
    };
    round_trip(float{}, "float");
    round_trip(bf16{}, "bf16");
    round_trip(fp16{}, "fp16");

    // Staged uploads: more than the ring's buffers in a row, from one host vector changed
    // after each copy (the source is free when copy_from_host returns), behind a memset
    // that keeps the device busy (so the copies queue rather than finish at once), then one
    // larger than the staging buffers; every device copy holds what was sent.
    {
      constexpr int kUploads = 20;
      constexpr std::size_t kInts = 5000;
      std::vector<Tensor<std::int32_t, Shape<dyn>, Cuda>> dev;
      std::vector<std::int32_t> host(kInts);
      Tensor<float, Shape<dyn>, Cuda> busy({index_t{1} << 26});  // 256 MiB set ahead of the copies
      cuda::check(cudaMemsetAsync(busy.data(), 1, sizeof(float) * static_cast<std::size_t>(busy.size()), nullptr),
                  "cudaMemsetAsync");
      for (int u = 0; u < kUploads; ++u) {
        for (std::size_t i = 0; i < kInts; ++i) host[i] = static_cast<std::int32_t>(u * 100000 + static_cast<int>(i));
        dev.push_back(Tensor<std::int32_t, Shape<dyn>, Cuda>({static_cast<index_t>(kInts)}));
        Alloc::copy_from_host(dev.back().data(), host.data(), sizeof(std::int32_t) * kInts);
      }
      const std::size_t big = Alloc::kStagedCopyBytes / sizeof(std::int32_t) + 17;
      std::vector<std::int32_t> big_host(big);
      for (std::size_t i = 0; i < big; ++i) big_host[i] = static_cast<std::int32_t>(i * 3);
      Tensor<std::int32_t, Shape<dyn>, Cuda> big_dev({static_cast<index_t>(big)});
      Alloc::copy_from_host(big_dev.data(), big_host.data(), sizeof(std::int32_t) * big);
      bool all = true;
      std::vector<std::int32_t> back(kInts);
      for (int u = 0; u < kUploads; ++u) {
        Alloc::copy_to_host(back.data(), dev[static_cast<std::size_t>(u)].data(), sizeof(std::int32_t) * kInts);
        for (std::size_t i = 0; i < kInts; ++i) all = all && back[i] == static_cast<std::int32_t>(u * 100000 + static_cast<int>(i));
      }
      std::vector<std::int32_t> big_back(big);
      Alloc::copy_to_host(big_back.data(), big_dev.data(), sizeof(std::int32_t) * big);
      report.expect("staged uploads, 20 in a row from one reused host buffer, then one past the staging size",
                    all && big_back == big_host);
    }

    // A request larger than the device is an Error naming the size and the free memory.
    bool clear = false;
    try {
      (void)Alloc::allocate(std::size_t{1} << 50);
    } catch (const Error& e) {
      clear = std::string(e.what()).find("MiB free") != std::string::npos;
      std::printf("  (the message: %s)\n", e.what());
    }
    report.expect("an impossible allocation is an Error naming the free memory", clear);
  } catch (const std::exception& e) {
    report.expect("no exception", false, e.what());
  }
  return report.finish();
}

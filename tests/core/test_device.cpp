// The CPU allocator's cache of large blocks: reuse, and the bound on what it keeps.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "../test_util.hpp"

using namespace ctdl;
using Alloc = DeviceAllocator<Cpu>;

TEST_CASE("allocator: 1,000 random large shapes stay under the stated ceiling") {
  // Up to four tensors live at once (three kept, one being made), each 1 to 9 MiB at the allocator's 64 KiB
  // granularity (128 distinct sizes): an exact-size cache that keeps everything grows
  // to hundreds of MiB here. The ceiling, from the allocator's contract: live + kept
  // bytes <= max(64 MiB, 2 x the most bytes ever live at once) <= 2 x 4 x 10 MiB here
  // (a request of 9 MiB may take a kept block up to 1/8 larger).
  Alloc::release_cached();
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> units(16, 143);  // x 64 KiB
  std::vector<Tensor<float, Shape<dyn>>> live(3);
  std::size_t worst = 0;
  for (int i = 0; i < 1000; ++i) {
    const index_t floats = static_cast<index_t>(units(rng)) * (index_t{1} << 14);
    live[static_cast<std::size_t>(i) % live.size()] = Tensor<float, Shape<dyn>>::uninitialized({floats});
    worst = std::max(worst, Alloc::live_bytes() + Alloc::cached_bytes());
  }
  const std::size_t ceiling = std::size_t{80} << 20;
  INFO("worst live + kept: " << (worst >> 20) << " MiB; limit " << (Alloc::cache_limit() >> 20) << " MiB");
  REQUIRE(Alloc::cache_limit() <= ceiling);
  REQUIRE(worst <= ceiling);
}

TEST_CASE("allocator: a repeated step reuses every large block (no system allocation)") {
  // What bert_bench's large_system_allocs_per_step relies on.
  Alloc::release_cached();
  auto step = [] {
    std::vector<Tensor<float, Shape<dyn>>> acts;
    for (index_t n : {3 << 18, 5 << 18, 3 << 18, 7 << 18, 1 << 20}) acts.push_back(Tensor<float, Shape<dyn>>({n}));
    while (!acts.empty()) acts.pop_back();  // freed in reverse, as backward does
  };
  step();
  const std::size_t before = Alloc::system_allocations();
  for (int i = 0; i < 5; ++i) step();
  REQUIRE(Alloc::system_allocations() == before);
}

TEST_CASE("allocator: a slightly smaller request reuses a kept block, and release_cached returns them") {
  Alloc::release_cached();
  const void* first = nullptr;
  {
    auto a = Tensor<float, Shape<dyn>>::uninitialized({index_t{1} << 20});  // 4 MiB
    first = a.data();
  }
  REQUIRE(Alloc::cached_bytes() == std::size_t{4} << 20);
  {
    auto b = Tensor<float, Shape<dyn>>::uninitialized({(index_t{1} << 20) - (index_t{1} << 16)});  // 3.75 MiB
    REQUIRE(static_cast<const void*>(b.data()) == first);
    REQUIRE(Alloc::cached_bytes() == 0);
  }
  {
    auto c = Tensor<float, Shape<dyn>>::uninitialized({index_t{1} << 19});  // 2 MiB: too small to take 4 MiB
    REQUIRE(Alloc::cached_bytes() == std::size_t{4} << 20);
  }
  REQUIRE(Alloc::release_cached() == std::size_t{6} << 20);
  REQUIRE(Alloc::cached_bytes() == 0);
}

TEST_CASE("allocator: release_cached starts the limit anew") {
  // A phase that needed much memory raises the limit; releasing the cache after it lets
  // the next phase's limit follow that phase alone (and a test in a process that ran
  // other tests start from the floor).
  Alloc::release_cached();
  {
    std::vector<Tensor<float, Shape<dyn>>> big;
    for (int i = 0; i < 8; ++i) big.push_back(Tensor<float, Shape<dyn>>::uninitialized({index_t{1} << 22}));  // 16 MiB each
  }
  CHECK(Alloc::cache_limit() >= std::size_t{256} << 20);
  Alloc::release_cached();
  CHECK(Alloc::cache_limit() == Alloc::kCacheFloorBytes);
}

TEST_CASE("device: --device values parse, and a bad one is an Error naming it") {
  CHECK_FALSE(ctdl::DeviceSpec::parse("cpu").cuda);
  const auto cuda = ctdl::DeviceSpec::parse("cuda");
  CHECK((cuda.cuda && cuda.ordinal == 0));
  const auto third = ctdl::DeviceSpec::parse("cuda:2");
  CHECK((third.cuda && third.ordinal == 2 && third.str() == "cuda:2"));
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda:123456789"}) {
    CHECK_THROWS_WITH(ctdl::DeviceSpec::parse(bad), Catch::Contains(std::string("--device=") + bad));
  }
}

TEST_CASE("device: asking for a CUDA device that cannot be used is an Error that says why") {
  // On this machine (no GPU, or a build without CUDA) device 0 cannot be used; where a
  // device exists, device 97 does not. Either way: an Error naming the device, no crash.
  int ordinal = 97;
#if defined(CTDL_WITH_CUDA)
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) ordinal = 0;
#else
  ordinal = 0;
#endif
  try {
    (void)ctdl::use_cuda_device(ordinal);
    FAIL("use_cuda_device(" << ordinal << ") should have thrown");
  } catch (const ctdl::Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("--device=cuda:" + std::to_string(ordinal)) == 0);
  }
}

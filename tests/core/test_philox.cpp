#include <catch2/catch.hpp>

#include <ctdl/core/philox.hpp>

#include <set>
#include <vector>

using namespace ctdl;

TEST_CASE("Philox4x32-10 matches the published known-answer vectors (Random123 kat_vectors)") {
  using C = Philox::Counter;
  REQUIRE(Philox::generate({0, 0, 0, 0}, {0, 0}) == C{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  REQUIRE(Philox::generate({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
          C{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  REQUIRE(Philox::generate({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
          C{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("RandomStream: uniform on the unit interval and distinct per step, rank and tensor") {
  const RandomStream base{.seed = 42, .rank = 0, .tensor_id = 1, .step = 0};
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float u = base.uniform(static_cast<std::uint64_t>(i));
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    sum += u;
  }
  REQUIRE(std::abs(sum / n - 0.5) < 0.01);
  auto other = base;
  other.step = 1;
  REQUIRE(other.uniform(0) != base.uniform(0));
  other = base;
  other.rank = 1;
  REQUIRE(other.uniform(0) != base.uniform(0));
  other = base;
  other.tensor_id = 2;
  REQUIRE(other.uniform(0) != base.uniform(0));
  REQUIRE(base.uniform(5) == base.uniform4(1)[1]);
}

TEST_CASE("Philox lanes and RandomStream::uniform_blocks give generate's and uniform4's numbers") {
  // Sixteen counters and a key from the generator itself: generate_lanes is generate, lane by lane.
  std::uint32_t c[4][Philox::kLanes];
  Philox::Counter want[Philox::kLanes];
  const Philox::Key key{0x12345678u, 0x9abcdef0u};
  for (int k = 0; k < Philox::kLanes; ++k) {
    const auto r = Philox::generate({static_cast<std::uint32_t>(k), 7, 0, 0}, {1, 2});
    for (int w = 0; w < 4; ++w) c[w][k] = r[static_cast<std::size_t>(w)];
    want[k] = Philox::generate(r, key);
  }
  Philox::generate_lanes(c, key);
  for (int k = 0; k < Philox::kLanes; ++k)
    for (int w = 0; w < 4; ++w) CHECK(c[w][k] == want[k][static_cast<std::size_t>(w)]);

  const RandomStream stream{.seed = 0x0123456789abcdefull, .rank = 3, .tensor_id = 9, .step = 1234567};
  for (const std::uint64_t first : {std::uint64_t{0}, std::uint64_t{5}, (std::uint64_t{1} << 32) - 7})
    for (const std::size_t count : {std::size_t{1}, std::size_t{15}, std::size_t{16}, std::size_t{17}, std::size_t{40}}) {
      INFO("first block " << first << ", " << count << " blocks");
      std::vector<float> u(4 * count + 1, -1.0f);
      stream.uniform_blocks(first, count, u.data());
      for (std::size_t b = 0; b < count; ++b) {
        const auto one = stream.uniform4(first + b);
        for (std::size_t w = 0; w < 4; ++w) REQUIRE(u[4 * b + w] == one[w]);
      }
      CHECK(u[4 * count] == -1.0f);  // nothing written past the blocks asked for
    }
}

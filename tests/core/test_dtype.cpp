#include <catch2/catch.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../test_util.hpp"

using namespace ctdl;

namespace {
std::uint16_t bits(bf16 v) { return std::bit_cast<std::uint16_t>(v); }
std::uint16_t bits(fp16 v) { return std::bit_cast<std::uint16_t>(v); }
float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }
}  // namespace

TEST_CASE("dtypes: layout is two bytes, bit-compatible with CUDA's") {
  STATIC_REQUIRE(sizeof(bf16) == 2);
  STATIC_REQUIRE(sizeof(fp16) == 2);
  STATIC_REQUIRE(std::is_same_v<compute_t<bf16>, float>);
  STATIC_REQUIRE(std::is_same_v<compute_t<fp16>, float>);
  STATIC_REQUIRE(std::is_same_v<compute_t<double>, double>);
  STATIC_REQUIRE(std::is_same_v<accumulate_t<bf16>, float>);
  STATIC_REQUIRE(std::is_same_v<accumulate_t<double>, double>);
  REQUIRE(bits(bf16(1.0f)) == 0x3F80);
  REQUIRE(bits(fp16(1.0f)) == 0x3C00);
  REQUIRE(bits(bf16(-2.0f)) == 0xC000);
}

TEST_CASE("dtypes: float -> bf16 rounds to nearest, ties to even") {
  // bf16 keeps 7 mantissa bits: 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7.
  REQUIRE(bits(convert<bf16>(from_bits(0x3F808000))) == 0x3F80);  // tie, even below
  REQUIRE(bits(convert<bf16>(from_bits(0x3F818000))) == 0x3F82);  // tie, even above
  REQUIRE(bits(convert<bf16>(from_bits(0x3F808001))) == 0x3F81);  // above the tie
  REQUIRE(bits(convert<bf16>(from_bits(0x3F807FFF))) == 0x3F80);  // below the tie
  REQUIRE(std::isnan(convert<float>(convert<bf16>(std::numeric_limits<float>::quiet_NaN()))));
  REQUIRE(convert<float>(convert<bf16>(std::numeric_limits<float>::infinity())) == std::numeric_limits<float>::infinity());
  REQUIRE(convert<double>(convert<bf16>(0.1)) == convert<double>(convert<bf16>(0.1f)));
}

TEST_CASE("dtypes: float -> fp16 rounds to nearest, ties to even") {
  // fp16 keeps 10 mantissa bits: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
  REQUIRE(bits(convert<fp16>(1.0f + std::ldexp(1.0f, -11))) == 0x3C00);
  REQUIRE(bits(convert<fp16>(1.0f + 3 * std::ldexp(1.0f, -11))) == 0x3C02);
  REQUIRE(bits(convert<fp16>(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20))) == 0x3C01);
  REQUIRE(convert<float>(convert<fp16>(65504.0f)) == 65504.0f);
  REQUIRE(std::isinf(convert<float>(convert<fp16>(70000.0f))));
}

TEST_CASE("dtypes: the branch-free float -> bf16 agrees with Eigen's bit for bit") {
  std::uint32_t state = 12345;
  for (int i = 0; i < 1000000; ++i) {
    state = state * 1664525u + 1013904223u;  // every bit pattern class: normals, denormals, inf, NaN
    const float f = std::bit_cast<float>(state);
    const std::uint16_t ours = bits(float_to_bf16(f));
    const std::uint16_t eigen = bits(bf16(f));
    if (std::isnan(f)) {
      REQUIRE((ours & 0x7FC0) == 0x7FC0);
      REQUIRE((ours & 0x8000) == (eigen & 0x8000));
    } else {
      REQUIRE(ours == eigen);
    }
  }
}

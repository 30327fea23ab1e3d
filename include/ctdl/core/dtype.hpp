#pragma once
// Element types: float, double, ctdl::bf16, ctdl::fp16 (and bool for masks).
//
// bf16 and fp16 are Eigen's Eigen::bfloat16 / Eigen::half: two bytes, standard layout,
// bit-compatible with CUDA's __nv_bfloat16 / __half. Conversion from float rounds to
// nearest even. Arithmetic on them is done in float (their compute type) and rounded
// once when stored, so a fused expression over bf16 rounds once, not per operation.

#include <Eigen/Core>
#include <bit>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "ctdl/core/config.hpp"

namespace ctdl {

using bf16 = Eigen::bfloat16;
using fp16 = Eigen::half;

/// Not a storage type: the "product input type" of precision::Tf32. The products take
/// the float operands as they are; a CUDA device's read them with TF32's 10-bit
/// significand on tensor cores and accumulate in fp32; a CPU's are plain fp32.
struct Tf32Products {};

static_assert(sizeof(bf16) == 2 && std::is_standard_layout_v<bf16>);
static_assert(sizeof(fp16) == 2 && std::is_standard_layout_v<fp16>);

template <class T>
inline constexpr bool is_half_v = std::is_same_v<T, bf16> || std::is_same_v<T, fp16>;

/// The element types ctdl computes with.
template <class T>
concept DType = std::is_same_v<T, float> || std::is_same_v<T, double> || is_half_v<T> ||
                std::is_same_v<T, bool> || std::is_same_v<T, std::int32_t> ||
                std::is_same_v<T, std::int64_t>;

/// The type arithmetic on T is carried out in: float for bf16/fp16, else T itself.
template <class T>
using compute_t = std::conditional_t<is_half_v<T>, float, T>;

/// The type sums of T accumulate in: float for bf16/fp16/float, double for double.
template <class T>
using accumulate_t = std::conditional_t<std::is_same_v<T, double>, double,
                                        std::conditional_t<std::is_integral_v<T>, std::int64_t, float>>;

/// float -> bf16, rounding to nearest even; NaN stays a (quiet) NaN of the same sign.
/// Branch-free, so conversion loops vectorise (Eigen's tests for NaN with a branch).
CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE bf16 float_to_bf16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const std::uint32_t nan = ((bits >> 16) & 0x8000u) | 0x7FC0u;
  return bf16(Eigen::bfloat16_impl::raw_uint16_to_bfloat16(static_cast<std::uint16_t>(f != f ? nan : rounded)));
}

/// bf16 -> float (exact). Reads the raw bits: Eigen's conversion operator keeps loops
/// over bf16 from vectorising.
CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE float bf16_to_float(bf16 h) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h.value) << 16);
}

/// Converts a value to element type To, rounding to nearest even where To is narrower.
template <class To, class From>
CTDL_HOST_DEVICE CTDL_ALWAYS_INLINE To convert(const From& x) {
  if constexpr (std::is_same_v<To, From>) {
    return x;
  } else if constexpr (std::is_same_v<From, bf16>) {
    if constexpr (std::is_same_v<To, float>) return bf16_to_float(x);
    else return convert<To>(bf16_to_float(x));
  } else if constexpr (is_half_v<From>) {
    return static_cast<To>(static_cast<float>(x));
  } else if constexpr (std::is_same_v<To, bf16> && std::is_same_v<From, float>) {
    return float_to_bf16(x);
  } else if constexpr (is_half_v<To>) {
    return To(static_cast<float>(x));
  } else {
    return static_cast<To>(x);
  }
}

template <class T>
constexpr const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, bf16>) return "bf16";
  else if constexpr (std::is_same_v<T, fp16>) return "fp16";
  else if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "int64";
  else return "unknown";
}

}  // namespace ctdl

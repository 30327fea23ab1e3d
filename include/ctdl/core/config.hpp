#pragma once
// Macros and basic types shared by every layer.

#include <cstddef>

#if defined(__CUDACC__)
#define CTDL_HOST_DEVICE __host__ __device__
#else
#define CTDL_HOST_DEVICE
#endif

#if defined(__GNUC__)
#define CTDL_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CTDL_ALWAYS_INLINE inline
#endif

namespace ctdl {

/// Signed index and extent type (as std::ptrdiff_t, so extents subtract safely).
using index_t = std::ptrdiff_t;

/// Byte alignment of every tensor allocation: one cache line, one AVX-512 vector.
inline constexpr std::size_t kTensorAlignment = 64;

}  // namespace ctdl

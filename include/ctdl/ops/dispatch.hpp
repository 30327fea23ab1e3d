#pragma once
// Where an op runs. Every op in ops/ takes its Vars on one device D (Cpu or Cuda: the
// Var's third template argument) and picks its kernel in one place:
//
//   if constexpr (on_cuda<D>) { ... the kernels of kernels/cuda/<op>.cuh ... }
//   else                      { ... the CPU loops ... }
//
// The op header keeps the math, the shape checks and the tape entry for both devices.
// The CUDA kernels exist only in translation units that nvcc compiles in a CUDA build
// (CTDL_CUDA_OPS is 1 there, and the op headers include their kernels/cuda/ siblings);
// an op instantiated on Cuda anywhere else stops compiling with the message of
// require_kernels below, rather than failing to link or running host code on device
// memory.
//
// Conventions on Cuda: every operand of an op (Vars, masks, index tensors the op reads
// on the device) lives in device memory; index tensors the op checks first (embedding
// ids, labels) may be host tensors, copied up after the CPU op's check. Kernels run on
// cuda::current_stream(); scratch comes from the device pool (Tensor<..., Cuda>), freed
// stream-ordered.
//
// nvcc 13.0's front end crashes (an internal error in find_allocated_name_reference) on a
// translation unit that instantiates the oneDNN matmul path, so the project's CUDA
// translation units are compiled with -UCTDL_WITH_ONEDNN; they instantiate only the
// device path, which never calls the CPU matmul (docs/cuda.md).

#include <type_traits>

#include "ctdl/core/device.hpp"

#if defined(__CUDACC__) && defined(CTDL_WITH_CUDA)
#define CTDL_CUDA_OPS 1
#else
#define CTDL_CUDA_OPS 0
#endif

#if CTDL_CUDA_OPS
// The device evaluator (DeviceEvaluator<Cuda>): recorded expressions and gradient sums
// on the device go through it.
#include "ctdl/kernels/cuda/elementwise.cuh"
#endif

namespace ctdl::ops {

/// True for the Cuda device tag.
template <class D>
inline constexpr bool on_cuda = std::is_same_v<D, Cuda>;

/// Whether this translation unit has the kernels of device D.
template <class D>
inline constexpr bool has_kernels = !on_cuda<D> || CTDL_CUDA_OPS;

/// Stops the compilation of an op instantiated on a device whose kernels this
/// translation unit lacks (Cuda outside nvcc, or without CTDL_WITH_CUDA).
template <class D>
constexpr void require_kernels() {
  static_assert(has_kernels<D>,
                "this op runs on Cuda only in a translation unit compiled by nvcc in a CUDA build "
                "(CTDL_WITH_CUDA): compile the file that instantiates it as CUDA (.cu)");
}

}  // namespace ctdl::ops

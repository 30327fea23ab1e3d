#pragma once
// The problem of a (batched) matrix product, shared by the CPU kernel
// (kernels/cpu/matmul.hpp) and the cuBLASLt one (kernels/cuda/blas.cuh, as GemmDims):
//
//   C[b] = op(A[b]) op(B[b]) (+ beta C[b])      row-major; op(A) is m x k, op(B) k x n
//
// A is stored k x m when trans_a, B n x k when trans_b. Strides between the batch's
// matrices: -1 packed, 0 one matrix broadcast over the batch. Row strides (ld*): -1
// packed (the stored widths).

#include "ctdl/core/shape.hpp"

namespace ctdl::kernels {

struct MatmulDims {
  index_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  index_t stride_a = -1, stride_b = -1, stride_c = -1;  // batch strides; -1: packed (m*k etc.), 0: broadcast
  index_t lda = -1, ldb = -1, ldc = -1;  // row strides of the stored matrices; -1: packed (their widths)
};

}  // namespace ctdl::kernels

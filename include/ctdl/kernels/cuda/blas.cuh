#pragma once
// Matrix products on the GPU through cuBLASLt: the CUDA sibling of kernels/cpu/matmul.hpp.
//
//   C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b]            for b in [0, batch)
//
// Shape contract (row-major, as the CPU kernel): op(A) is M x K (A stored K x M when
// trans_a), op(B) is K x N (B stored N x K when trans_b), C is M x N. lda/ldb/ldc are the
// row strides of the stored matrices (-1: packed, their widths); stride_a/b/c the
// distances between the batch's matrices (-1: packed; 0: one matrix broadcast over the
// batch, e.g. shared weights). GemmDims has MatmulDims' fields in MatmulDims' order.
//
// Types: T is the input type, TC the output's (and C's, when beta != 0):
//   float -> float     CUBLAS_COMPUTE_32F; with GemmOptions::tf32, CUBLAS_COMPUTE_32F_FAST_TF32
//                      (inputs rounded to TF32's 10-bit significand, fp32 accumulation):
//                      the Fp32 policy's TF32 opt-in
//   bf16 -> bf16|float CUBLAS_COMPUTE_32F: fp32 accumulation (Bf16Mixed: bf16 in, float out)
//   fp16 -> fp16|float CUBLAS_COMPUTE_32F (Fp16Mixed)
// alpha and beta are float in every case (scale type CUDA_R_32F).
//
// Row-major over cuBLASLt's column-major: a row-major r x c matrix with row stride ld is,
// read column-major, its transpose (c x r, leading dimension ld). So C^T = op(B)^T op(A)^T
// is one column-major product with the operands swapped: cuBLASLt's "A" is our B (with
// our trans_b as its transpose flag), its "B" is our A (trans_a), its m is our N, its n
// our M. No data moves; only the descriptors differ.
//
// Epilogues (batch 1 only), applied to each row of C before it is stored:
//   Epilogue::bias       C = alpha op(A) op(B) + beta C + bias          (CUBLASLT_EPILOGUE_BIAS)
//   Epilogue::bias_gelu  C = gelu_tanh(alpha op(A) op(B) + beta C + bias) (CUBLASLT_EPILOGUE_GELU_BIAS)
// bias has N elements of TC (cuBLASLt's bias runs along its m, which is our N). cuBLASLt's
// GELU is the tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) — ctdl's
// gelu_tanh, not BERT's erf gelu: models with hidden_act "gelu" (erf) must add the bias
// here and run their own GELU.
//
// Linear (ops/linear.hpp: y = x W^T + b, W stored [out, in]):
//   linear_forward   y = x W^T (+ b) (+ gelu_tanh), one gemm with its epilogue
//   linear_backward  dx += dy W,  dW += dy^T x,  db += sum over rows of dy
// Gradients accumulate (beta = 1), as the CPU tape entry's. The bias gradient is
// cuda::add_column_sums (reduce.cuh: fixed blocks of rows, then an ordered second pass)
// rather than CUBLASLT_EPILOGUE_BGRADB: the CPU sums the unrounded float dy (BGRADB would
// sum the G-rounded operand) and adds to db (BGRADB overwrites it).
//
// Resources: one cuBLASLt handle and one 32 MiB workspace per device, made on first use
// under a mutex and kept for the process (never destroyed: at exit the CUDA runtime may
// already be gone). The workspace is shared by every call on that device, so products on
// one device must be issued on one stream (ctdl's current_stream()) or ordered between
// streams by the caller. A problem (device, shape, transposes, strides, types, epilogue,
// operand alignments) gets its plan on its first call in a thread: the matmul and layout
// descriptors and the algorithm cuBLASLt's heuristic picks, kept for the thread's life, so
// a later call with that key is one cublasLtMatmul (and the bias pointer, for epilogues).
// (Before the plans, when the descriptors were made on every call, the floor benchmark's
// batch-1 step of 72 small products took 0.82 ms on an H100, 11 us a product: more than
// such a product's GPU time; the plans have not been timed on a GPU yet.) Every cuBLASLt
// status is checked; a failure throws ctdl::Error naming the call, the status and the
// problem (its description is built only then). Calls are asynchronous on `stream`.

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "ctdl/core/dtype.hpp"
#include "ctdl/core/error.hpp"
#include "ctdl/expr/functors.hpp"
#include "ctdl/kernels/cuda/common.cuh"
#include "ctdl/kernels/cuda/reduce.cuh"
#include "ctdl/kernels/matmul_dims.hpp"

namespace ctdl::cuda {

/// The problem of a (batched) product: the CPU kernel's MatmulDims (kernels/matmul_dims.hpp).
using GemmDims = kernels::MatmulDims;

enum class Epilogue { none, bias, bias_gelu };

struct GemmOptions {
  float alpha = 1.0f;
  float beta = 0.0f;
  bool tf32 = false;  // float inputs only: TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32)
  Epilogue epilogue = Epilogue::none;
};

/// C = alpha op(A) op(B) + beta C (+ epilogue), row-major; bias: N values (epilogues only).
template <class T, class TC = T>
void gemm(const T* a, const T* b, TC* c, const GemmDims& dims, const GemmOptions& opt = {}, const TC* bias = nullptr,
          cudaStream_t stream = current_stream());

/// The workspace cuBLASLt may use per product.
inline constexpr std::size_t kGemmWorkspaceBytes = std::size_t{32} << 20;

/// y [rows, out] = x [rows, in] W^T (W [out, in]) + bias (nullable), then gelu_tanh when
/// `gelu` (which needs the bias). x and W as the product takes them (G: bf16 under
/// Bf16Mixed); y and bias in T.
template <class G, class T>
void linear_forward(const G* x, const G* weight, const T* bias, T* y, index_t rows, index_t in, index_t out,
                    bool gelu = false, bool tf32 = false, cudaStream_t stream = current_stream());

/// Linear's backward, accumulating: dx += dy W, dW += dy^T x, db += column sums of dy.
/// dy_g is dy rounded to G (for the products; pass dy itself when G is T); dy is the
/// gradient as stored (the bias sum reads it unrounded, as the CPU does). Any of dx, dw,
/// db may be null (no gradient wanted). bias_workspace: linear_bias_workspace(rows, out)
/// floats of device memory when db is wanted (may be null otherwise).
template <class G, class T>
void linear_backward(const G* dy_g, const T* dy, const G* x, const G* weight, T* dx, T* dw, T* db, index_t rows,
                     index_t in, index_t out, float* bias_workspace, bool tf32 = false,
                     cudaStream_t stream = current_stream());

/// Floats of device scratch linear_bias_backward needs.
inline std::int64_t linear_bias_workspace(index_t rows, index_t cols) { return column_sums_workspace(rows, cols); }

/// Linear's bias gradient: db[j] += sum over i of dy[i * cols + j], dy [rows, cols], in
/// float (cuda::add_column_sums: the order of the sum is fixed by the sizes, so results
/// are deterministic). workspace: linear_bias_workspace(rows, cols) floats.
template <class T>
void linear_bias_backward(const T* dy, T* db, index_t rows, index_t cols, float* workspace,
                          cudaStream_t stream = current_stream());

/// out[i] = in[i] rounded to To (round to nearest even), n elements: the G-rounded copies
/// of operands and gradients that the products take under a mixed policy.
template <class From, class To>
void copy_converted(const From* in, To* out, std::int64_t n, cudaStream_t stream = current_stream());

// ============================================================================

namespace blas_detail {

/// Throws ctdl::Error naming the cuBLASLt call and the status; `problem()` describes the
/// product (called only on failure: building the text costs more than a small product).
template <class Problem>
void check_lt(cublasStatus_t status, const char* call, const Problem& problem) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string("cuBLASLt: ") + call + " failed: " + cublasLtGetStatusString(status) + " (" + problem() +
                ")");
  }
}
inline void check_lt(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string("cuBLASLt: ") + call + " failed: " + cublasLtGetStatusString(status));
  }
}

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, bf16>) return CUDA_R_16BF;
  else if constexpr (std::is_same_v<T, fp16>) return CUDA_R_16F;
  else static_assert(sizeof(T) == 0, "cuda::gemm: element type must be float, bf16 or fp16");
}

/// A device's cuBLASLt handle and workspace.
struct LtDevice {
  int id = 0;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

/// The current device's handle and workspace, made on first use (thread-safe).
inline LtDevice& lt_device() {
  static std::mutex mutex;
  static std::map<int, LtDevice> devices;  // node-based: references stay valid
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice (cuda::gemm)");
  std::lock_guard<std::mutex> lock(mutex);
  LtDevice& d = devices[device];
  d.id = device;
  if (!d.handle) {
    check(cudaMalloc(&d.workspace, kGemmWorkspaceBytes), "cudaMalloc (cuBLASLt workspace, 32 MiB)");
    const cublasStatus_t status = cublasLtCreate(&d.handle);
    if (status != CUBLAS_STATUS_SUCCESS) {
      cudaFree(d.workspace);
      d = {.id = device};
      check_lt(status, "cublasLtCreate");
    }
  }
  return d;
}

/// The largest power of two (up to 256) dividing the address: the alignment cuBLASLt's
/// heuristic must assume (it assumes 256 bytes unless told; a head's columns inside a
/// wider matrix, or an odd offset, are less aligned).
inline std::uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

/// The alignment every row of every matrix of a batch keeps: the first matrix's start,
/// and the steps to the next row (ld) and to the next matrix (the batch stride), in bytes
/// (a batch of heads of 37 x 5 floats steps 740 bytes: 4-byte aligned past the first).
inline std::uint32_t alignment_of(const void* p, std::int64_t ld, std::int64_t stride, std::int64_t batch,
                                  std::size_t element_bytes) {
  std::uint32_t a = alignment_of(p);
  const auto divides = [&](std::int64_t step) { return (step * static_cast<std::int64_t>(element_bytes)) % a == 0; };
  while (a > 1 && !divides(ld)) a /= 2;
  while (a > 1 && batch > 1 && !divides(stride)) a /= 2;
  return a;
}

/// Everything a plan depends on.
using PlanKey = std::array<std::int64_t, 24>;

/// Owns the descriptors of one problem.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {  // host objects only: safe whenever the thread ends
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

/// A problem's descriptors and the algorithm chosen for it.
struct Plan {
  LtDescriptors desc;
  cublasLtMatmulAlgo_t algo{};
};

/// This thread's plans. Per thread, not shared: a call sets the bias pointer on its
/// plan's descriptor, which two threads must not do to one descriptor at once.
inline std::map<PlanKey, Plan>& thread_plans() {
  thread_local std::map<PlanKey, Plan> plans;  // node-based: references stay valid
  return plans;
}

/// Owns a heuristic's preference descriptor.
struct LtPreference {
  cublasLtMatmulPreference_t pref = nullptr;
  LtPreference() = default;
  LtPreference(const LtPreference&) = delete;
  LtPreference& operator=(const LtPreference&) = delete;
  ~LtPreference() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
  }
};

/// A column-major matrix layout (rows x cols, leading dimension ld), batched.
template <class Problem>
void make_layout(cublasLtMatrixLayout_t* layout, cudaDataType_t type, index_t rows, index_t cols, index_t ld,
                 index_t batch, index_t stride, const Problem& problem) {
  check_lt(cublasLtMatrixLayoutCreate(layout, type, static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols),
                                      static_cast<std::int64_t>(ld)),
           "cublasLtMatrixLayoutCreate", problem);
  if (batch > 1) {
    const auto count = static_cast<std::int32_t>(batch);
    const auto offset = static_cast<std::int64_t>(stride);
    check_lt(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
             "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)", problem);
    check_lt(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset,
                                              sizeof offset),
             "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)", problem);
  }
}

/// GemmDims with the -1 defaults filled in (as kernels::cpu::blas_detail::packed).
inline GemmDims packed(GemmDims d) {
  if (d.lda < 0) d.lda = d.trans_a ? d.m : d.k;
  if (d.ldb < 0) d.ldb = d.trans_b ? d.k : d.n;
  if (d.ldc < 0) d.ldc = d.n;
  if (d.stride_a < 0) d.stride_a = (d.trans_a ? d.k : d.m) * d.lda;
  if (d.stride_b < 0) d.stride_b = (d.trans_b ? d.n : d.k) * d.ldb;
  if (d.stride_c < 0) d.stride_c = d.m * d.ldc;
  return d;
}

inline std::string describe(const GemmDims& d, const char* types) {
  return std::string(types) + " batch " + std::to_string(d.batch) + ", M " + std::to_string(d.m) + ", N " +
         std::to_string(d.n) + ", K " + std::to_string(d.k) + (d.trans_a ? ", A transposed" : "") +
         (d.trans_b ? ", B transposed" : "") + ", lda " + std::to_string(d.lda) + ", ldb " + std::to_string(d.ldb) +
         ", ldc " + std::to_string(d.ldc);
}

template <class T, class TC>
const char* type_names(bool tf32) {
  if constexpr (std::is_same_v<T, float>) return tf32 ? "tf32 -> float" : "float -> float";
  else if constexpr (std::is_same_v<T, bf16>) return std::is_same_v<TC, float> ? "bf16 -> float" : "bf16 -> bf16";
  else return std::is_same_v<TC, float> ? "fp16 -> float" : "fp16 -> fp16";
}

/// Scales C (m x n of ldc, batched) by beta: the product of an empty K.
template <class TC>
__global__ void scale_matrix_kernel(TC* c, std::int64_t m, std::int64_t n, std::int64_t ldc, std::int64_t stride,
                                    std::int64_t batch, float beta) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * m * n) return;
  const std::int64_t b = i / (m * n), r = (i / n) % m, col = i % n;
  const std::int64_t at = b * stride + r * ldc + col;
  store(c, at, beta == 0.0f ? 0.0f : load(c, at) * beta);
}

/// C = beta C + bias, then gelu_tanh when `gelu`: the epilogue of a product over K = 0
/// (cuBLASLt rejects K = 0; batch 1, as every epilogue).
template <class TC>
__global__ void empty_product_epilogue_kernel(TC* c, std::int64_t m, std::int64_t n, std::int64_t ldc, float beta,
                                              const TC* bias, bool gelu) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m * n) return;
  const std::int64_t at = (i / n) * ldc + i % n;
  const float v = (beta == 0.0f ? 0.0f : load(c, at) * beta) + load(bias, i % n);
  store(c, at, gelu ? expr::GeluTanh{}(v) : v);
}

template <class From, class To>
__global__ void copy_converted_kernel(const From* in, To* out, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) store(out, i, load(in, i));
}

/// Makes the descriptors of problem d (see gemm) and asks cuBLASLt's heuristic for its
/// algorithm, assuming the operand alignments in the key.
template <class T, class TC, class Problem>
void make_plan(Plan& plan, const LtDevice& device, const GemmDims& d, const GemmOptions& opt,
               cublasComputeType_t compute, std::uint32_t align_a, std::uint32_t align_b, std::uint32_t align_c,
               const void* bias, const Problem& problem) {
  LtDescriptors& desc = plan.desc;
  check_lt(cublasLtMatmulDescCreate(&desc.op, compute, CUDA_R_32F), "cublasLtMatmulDescCreate", problem);
  // Swapped operands (see the header): cuBLASLt's A is our B, its B our A.
  const cublasOperation_t op_lt_a = d.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_lt_b = d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_lt(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof op_lt_a),
           "cublasLtMatmulDescSetAttribute(TRANSA)", problem);
  check_lt(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof op_lt_b),
           "cublasLtMatmulDescSetAttribute(TRANSB)", problem);
  if (opt.epilogue != Epilogue::none) {
    const cublasLtEpilogue_t epilogue =
        opt.epilogue == Epilogue::bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
    const auto bias_type = static_cast<std::int32_t>(cuda_type<TC>());
    check_lt(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue),
             "cublasLtMatmulDescSetAttribute(EPILOGUE)", problem);
    check_lt(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type),
             "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)", problem);
    // The heuristic sees the first call's bias (as before the plans were cached, the
    // order checked on the H100); each call sets its own again (gemm).
    check_lt(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
             "cublasLtMatmulDescSetAttribute(BIAS_POINTER)", problem);
  }
  // Our B as cuBLASLt reads it: stored K x N (or N x K when trans_b) row-major = N x K
  // (or K x N) column-major. Our A: stored M x K (K x M) row-major = K x M (M x K)
  // column-major. C: M x N row-major = N x M column-major.
  const cudaDataType_t in_type = cuda_type<T>(), out_type = cuda_type<TC>();
  make_layout(&desc.a, in_type, d.trans_b ? d.k : d.n, d.trans_b ? d.n : d.k, d.ldb, d.batch, d.stride_b, problem);
  make_layout(&desc.b, in_type, d.trans_a ? d.m : d.k, d.trans_a ? d.k : d.m, d.lda, d.batch, d.stride_a, problem);
  make_layout(&desc.c, out_type, d.n, d.m, d.ldc, d.batch, d.stride_c, problem);

  LtPreference pref;
  check_lt(cublasLtMatmulPreferenceCreate(&pref.pref), "cublasLtMatmulPreferenceCreate", problem);
  const std::uint64_t workspace = kGemmWorkspaceBytes;
  check_lt(cublasLtMatmulPreferenceSetAttribute(pref.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                sizeof workspace),
           "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)", problem);
  // cuBLASLt's A is our B and its B our A (the swap above).
  const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
  for (const auto& [attribute, value] : alignments) {
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref.pref, attribute, &value, sizeof value),
             "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)", problem);
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  check_lt(cublasLtMatmulAlgoGetHeuristic(device.handle, desc.op, desc.a, desc.b, desc.c, desc.c, pref.pref, 1,
                                          &result, &found),
           "cublasLtMatmulAlgoGetHeuristic", problem);
  if (found == 0) throw Error("cuBLASLt: no algorithm for " + problem());
  plan.algo = result.algo;
}

}  // namespace blas_detail

template <class T, class TC>
void gemm(const T* a, const T* b, TC* c, const GemmDims& dims, const GemmOptions& opt, const TC* bias,
          cudaStream_t stream) {
  static_assert(std::is_same_v<TC, T> || std::is_same_v<TC, float>,
                "cuda::gemm: the output type is the input type or float");
  static_assert(!std::is_same_v<T, double>, "cuda::gemm: no double products on the GPU");
  const GemmDims d = blas_detail::packed(dims);
  const auto problem = [&] { return blas_detail::describe(d, blas_detail::type_names<T, TC>(opt.tf32)); };
  if (d.batch < 0 || d.m < 0 || d.n < 0 || d.k < 0) throw Error("cuda::gemm: negative extent: " + problem());
  if (d.lda < (d.trans_a ? d.m : d.k) || d.ldb < (d.trans_b ? d.k : d.n) || d.ldc < d.n) {
    throw Error("cuda::gemm: a leading dimension is smaller than its matrix's width: " + problem());
  }
  if (opt.tf32 && !std::is_same_v<T, float>) throw Error("cuda::gemm: tf32 applies to float inputs only: " + problem());
  if (opt.epilogue != Epilogue::none && (!bias || d.batch != 1)) {
    throw Error("cuda::gemm: a bias epilogue needs a bias and batch 1: " + problem());
  }
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  if (d.k == 0) {  // cuBLASLt rejects K = 0; the product is empty: C = beta C (+ the epilogue)
    if (opt.epilogue != Epilogue::none) {  // (batch 1, checked above), as the CPU's linear: the bias on every row
      blas_detail::empty_product_epilogue_kernel<<<blocks_for(d.m * d.n), kThreads, 0, stream>>>(
          c, d.m, d.n, d.ldc, opt.beta, bias, opt.epilogue == Epilogue::bias_gelu);
      check_launch("cuda::gemm (the epilogue for K = 0)");
      return;
    }
    const std::int64_t n = d.batch * d.m * d.n;
    blas_detail::scale_matrix_kernel<<<blocks_for(n), kThreads, 0, stream>>>(c, d.m, d.n, d.ldc, d.stride_c, d.batch,
                                                                        opt.beta);
    check_launch("cuda::gemm (scale C for K = 0)");
    return;
  }

  const blas_detail::LtDevice& device = blas_detail::lt_device();
  const cublasComputeType_t compute =
      std::is_same_v<T, float> && opt.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const std::uint32_t align_a = blas_detail::alignment_of(a, d.lda, d.stride_a, d.batch, sizeof(T)),
                      align_b = blas_detail::alignment_of(b, d.ldb, d.stride_b, d.batch, sizeof(T)),
                      align_c = blas_detail::alignment_of(c, d.ldc, d.stride_c, d.batch, sizeof(TC));
  const std::uint32_t align_bias = bias ? blas_detail::alignment_of(bias) : 256;
  const blas_detail::PlanKey key{device.id,
                                 d.batch,
                                 d.m,
                                 d.n,
                                 d.k,
                                 d.trans_a,
                                 d.trans_b,
                                 d.stride_a,
                                 d.stride_b,
                                 d.stride_c,
                                 d.lda,
                                 d.ldb,
                                 d.ldc,
                                 static_cast<std::int64_t>(blas_detail::cuda_type<T>()),
                                 static_cast<std::int64_t>(blas_detail::cuda_type<TC>()),
                                 static_cast<std::int64_t>(compute),
                                 static_cast<std::int64_t>(opt.epilogue),
                                 align_a,
                                 align_b,
                                 align_c,
                                 align_bias,
                                 opt.beta != 0.0f,
                                 0,
                                 0};
  auto& plans = blas_detail::thread_plans();
  auto found = plans.find(key);
  if (found == plans.end()) {
    found = plans.try_emplace(key).first;
    try {
      blas_detail::make_plan<T, TC>(found->second, device, d, opt, compute, align_a, align_b, align_c, bias, problem);
    } catch (...) {
      plans.erase(found);  // no half-made plan stays behind
      throw;
    }
  }
  blas_detail::Plan& plan = found->second;
  if (opt.epilogue != Epilogue::none) {
    blas_detail::check_lt(
        cublasLtMatmulDescSetAttribute(plan.desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
        "cublasLtMatmulDescSetAttribute(BIAS_POINTER)", problem);
  }
  // C and D are the same matrix: beta != 0 accumulates in place.
  blas_detail::check_lt(cublasLtMatmul(device.handle, plan.desc.op, &opt.alpha, b, plan.desc.a, a, plan.desc.b,
                                       &opt.beta, c, plan.desc.c, c, plan.desc.c, &plan.algo, device.workspace,
                                       kGemmWorkspaceBytes, stream),
                        "cublasLtMatmul", problem);
}

template <class G, class T>
void linear_forward(const G* x, const G* weight, const T* bias, T* y, index_t rows, index_t in, index_t out, bool gelu,
                    bool tf32, cudaStream_t stream) {
  if (gelu && !bias) throw Error("cuda::linear_forward: the GELU epilogue needs a bias");
  const GemmOptions opt{.tf32 = tf32,
                        .epilogue = bias ? (gelu ? Epilogue::bias_gelu : Epilogue::bias) : Epilogue::none};
  // y (rows x out) = x (rows x in) W^T (W stored out x in)
  gemm<G, T>(x, weight, y, GemmDims{1, rows, out, in, false, true}, opt, bias, stream);
}

template <class G, class T>
void linear_backward(const G* dy_g, const T* dy, const G* x, const G* weight, T* dx, T* dw, T* db, index_t rows,
                     index_t in, index_t out, float* bias_workspace, bool tf32, cudaStream_t stream) {
  const GemmOptions accumulate{.beta = 1.0f, .tf32 = tf32};
  // dx (rows x in) += dy (rows x out) W (out x in)
  if (dx) gemm<G, T>(dy_g, weight, dx, GemmDims{1, rows, in, out, false, false}, accumulate, nullptr, stream);
  // dW (out x in) += dy^T (out x rows) x (rows x in)
  if (dw) gemm<G, T>(dy_g, x, dw, GemmDims{1, out, in, rows, true, false}, accumulate, nullptr, stream);
  if (db) linear_bias_backward(dy, db, rows, out, bias_workspace, stream);
}

template <class T>
void linear_bias_backward(const T* dy, T* db, index_t rows, index_t cols, float* workspace, cudaStream_t stream) {
  if (rows < 0 || cols < 0) throw Error("cuda::linear_bias_backward: negative extent");
  if (cols == 0) return;
  if (!workspace) throw Error("cuda::linear_bias_backward: the workspace pointer is null");
  add_column_sums(dy, db, rows, cols, workspace, stream);
}

template <class From, class To>
void copy_converted(const From* in, To* out, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  blas_detail::copy_converted_kernel<<<blocks_for(n), kThreads, 0, stream>>>(in, out, n);
  check_launch("cuda::copy_converted");
}

}  // namespace ctdl::cuda

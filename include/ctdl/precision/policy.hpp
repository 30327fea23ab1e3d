#pragma once
// Precision policies: how a model's matmuls run. Parameters (the master weights) and
// activations stay in the model's element type T (float) under every policy.
//
//   Fp32       matmuls in T (the reference; with T = double, the exact path of the tests)
//   Tf32       Fp32 with the GPU's products on TF32 tensor cores (inputs read with a 10-bit
//              significand, fp32 accumulation), as torch's allow_tf32: the opt-in for
//              speed on GPUs; on a CPU exactly Fp32 (CPUs have no TF32)
//   Bf16Mixed  matmul inputs rounded to bf16, products accumulated and returned in fp32
//              (torch.autocast(bfloat16) rounds the same inputs but returns bf16 products:
//              one rounding more): oneDNN runs them on AVX512-BF16 or AMX
//              where the CPU has it
//   Fp16Mixed  matmul inputs rounded to fp16 (so activation gradients pass through fp16
//              and can underflow or overflow), fp32 accumulation, plus dynamic loss
//              scaling (precision/loss_scaler.hpp). On CPUs without fp16 matmuls the
//              products are computed in fp32 from the fp16-rounded inputs, which gives the
//              same numbers; it exists on CPU to train and test the loss-scaling path
//              that GPUs use.
// A model takes the policy as a template parameter (BertForSequenceClassification<float,
// bert::Base, precision::Bf16Mixed>) and passes `gemm_t<T>` to the ops. The policy is a
// type, never a global mode. `loss_scaling` says whether the trainer scales the loss.

#include <type_traits>

#include "ctdl/core/dtype.hpp"

namespace ctdl::precision {

struct Fp32 {
  static constexpr const char* name = "fp32";
  static constexpr bool loss_scaling = false;
  template <class T>
  using gemm_t = T;
};

struct Tf32 {
  static constexpr const char* name = "tf32";
  static constexpr bool loss_scaling = false;
  template <class T>
  using gemm_t = std::conditional_t<std::is_same_v<T, float>, Tf32Products, T>;
};

struct Bf16Mixed {
  static constexpr const char* name = "bf16";
  static constexpr bool loss_scaling = false;
  template <class T>
  using gemm_t = std::conditional_t<std::is_same_v<T, float>, bf16, T>;
};

struct Fp16Mixed {
  static constexpr const char* name = "fp16";
  static constexpr bool loss_scaling = true;
  template <class T>
  using gemm_t = std::conditional_t<std::is_same_v<T, float>, fp16, T>;
};

}  // namespace ctdl::precision

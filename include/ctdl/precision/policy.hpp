#pragma once
// Precision policies: how a model's matmuls run. Parameters (the master weights) and
// activations stay in the model's element type T (float) under every policy.
//
//   Fp32       matmuls in T (the reference; with T = double, the exact path of the tests)
//   Bf16Mixed  matmul inputs rounded to bf16, products accumulated and returned in fp32
//              (as torch.autocast(bfloat16) does): oneDNN runs them on AVX512-BF16 or AMX
//              where the CPU has it
// A model takes the policy as a template parameter (BertForSequenceClassification<float,
// bert::Base, precision::Bf16Mixed>) and passes `gemm_t<T>` to the ops. The policy is a
// type, never a global mode. (Fp16Mixed with dynamic loss scaling arrives with the
// training issue.)

#include <type_traits>

#include "ctdl/core/dtype.hpp"

namespace ctdl::precision {

struct Fp32 {
  static constexpr const char* name = "fp32";
  template <class T>
  using gemm_t = T;
};

struct Bf16Mixed {
  static constexpr const char* name = "bf16";
  template <class T>
  using gemm_t = std::conditional_t<std::is_same_v<T, float>, bf16, T>;
};

}  // namespace ctdl::precision

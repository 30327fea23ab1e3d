// ner_span_classifier --task_name=ner: run_ner<P, Cpu> for every precision policy, on the
// runtime-shaped BERT family (one translation unit: the token classifier's encoder is
// instantiated here alone; run_ner_cuda.cu is its CUDA sibling).
#include "run_ner.hpp"
namespace span_classifier {
template int run_ner<ctdl::precision::Fp32, ctdl::Cpu>(const Setup&);
template int run_ner<ctdl::precision::Bf16Mixed, ctdl::Cpu>(const Setup&);
template int run_ner<ctdl::precision::Fp16Mixed, ctdl::Cpu>(const Setup&);
}  // namespace span_classifier

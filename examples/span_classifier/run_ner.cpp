// ner_span_classifier --task_name=ner: run_ner<P> for every precision policy, on the CPU,
// on the runtime-shaped BERT family (one translation unit: the token classifier's encoder
// is instantiated here alone).
#include "run_ner.hpp"
namespace span_classifier {
template int run_ner<ctdl::precision::Fp32>(const Setup&);
template int run_ner<ctdl::precision::Bf16Mixed>(const Setup&);
template int run_ner<ctdl::precision::Fp16Mixed>(const Setup&);
}  // namespace span_classifier

// ner_span_classifier --task_name=ner --device=cuda: run_ner<P, Cuda> for every precision
// policy (TF32 too), compiled by nvcc (the ops' CUDA kernels exist only there); the
// runtime-shaped BERT family, as on the CPU. In a CUDA build the Dynamic family's unit
// (instantiate_cuda.cu.in) includes this file, so that the family's kernels are compiled
// once; without that family among the CUDA ones it is a unit of its own
// (examples/CMakeLists.txt).
#include "run_ner.hpp"
namespace span_classifier {
template int run_ner<ctdl::precision::Fp32, ctdl::Cuda>(const Setup&);
template int run_ner<ctdl::precision::Bf16Mixed, ctdl::Cuda>(const Setup&);
template int run_ner<ctdl::precision::Fp16Mixed, ctdl::Cuda>(const Setup&);
template int run_ner<ctdl::precision::Tf32, ctdl::Cuda>(const Setup&);
}  // namespace span_classifier

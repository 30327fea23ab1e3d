// bert_bench --device=cuda: the BERT step on a CUDA device, for the runtime-shaped family
// bert::Dynamic (on the GPU every kernel takes its widths at run time, so one compiled
// family runs every --model), compiled by nvcc in a CUDA build.
//
// A training step is the span classifier's (train::ClassifierTrainer): forward with
// dropout, cross-entropy, backward, then the fused device step (optim::DeviceStep:
// finiteness, the global norm, clipping to 1.0, AdamW at BERT's defaults), which reads
// its outcome back, so each step ends synchronised. An inference step is a forward
// without dropout, synchronised at its end. The weights are drawn on the host
// (bert::init_weights) and copied up.
#include <ctdl/kernels/cuda/elementwise.cuh>
#include <ctdl/train/classifier.hpp>

#include "bert_bench.hpp"

namespace ctdl::bench {

template <class P>
std::unique_ptr<Bench> make_cuda_bench(const Args& a, const bert::BertConfig& c) {
  struct CudaBench final : Bench {
    using Model = bert::BertForSequenceClassification<float, bert::Dynamic, P, Cuda>;
    Args a;
    Model model;
    bert::Batch batch;
    train::ClassifierTrainer<Model, P> trainer;
    optim::AdamW adam;
    std::uint64_t step_no = 0;

    static Model initialised(const bert::BertConfig& c) {
      auto m = Model::make(c, 5);
      bert::init_weights(m, c.initializer_range, 1);  // drawn on the host, as for the CPU's model
      return m;
    }
    CudaBench(const Args& args, const bert::BertConfig& c)
        : a(args), model(initialised(c)), batch(random_batch(args, c)), trainer(model, {.max_grad_norm = 1.0, .seed = 42}) {}
    void step() override {
      if (a.mode == "train") {
        trainer.backward(batch);
        trainer.apply(adam, 1e-5f);
      } else {
        Tape tape;
        NoGrad no_grad(tape);
        nn::Context ctx{tape, false, 42, step_no++};
        auto logits = model.forward(ctx, batch);
        cuda::check(cudaStreamSynchronize(cuda::current_stream()), "bert_bench: the inference step");
      }
    }
  };
  return std::make_unique<CudaBench>(a, c);
}

template std::unique_ptr<Bench> make_cuda_bench<precision::Fp32>(const Args&, const bert::BertConfig&);
template std::unique_ptr<Bench> make_cuda_bench<precision::Bf16Mixed>(const Args&, const bert::BertConfig&);
template std::unique_ptr<Bench> make_cuda_bench<precision::Tf32>(const Args&, const bert::BertConfig&);

}  // namespace ctdl::bench

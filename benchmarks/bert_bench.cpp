// BERT training/inference step benchmark on random data.
//
//   build/bin/bert_bench --model=base --precision=fp32 --batch=8 --seq_len=128 --mode=train
//
// --family=dynamic runs the runtime-shaped family bert::Dynamic at the --model shape;
// --family=both builds both and times their steps interleaved (static, dynamic, static,
// ...), so that a shared machine's load falls on both alike, then prints a line each and
// the ratio of their medians.
//
// Runs --warmup untimed steps, then --steps timed ones, and prints one JSON line:
// sentences_per_s, step_ms (median), peak_rss_mb, the oneDNN implementation of the
// matmuls, and the matmul floor: the time oneDNN alone needs for exactly the matmuls of
// one step (recorded during a step, then replayed with the same shapes, transposes and
// threading), measured in the same run, with the fraction floor / step.
// A training step is forward (dropout on) + cross-entropy + backward + an SGD update of
// every parameter (the optimizers arrive with the training issue).
//
// --device=cuda[:N] (a CUDA build): the runtime-shaped family at the --model shape on the
// GPU, training as the span classifier does (AdamW, clipping; bert_bench_cuda.cu); one
// JSON line with the step times and the device memory pool's peak. --trace=N then traces
// one more step through CUPTI (cuda_kernel_trace.hpp) and prints on stderr how busy the
// GPU was and the N kernels that took the most time.

#include <CLI/CLI.hpp>

#include "bert_bench.hpp"
#ifdef CTDL_BENCH_TRACE
#include "cuda_kernel_trace.hpp"
#endif

using namespace ctdl;
using bench::Args;
using bench::Bench;
using bench::make_bench;

#define CTDL_EXTERN_FAMILY(F)                                                                            \
  extern template std::unique_ptr<Bench> bench::make_bench<float, bert::F, precision::Fp32>(const Args&, \
                                                                                            const bert::BertConfig&); \
  extern template std::unique_ptr<Bench> bench::make_bench<float, bert::F, precision::Bf16Mixed>(      \
      const Args&, const bert::BertConfig&);
CTDL_EXTERN_FAMILY(Tiny)
CTDL_EXTERN_FAMILY(Mini)
CTDL_EXTERN_FAMILY(MiniLM)
CTDL_EXTERN_FAMILY(Small)
CTDL_EXTERN_FAMILY(Base)
CTDL_EXTERN_FAMILY(Large)
CTDL_EXTERN_FAMILY(Dynamic)
extern template std::unique_ptr<Bench> bench::make_cuda_bench<precision::Fp32>(const Args&, const bert::BertConfig&);
extern template std::unique_ptr<Bench> bench::make_cuda_bench<precision::Bf16Mixed>(const Args&, const bert::BertConfig&);
extern template std::unique_ptr<Bench> bench::make_cuda_bench<precision::Tf32>(const Args&, const bert::BertConfig&);

namespace {

// The families this build compiled (CMake option CTDL_BERT_BENCH_FAMILIES; each defines
// CTDL_BENCH_FAMILY_<Name>).
template <class F>
constexpr bool compiled = false;
#ifdef CTDL_BENCH_FAMILY_Tiny
template <> constexpr bool compiled<bert::Tiny> = true;
#endif
#ifdef CTDL_BENCH_FAMILY_Mini
template <> constexpr bool compiled<bert::Mini> = true;
#endif
#ifdef CTDL_BENCH_FAMILY_MiniLM
template <> constexpr bool compiled<bert::MiniLM> = true;
#endif
#ifdef CTDL_BENCH_FAMILY_Small
template <> constexpr bool compiled<bert::Small> = true;
#endif
#ifdef CTDL_BENCH_FAMILY_Base
template <> constexpr bool compiled<bert::Base> = true;
#endif
#ifdef CTDL_BENCH_FAMILY_Large
template <> constexpr bool compiled<bert::Large> = true;
#endif
#ifdef CTDL_BENCH_FAMILY_Dynamic
template <> constexpr bool compiled<bert::Dynamic> = true;
#endif

/// The benchmark of family F (a static family, or bert::Dynamic at the same shape).
template <class F, class P>
std::unique_ptr<Bench> bench_of(const Args& a, const bert::BertConfig& c, const char* family_name) {
  if constexpr (compiled<F>) {
    return make_bench<float, F, P>(a, c);
  } else {
    throw Error("this build of bert_bench did not compile the family " + std::string(family_name) +
                " (CMake option CTDL_BERT_BENCH_FAMILIES, e.g. \"Base;Dynamic\"; the default builds Tiny, Base and Dynamic, \"all\" every family; --family=dynamic runs any shape)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"BERT step benchmark on random data; prints one JSON line per family timed"};
  app.add_option("--model", a.model, "tiny, mini, minilm, small, base or large")
      ->check(CLI::IsMember({"tiny", "mini", "minilm", "small", "base", "large"}));
  app.add_option("--family", a.family,
                 "static (the compiled family of --model), dynamic (the runtime-shaped bert::Dynamic at the same "
                 "shape) or both (their steps interleaved, one line each)")
      ->check(CLI::IsMember({"static", "dynamic", "both"}));
  app.add_option("--precision", a.precision,
                 "fp32, bf16 (Bf16Mixed: bf16 matmul inputs, fp32 accumulation) or, with --device=cuda, tf32 (fp32 "
                 "with the products on TF32 tensor cores)")
      ->check(CLI::IsMember({"fp32", "bf16", "tf32"}));
  app.add_option("--batch", a.batch, "sequences per step")->check(CLI::PositiveNumber);
  app.add_option("--seq_len", a.seq_len, "tokens per sequence")->check(CLI::Range(1, 512));
  app.add_option("--mode", a.mode, "train or infer")->check(CLI::IsMember({"train", "infer"}));
  app.add_option("--threads", a.threads, "OpenMP threads (default: all cores)");
  app.add_option("--steps", a.steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", a.warmup, "untimed steps first");
  app.add_option("--device", a.device,
                 "cpu, cuda or cuda:N (a CUDA build; the runtime-shaped family at the --model shape, AdamW and "
                 "clipping as the span classifier trains)");
  app.add_option("--matmul_floor", a.matmul_floor,
                 "time the step's matmuls alone too (false: the floor keys are 0, and the run is shorter)");
  app.add_option("--trace", a.trace,
                 "with --device=cuda: after the timed steps, trace one more through CUPTI and list the N kernels "
                 "that took the most GPU time, with how busy the GPU was (on stderr)")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  if (a.trace > 0 && a.device.rfind("cuda", 0) != 0) {
    std::fprintf(stderr, "bert_bench: --trace needs --device=cuda\n");
    return 2;
  }
  if (a.threads > 0) omp_set_num_threads(a.threads);
  try {
    bert::BertConfig c;
    c.vocab_size = 28996;
    auto by_family = [&]<class F>(index_t layers) {
      c.hidden_size = F::hidden;
      c.num_attention_heads = F::heads;
      c.intermediate_size = F::intermediate;
      c.num_hidden_layers = layers;
      if (const auto device = DeviceSpec::parse(a.device); device.cuda) {
#ifdef CTDL_BENCH_CUDA
        const std::string name = use_cuda_device(device.ordinal);
        auto bench = a.precision == "bf16"   ? bench::make_cuda_bench<precision::Bf16Mixed>(a, c)
                     : a.precision == "tf32" ? bench::make_cuda_bench<precision::Tf32>(a, c)
                                             : bench::make_cuda_bench<precision::Fp32>(a, c);
        // The peak from here on, as the PyTorch anchor resets its own once the model is on
        // the GPU (placing the weights held each old and new copy for a moment).
        DeviceAllocator<Cuda>::reset_peak_live_bytes();
        const auto times = bench::time_interleaved(a, {bench.get()});
        if (a.trace > 0) {  // one more step, traced: the GPU's profile of the step (stderr)
#ifdef CTDL_BENCH_TRACE
          bench::KernelTrace trace;
          const auto t0 = std::chrono::steady_clock::now();
          bench->step();  // ends synchronised
          const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
          std::fputs(bench::summarise(trace.finish(), a.trace).c_str(), stderr);
          std::fprintf(stderr,
                       "traced step: %.3f ms on the host's clock, tracing included (the untraced median step: %.3f "
                       "ms); the GPU's span above over this is the share of the step it had work queued\n",
                       wall_ms, bench::median(times[0].wall));
#else
          throw Error("--trace: this build of bert_bench has no CUPTI (CMake found no CUDA::cupti)");
#endif
        }
        bench::report_device(a, layers, name, times[0]);
        return 0;
#else
        throw Error("--device=" + a.device + ": this build of bert_bench has no CUDA (configure with -DCTDL_WITH_CUDA=ON)");
#endif
      }
      auto benches = [&]<class P>() {
        std::vector<std::pair<std::string, std::unique_ptr<Bench>>> b;
        if (a.family != "dynamic") b.emplace_back("static", bench_of<F, P>(a, c, a.model.c_str()));
        if (a.family != "static") b.emplace_back("dynamic", bench_of<bert::Dynamic, P>(a, c, "Dynamic"));
        return b;
      };
      if (a.precision == "tf32") throw Error("--precision=tf32 needs --device=cuda (CPUs have no TF32: use fp32)");
      auto list = a.precision == "bf16" ? benches.template operator()<precision::Bf16Mixed>()
                                        : benches.template operator()<precision::Fp32>();
      std::vector<Bench*> ptrs;
      for (auto& [name, b] : list) ptrs.push_back(b.get());
      const std::size_t allocations_before = DeviceAllocator<Cpu>::system_allocations();
      const auto times = bench::time_interleaved(a, ptrs);
      for (std::size_t k = 0; k < list.size(); ++k)
        bench::report(a, layers, list[k].first, *list[k].second, times[k], allocations_before);
      if (list.size() == 2) {
        std::printf("{\"dynamic_over_static\":%.4f,\"dynamic_over_static_cpu\":%.4f}\n",
                    bench::median(times[1].wall) / bench::median(times[0].wall),
                    bench::median(times[1].cpu) / bench::median(times[0].cpu));
      }
      return 0;
    };
    if (a.model == "tiny") return by_family.template operator()<bert::Tiny>(2);
    if (a.model == "mini") return by_family.template operator()<bert::Mini>(4);
    if (a.model == "minilm") return by_family.template operator()<bert::MiniLM>(12);
    if (a.model == "small") return by_family.template operator()<bert::Small>(4);
    if (a.model == "base") return by_family.template operator()<bert::Base>(12);
    return by_family.template operator()<bert::Large>(24);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bert_bench: %s\n", e.what());
    return 1;
  }
}

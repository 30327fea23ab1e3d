// BERT training/inference step benchmark on random data.
//
//   build/bin/bert_bench --model=base --precision=fp32 --batch=8 --seq_len=128 --mode=train
//
// Runs --warmup untimed steps, then --steps timed ones, and prints one JSON line:
// sentences_per_s, step_ms (median), peak_rss_mb, the oneDNN implementation of the
// matmuls, and the matmul floor: the time oneDNN alone needs for exactly the matmuls of
// one step (recorded during a step, then replayed with the same shapes, transposes and
// threading), measured in the same run, with the fraction floor / step.
// A training step is forward (dropout on) + cross-entropy + backward + an SGD update of
// every parameter (the optimizers arrive with the training issue).

#include <CLI/CLI.hpp>

#include "bert_bench.hpp"

using namespace ctdl;
using bench::Args;
using bench::run;

#define CTDL_EXTERN_FAMILY(F)                                                            \
  extern template int bench::run<float, bert::F, precision::Fp32>(const Args&, index_t); \
  extern template int bench::run<float, bert::F, precision::Bf16Mixed>(const Args&, index_t);
CTDL_EXTERN_FAMILY(Tiny)
CTDL_EXTERN_FAMILY(Mini)
CTDL_EXTERN_FAMILY(MiniLM)
CTDL_EXTERN_FAMILY(Small)
CTDL_EXTERN_FAMILY(Base)
CTDL_EXTERN_FAMILY(Large)

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"BERT step benchmark on random data; prints one JSON line"};
  app.add_option("--model", a.model, "tiny, mini, minilm, small, base or large")
      ->check(CLI::IsMember({"tiny", "mini", "minilm", "small", "base", "large"}));
  app.add_option("--precision", a.precision, "fp32, or bf16 (Bf16Mixed: bf16 matmul inputs, fp32 accumulation)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--batch", a.batch, "sequences per step")->check(CLI::PositiveNumber);
  app.add_option("--seq_len", a.seq_len, "tokens per sequence")->check(CLI::Range(1, 512));
  app.add_option("--mode", a.mode, "train or infer")->check(CLI::IsMember({"train", "infer"}));
  app.add_option("--threads", a.threads, "OpenMP threads (default: all cores)");
  app.add_option("--steps", a.steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", a.warmup, "untimed steps first");
  CLI11_PARSE(app, argc, argv);
  if (a.threads > 0) omp_set_num_threads(a.threads);
  try {
    auto by_family = [&]<class P>() {
      if (a.model == "tiny") return run<float, bert::Tiny, P>(a, 2);
      if (a.model == "mini") return run<float, bert::Mini, P>(a, 4);
      if (a.model == "minilm") return run<float, bert::MiniLM, P>(a, 12);
      if (a.model == "small") return run<float, bert::Small, P>(a, 4);
      if (a.model == "base") return run<float, bert::Base, P>(a, 12);
      return run<float, bert::Large, P>(a, 24);
    };
    if (a.precision == "bf16") return by_family.template operator()<precision::Bf16Mixed>();
    return by_family.template operator()<precision::Fp32>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bert_bench: %s\n", e.what());
    return 1;
  }
}

#pragma once
// The benchmark step of bert_bench, instantiated once per shape family in its own
// translation unit (bert_bench_<family>.cpp) so that the families compile in parallel;
// bert_bench_dynamic.cpp is the runtime-shaped family bert::Dynamic, which runs any shape.

#include <ctdl/models/bert/model.hpp>
#include "bert_instances.hpp"  // the encoders, compiled once in examples/bert_instances
#include <ctdl/precision/policy.hpp>
#include <omp.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace ctdl::bench {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model = "base", precision = "fp32", mode = "train";
  std::string family = "static";  // static, dynamic (bert::Dynamic at the --model shape) or both
  std::string device = "cpu";     // cpu | cuda | cuda:N (Dynamic on the GPU)
  index_t batch = 8, seq_len = 128;
  int threads = 0, steps = 5, warmup = 2;
  bool matmul_floor = true;  // false: no floor (saves a step and four replays of its matmuls)
  int trace = 0;             // --device=cuda: > 0 traces one more step, listing this many kernels
};

inline double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Times the logged matmuls alone: calls made inside a parallel region (per-head
/// attention GEMMs) are replayed the same way, in parallel batches.
inline double matmul_floor_ms(const std::vector<kernels::cpu::MatmulLog::Call>& calls) {
  auto span = [](index_t batch, index_t stride, index_t size) { return stride == 0 ? size : (batch - 1) * stride + size; };
  index_t max_a = 0, max_b = 0, max_c = 0;
  for (const auto& c : calls) {
    const auto& d = c.dims;
    max_a = std::max(max_a, span(d.batch, d.stride_a, (d.trans_a ? d.k : d.m) * d.lda));
    max_b = std::max(max_b, span(d.batch, d.stride_b, (d.trans_b ? d.n : d.k) * d.ldb));
    max_c = std::max(max_c, span(d.batch, d.stride_c, d.m * d.ldc));
  }
  const int threads = omp_get_max_threads();
  std::vector<std::vector<float>> af(threads, std::vector<float>(max_a, 0.5f)), bff(threads, std::vector<float>(max_b, 0.25f)),
      cf(threads, std::vector<float>(max_c));
  std::vector<std::vector<bf16>> ah(threads, std::vector<bf16>(max_a, bf16(0.5f))), bh(threads, std::vector<bf16>(max_b, bf16(0.25f))),
      ch(threads, std::vector<bf16>(max_c));
  auto run = [&](const kernels::cpu::MatmulLog::Call& c, int t) {
    if (!c.bf16_inputs) kernels::cpu::matmul(af[t].data(), bff[t].data(), cf[t].data(), c.dims, 0.0f);
    else if (c.float_output) kernels::cpu::matmul(ah[t].data(), bh[t].data(), cf[t].data(), c.dims, 0.0f);
    else kernels::cpu::matmul(ah[t].data(), bh[t].data(), ch[t].data(), c.dims, 0.0f);
  };
  auto replay = [&] {
    for (std::size_t i = 0; i < calls.size();) {
      if (!calls[i].in_parallel_region) {
        run(calls[i++], 0);
        continue;
      }
      std::size_t j = i;
      while (j < calls.size() && calls[j].in_parallel_region) ++j;
#pragma omp parallel for schedule(static)
      for (std::size_t k = i; k < j; ++k) run(calls[k], omp_get_thread_num());
      i = j;
    }
  };
  replay();  // warm-up (primitive creation)
  std::vector<double> t;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    replay();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return median(t);
}

/// A model ready to run benchmark steps, type-erased so that bert_bench.cpp can time the
/// steps of two families interleaved (--family=both).
struct Bench {
  virtual ~Bench() = default;
  /// One training step (forward with dropout, cross-entropy, backward, SGD update) or
  /// one inference step, as Args::mode says.
  virtual void step() = 0;
};

/// The benchmark model of family F for `c` (its hidden/heads/intermediate and layers set
/// by the caller), on a random batch of a.batch x a.seq_len.
template <class T, class F, class P>
std::unique_ptr<Bench> make_bench(const Args& a, const bert::BertConfig& c);

/// The same on a CUDA device (bert_bench_cuda.cu, a CUDA build only; the device chosen by
/// --device is current): family Dynamic, the span classifier's training step with
/// AdamW and clipping (train::ClassifierTrainer) or a forward.
template <class P>
std::unique_ptr<Bench> make_cuda_bench(const Args& a, const bert::BertConfig& c);

/// A random batch of a.batch x a.seq_len ids of `c`'s vocabulary (every token real),
/// labels in [0, 5).
inline bert::Batch random_batch(const Args& a, const bert::BertConfig& c) {
  std::mt19937 rng(3);
  using Ids = Tensor<std::int32_t, Shape<dyn, dyn>>;
  const std::array<index_t, 2> ext{a.batch, a.seq_len};
  bert::Batch batch{Ids(ext), Ids(ext), Ids(ext), Tensor<std::int32_t, Shape<dyn>>({a.batch})};
  for (index_t i = 0; i < batch.input_ids.size(); ++i) {
    batch.input_ids.data()[i] = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(c.vocab_size));
    batch.attention_mask.data()[i] = 1;
  }
  for (index_t i = 0; i < a.batch; ++i) batch.labels.data()[i] = static_cast<std::int32_t>(rng() % 5);
  return batch;
}

/// The CPU time this process has used, all threads, in ms.
inline double process_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
}

/// Each timed step's wall-clock and CPU time (ms). On a machine shared with other work,
/// the CPU time of a one-thread run is the steadier figure: it leaves out the time the
/// process waited for a core.
struct StepTimes {
  std::vector<double> wall, cpu;
};

/// Warms up, times a.steps steps of each bench in turn (bench 0, bench 1, bench 0, ...:
/// on a shared machine both see the same load), and returns each bench's step times.
inline std::vector<StepTimes> time_interleaved(const Args& a, const std::vector<Bench*>& benches) {
  for (int i = 0; i < a.warmup; ++i)
    for (Bench* b : benches) b->step();
  std::vector<StepTimes> times(benches.size());
  for (int i = 0; i < a.steps; ++i)
    for (std::size_t k = 0; k < benches.size(); ++k) {
      const auto t0 = Clock::now();
      const double c0 = process_cpu_ms();
      benches[k]->step();
      times[k].cpu.push_back(process_cpu_ms() - c0);
      times[k].wall.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  return times;
}

/// Times `bench` (after the timed steps `times`, its allocation counters since
/// `system_allocations_before`), runs one more step to log its matmuls, replays them for
/// the floor, and prints the JSON line; `family` names the family ("static" or "dynamic").
inline void report(const Args& a, index_t layers, const std::string& family, Bench& bench, const StepTimes& step_times,
                   std::size_t system_allocations_before) {
  const std::vector<double>& times = step_times.wall;
  const double step_ms = median(times);

  // The steps' peak, before the floor's replay buffers (up to a few of the largest
  // operands per thread) are allocated.
  const double rss_mb = peak_rss_mb();
  const double system_allocs = static_cast<double>(DeviceAllocator<Cpu>::system_allocations() - system_allocations_before) /
                               static_cast<double>(times.size());
  const double tensor_mb = static_cast<double>(DeviceAllocator<Cpu>::peak_live_bytes()) / (1 << 20);
  kernels::cpu::MatmulLog log;
  if (a.matmul_floor) {
    kernels::cpu::set_matmul_log(&log);
    bench.step();
    kernels::cpu::set_matmul_log(nullptr);
  }
  DeviceAllocator<Cpu>::release_cached();
  // Which kernels ran the step's products, by share of the flops: "brg:avx512_core_bf16 82%, ...".
  std::vector<std::pair<double, std::string>> impls;
  double logged_flops = 0;
  for (const auto& [name, f] : log.flops_by_implementation) {
    impls.emplace_back(f, name);
    logged_flops += f;
  }
  std::sort(impls.rbegin(), impls.rend());
  std::string impl_summary;
  for (const auto& [f, name] : impls) {
    if (!impl_summary.empty()) impl_summary += ", ";
    impl_summary += name + " " + std::to_string(static_cast<int>(std::lround(100.0 * f / logged_flops))) + "%";
  }
  const double floor_ms = a.matmul_floor ? matmul_floor_ms(log.calls) : 0.0;
  double flops = 0;
  for (const auto& call : log.calls) flops += 2.0 * call.dims.batch * call.dims.m * call.dims.n * call.dims.k;
  const auto list = [](const std::vector<double>& v) {
    std::string r;
    for (double t : v) r += (r.empty() ? "" : ",") + std::to_string(std::lround(t));
    return r;
  };

  std::printf(
      "{\"model\":\"%s\",\"family\":\"%s\",\"layers\":%td,\"precision\":\"%s\",\"mode\":\"%s\",\"batch\":%td,"
      "\"seq_len\":%td,\"threads\":%d,\"steps\":%d,\"step_ms\":%.1f,\"steps_ms\":[%s],\"step_cpu_ms\":%.1f,"
      "\"steps_cpu_ms\":[%s],\"sentences_per_s\":%.2f,"
      "\"matmul_floor_ms\":%.1f,\"fraction_of_floor\":%.3f,\"matmul_gflop_per_step\":%.1f,\"matmul_calls\":%zu,"
      "\"peak_rss_mb\":%.0f,\"peak_tensor_mb\":%.0f,\"large_system_allocs_per_step\":%.1f,\"matmul_impl\":\"%s\"}\n",
      a.model.c_str(), family.c_str(), layers, a.precision.c_str(), a.mode.c_str(), a.batch, a.seq_len,
      omp_get_max_threads(), a.steps, step_ms, list(times).c_str(), median(step_times.cpu), list(step_times.cpu).c_str(), 1000.0 * static_cast<double>(a.batch) / step_ms, floor_ms,
      floor_ms / step_ms, flops / 1e9, log.calls.size(), rss_mb, tensor_mb, system_allocs, impl_summary.c_str());
  std::fflush(stdout);
}

/// The JSON line of a run on a CUDA device: the step times and the device memory pool's
/// peak (DeviceAllocator<Cuda>::peak_live_bytes(), beside PyTorch's
/// max_memory_allocated()). The matmul floor on the GPU is bench_cuda_matmul_floor's.
inline void report_device(const Args& a, index_t layers, const std::string& device_name, const StepTimes& step_times) {
  const double step_ms = median(step_times.wall);
  std::string steps;
  for (double t : step_times.wall) {
    char ms[32];
    std::snprintf(ms, sizeof ms, "%s%.2f", steps.empty() ? "" : ",", t);
    steps += ms;
  }
  std::printf(
      "{\"model\":\"%s\",\"family\":\"dynamic\",\"layers\":%td,\"precision\":\"%s\",\"mode\":\"%s\",\"batch\":%td,"
      "\"seq_len\":%td,\"device\":\"%s\",\"device_name\":\"%s\",\"steps\":%d,\"step_ms\":%.2f,\"steps_ms\":[%s],"
      "\"sentences_per_s\":%.1f,\"peak_device_mb\":%.0f}\n",
      a.model.c_str(), layers, a.precision.c_str(), a.mode.c_str(), a.batch, a.seq_len, a.device.c_str(),
      device_name.c_str(), a.steps, step_ms, steps.c_str(), 1000.0 * static_cast<double>(a.batch) / step_ms,
      static_cast<double>(DeviceAllocator<Cuda>::peak_live_bytes()) / (1 << 20));
  std::fflush(stdout);
}

// ============================================================================

template <class T, class F, class P>
std::unique_ptr<Bench> make_bench(const Args& a, const bert::BertConfig& c) {
  struct ModelBench final : Bench {
    Args a;
    bert::BertForSequenceClassification<T, F, P> model;
    bert::Batch batch;
    std::uint64_t step_no = 0;

    ModelBench(const Args& args, const bert::BertConfig& c)
        : a(args), model(decltype(model)::make(c, 5)), batch(random_batch(args, c)) {
      bert::init_weights(model, c.initializer_range, 1);
    }
    void step() override {
      Tape tape;
      nn::Context ctx{tape, a.mode == "train", 42, step_no++};
      if (a.mode == "train") {
        auto loss = ops::cross_entropy(tape, model.forward(ctx, batch), batch.labels);
        tape.backward(loss);
        nn::visit_parameters(model, [](const std::string&, auto& p) {
          p.value() -= lazy(p.grad()) * 1e-5;
          p.zero_grad();
        });
      } else {
        NoGrad no_grad(tape);
        auto logits = model.forward(ctx, batch);
        (void)logits;
      }
    }
  };
  return std::make_unique<ModelBench>(a, c);
}

}  // namespace ctdl::bench

#define CTDL_BERT_BENCH_FAMILY(F)                                                                       \
  template std::unique_ptr<ctdl::bench::Bench> ctdl::bench::make_bench<float, ctdl::bert::F, ctdl::precision::Fp32>( \
      const Args&, const ctdl::bert::BertConfig&);                                                      \
  template std::unique_ptr<ctdl::bench::Bench>                                                          \
  ctdl::bench::make_bench<float, ctdl::bert::F, ctdl::precision::Bf16Mixed>(const Args&, const ctdl::bert::BertConfig&);

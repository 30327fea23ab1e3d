// Data-parallel training over MPI (dist/data_parallel.hpp, train::fit with a
// communicator), on the ranks mpiexec starts (2 under CTest):
//   - GradientAverager: each rank's own gradients become the average over the ranks, in
//     several buckets; a parameter with a gradient on one rank only gets the average with
//     zeros elsewhere, one with none anywhere keeps none; with overlap, buckets start
//     during backward (a real BERT backward);
//   - broadcast_parameters: rank 0's weights everywhere;
//   - require_same_on_all_ranks: equal settings pass; a different one stops every rank,
//     naming it;
//   - independence of the rank count: a tiny BERT trained 2 epochs (dropout off) on N
//     ranks at batch b ends with the weights one process reaches at batch N*b (each rank
//     trains that one-process model too, with LocalComm); also with 2 accumulated
//     micro-batches, and with overlap off;
//   - ShardedOptimizer (ZeRO-1): fit with the optimizer state sharded ends with plain data
//     parallel's weights and (in its final checkpoint, gathered) its moments; each rank
//     holds 1/N of the state; a run resumed from a mid-run checkpoint ends where the
//     uninterrupted run ended, on N ranks and on one process; SGD sliced the same way
//     takes plain data parallel's 3 steps with 1/N of its momentum buffer per rank.
// Rank 0 prints one line per check; a failure prints on the rank that saw it. Exit 0
// when no rank failed; 77 (Skipped) with --skip.
#include <ctdl/dist/data_parallel.hpp>
#include <ctdl/dist/mpi.hpp>
#include <ctdl/dist/sharded_optimizer.hpp>
#include <ctdl/optim/sgd.hpp>
#include <ctdl/train/loops.hpp>

#include <cmath>
#include <filesystem>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "../test_util.hpp"
#include "../train/toy_task.hpp"

namespace {

using namespace ctdl;
using F = bert::Family<32, 4, 64>;
using P = precision::Fp32;

class Checks {
 public:
  explicit Checks(int rank) : rank_(rank) {}
  void expect(const std::string& what, bool ok, const std::string& detail = "") {
    ++checks_;
    if (!ok) {
      ++failures_;
      std::printf("rank %d: FAILED: %s %s\n", rank_, what.c_str(), detail.c_str());
    } else if (rank_ == 0) {
      std::printf("ok: %s %s\n", what.c_str(), detail.c_str());
    }
    std::fflush(stdout);
  }
  int failures() const { return failures_; }

 private:
  int rank_, checks_ = 0, failures_ = 0;
};

/// The toy task (train/toy_task.hpp); each rank its own files: the ranks share the build directory.
const data::FeatureCache& toy_cache(int rank) {
  return test::toy_span_cache("data_parallel_rows.rank" + std::to_string(rank));
}

/// Rank r's rows of the toy task's first global batch (`batch` rows per rank, file order).
data::Batch first_batch(int r, int n, index_t batch) {
  data::Batcher batcher(toy_cache(r), {.batch_size = batch, .rank = r, .world_size = n, .shuffle = false});
  batcher.start_epoch(0);
  data::Batch out;
  batcher.next(out);
  return out;
}

auto make_model(std::uint64_t seed) {
  auto m = bert::BertForSequenceClassification<float, F, P>::make(test::toy_bert_config(/*dropout=*/false), 3);
  bert::init_weights(m, 0.02, seed);
  return m;
}

template <class M>
std::vector<std::vector<float>> values(M& model) {
  std::vector<std::vector<float>> out;
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    const auto& v = std::as_const(p).value();
    out.emplace_back(v.data(), v.data() + v.size());
  });
  return out;
}

double max_difference(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double worst = a.size() == b.size() ? 0 : INFINITY;
  for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k)
    for (std::size_t i = 0; i < a[k].size(); ++i) worst = std::max(worst, std::abs(double{a[k][i]} - b[k][i]));
  return worst;
}

train::FitHooks quiet() {
  train::FitHooks h;
  h.say = [](const std::string&) {};
  return h;
}

void check_averager(dist::MpiComm& comm, Checks& checks) {
  const int r = comm.rank(), n = comm.size();
  auto model = make_model(1);
  // Small buckets: several all-reduces.
  dist::GradientAverager avg(comm, model, {.bucket_bytes = 4096});
  checks.expect("GradientAverager: several buckets", avg.buckets().size() > 3,
                "(" + std::to_string(avg.buckets().size()) + ")");
  // Rank r's gradient element i of parameter k: (r + 1) * (k + i % 5); the classifier's
  // bias only on rank 0; the pooler's weight on no rank.
  std::size_t k = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    p.zero_grad();
    if (name == "bert.pooler.dense.weight") return;
    if (name == "classifier.bias" && r != 0) return;
    float* g = p.node_ptr()->grad_data();  // a zero gradient, made
    for (index_t i = 0; i < std::as_const(p).value().size(); ++i)
      g[i] = static_cast<float>((r + 1) * (static_cast<int>(k) + i % 5));
    ++k;
  });
  Tape tape;
  avg.begin(tape);
  avg.finish();
  const float mean_factor = static_cast<float>(n + 1) / 2.f;  // mean of (r + 1) over r < n
  bool right = true, pooler_none = false, bias_right = true;
  k = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name == "bert.pooler.dense.weight") {
      pooler_none = !p.has_grad();
      return;
    }
    const auto& g = std::as_const(p).grad();
    for (index_t i = 0; i < g.size(); ++i) {
      const float base = static_cast<float>(static_cast<int>(k) + i % 5);
      const float want = name == "classifier.bias" ? base / static_cast<float>(n) : base * mean_factor;
      if (std::abs(g.data()[i] - want) > 1e-5f * std::max(1.f, std::abs(want))) {
        (name == "classifier.bias" ? bias_right : right) = false;
      }
    }
    ++k;
  });
  checks.expect("GradientAverager: gradients are the average over the ranks", right);
  checks.expect("GradientAverager: a gradient on rank 0 only is averaged with zeros", bias_right);
  checks.expect("GradientAverager: a parameter without a gradient on any rank keeps none", pooler_none);

  // A real backward: buckets start before it ends.
  nn::visit_parameters(model, [](const std::string&, auto& p) { p.zero_grad(); });
  const data::Batch batch = first_batch(r, n, 8);
  train::ClassifierTrainer<decltype(model), P> trainer(model, {});
  trainer.set_gradient_sync(&avg);
  trainer.backward(batch);
  const std::size_t during = avg.started_during_backward();
  optim::AdamW adam;
  trainer.apply(adam, 1e-3f);
  checks.expect("GradientAverager: buckets start during backward", during > 0,
                "(" + std::to_string(during) + " of " + std::to_string(avg.buckets().size()) + ")");
}

void check_broadcast(dist::MpiComm& comm, Checks& checks) {
  auto model = make_model(100 + static_cast<std::uint64_t>(comm.rank()));  // different on every rank
  auto root = make_model(100);
  dist::broadcast_parameters(comm, model);
  checks.expect("broadcast_parameters: rank 0's weights on every rank", max_difference(values(model), values(root)) == 0);
}

void check_agreement(dist::MpiComm& comm, Checks& checks) {
  bool passed = true;
  try {
    dist::require_same_on_all_ranks(comm, {{"config", "hidden 32"}, {"labels", "che dis out"}});
  } catch (const Error&) {
    passed = false;
  }
  checks.expect("require_same_on_all_ranks: equal settings pass", passed);
  std::string message;
  try {
    dist::require_same_on_all_ranks(
        comm, {{"config", "hidden 32"}, {"labels", comm.rank() == 1 ? "che dis" : "che dis out"}, {"vocab", "v1"}});
  } catch (const Error& e) {
    message = e.what();
  }
  checks.expect("require_same_on_all_ranks: a difference stops every rank, naming it",
                message.find("labels: differs from rank 0's on 1 rank") != std::string::npos &&
                    message.find("config") == std::string::npos && message.find("vocab") == std::string::npos,
                "(" + message + ")");
  if (comm.rank() == 1)
    checks.expect("require_same_on_all_ranks: the differing rank shows its value",
                  message.find("(this one: che dis)") != std::string::npos, "(" + message + ")");
  message.clear();
  std::map<std::string, std::string> settings{{"a", "1"}};
  if (comm.rank() == 1) settings["b"] = "2";
  try {
    dist::require_same_on_all_ranks(comm, settings);
  } catch (const Error& e) {
    message = e.what();
  }
  checks.expect("require_same_on_all_ranks: different numbers of settings stop every rank",
                message.find("different numbers of settings") != std::string::npos, "(" + message + ")");
}

void check_equivalence(dist::MpiComm& comm, Checks& checks, index_t batch, std::int64_t accumulation, bool overlap) {
  const int n = comm.size();
  const std::string what = "fit on " + std::to_string(n) + " ranks at batch " + std::to_string(batch) + " x " +
                           std::to_string(accumulation) + " micro-batches" + (overlap ? "" : ", no overlap");
  train::FitOptions o{.batch_size = batch, .accumulation_steps = accumulation, .epochs = 2, .learning_rate = 2e-3,
                      .seed = 3};
  auto parallel = make_model(7 + static_cast<std::uint64_t>(comm.rank()));  // rank 0's initial weights win
  const auto rp = train::fit<P>(parallel, toy_cache(comm.rank()), o, quiet(), comm,
                                {.bucket_bytes = 16 << 10, .overlap = overlap});
  dist::LocalComm one;
  auto single = make_model(7);
  o.batch_size = batch * n;
  const auto rs = train::fit<P>(single, toy_cache(comm.rank()), o, quiet(), one);
  const double diff = max_difference(values(parallel), values(single));
  auto initial = make_model(7);
  const double moved = max_difference(values(single), values(initial));
  char detail[160];
  std::snprintf(detail, sizeof detail, "(%lld steps each; max |difference| %.3g, weights moved by up to %.3g)",
                static_cast<long long>(rp.steps), diff, moved);
  checks.expect(what + " ends with the weights of one process at batch " + std::to_string(batch * n) + " x " +
                    std::to_string(accumulation),
                rp.steps == rs.steps && diff < 1e-5 && moved > 1e-3, detail);
}

/// The moments of a checkpoint's optimizer.safetensors, as read back into an AdamW.
template <class M>
std::vector<std::vector<float>> moments(const std::string& dir, M& model) {
  optim::AdamW adam;
  auto scratch = make_model(0);
  train::read_checkpoint(dir, scratch, adam);
  std::vector<std::vector<float>> out;
  std::size_t k = 0;
  nn::visit_parameters(model, [&](const std::string&, auto& p) {
    const auto n = std::as_const(p).value().size();
    for (auto* slots : {&adam.m(), &adam.v()}) {
      const auto& t = slots->at(k, n);
      out.emplace_back(t.data(), t.data() + t.size());
    }
    ++k;
  });
  return out;
}

void check_sharded(dist::MpiComm& comm, Checks& checks) {
  const int r = comm.rank(), n = comm.size();
  // The state each rank holds: 1/N of AdamW's two moments (one step makes them).
  {
    auto model = make_model(5);
    dist::ShardedOptimizer<optim::AdamW, dist::MpiComm> sharded(comm, model);
    const data::Batch batch = first_batch(r, n, 4);
    train::ClassifierTrainer<decltype(model), P> trainer(model, {});
    trainer.set_gradient_sync(&sharded);
    trainer.backward(batch);
    trainer.apply(sharded, 1e-3f);
    const auto whole = 2 * nn::count_parameters(model) * std::int64_t{sizeof(float)};
    float mine = static_cast<float>(sharded.state_bytes()), most = mine, sum = mine;
    std::vector<float> all(static_cast<std::size_t>(n));
    comm.all_gather(&mine, all.data(), 1);
    most = *std::max_element(all.begin(), all.end());
    sum = std::accumulate(all.begin(), all.end(), 0.f);
    char detail[200];
    std::snprintf(detail, sizeof detail, "(AdamW's whole state %lld bytes; the largest rank holds %.0f = 1/%.3f of it; all ranks %.0f)",
                  static_cast<long long>(whole), most, static_cast<double>(whole) / most, sum);
    checks.expect("ShardedOptimizer: each rank holds 1/N of the optimizer state",
                  most <= static_cast<float>(whole) / static_cast<float>(n) + 8.f * sizeof(float) &&
                      sum == static_cast<float>(whole),
                  detail);
  }
  // SGD (momentum, weight decay) is sliced as AdamW is: 3 steps of ZeRO-1 against plain
  // data parallel; each rank holds 1/N of its momentum buffer.
  {
    const optim::Sgd::Options sgd_options{.momentum = 0.9, .weight_decay = 0.01};
    auto plain = make_model(5), zero = make_model(5);
    dist::GradientAverager avg(comm, plain);
    dist::ShardedOptimizer<optim::Sgd, dist::MpiComm> sharded(comm, zero, optim::Sgd(sgd_options));
    train::ClassifierTrainer<decltype(plain), P> trainer_p(plain, {}), trainer_z(zero, {});
    trainer_p.set_gradient_sync(&avg);
    trainer_z.set_gradient_sync(&sharded);
    optim::Sgd sgd(sgd_options);
    const data::Batch batch = first_batch(r, n, 4);
    for (int step = 0; step < 3; ++step) {
      trainer_p.backward(batch);
      trainer_p.apply(sgd, 1e-2f);
      trainer_z.backward(batch);
      trainer_z.apply(sharded, 1e-2f);
    }
    const double diff = max_difference(values(zero), values(plain));
    auto initial = make_model(5);
    const double moved = max_difference(values(plain), values(initial));
    float mine = static_cast<float>(sharded.state_bytes());
    comm.all_reduce(&mine, 1, dist::ReduceOp::sum);
    const auto whole = nn::count_parameters(zero) * std::int64_t{sizeof(float)};
    char detail[200];
    std::snprintf(detail, sizeof detail, "(max |difference| %.3g, weights moved by up to %.3g; the ranks' buffers %.0f of %lld bytes)",
                  diff, moved, mine, static_cast<long long>(whole));
    checks.expect("ZeRO-1 with SGD ends 3 steps with plain data parallel's weights, its buffer split across the ranks",
                  diff < 1e-6 && moved > 1e-4 && mine == static_cast<float>(whole) && sharded.steps() == 3, detail);
  }
  // ZeRO-1 against plain data parallel, both writing a final checkpoint (rank 0).
  const std::string root = std::string(CTDL_TEST_TMP) + "/data_parallel_sharded";
  if (r == 0) {
    std::filesystem::remove_all(root);
    std::filesystem::create_directories(root);
  }
  comm.barrier();
  train::FitOptions o{.batch_size = 8, .epochs = 2, .learning_rate = 2e-3, .seed = 3};
  o.checkpoints.root = root + "/plain";
  auto plain = make_model(9);
  const auto rp = train::fit<P>(plain, toy_cache(r), o, quiet(), comm);
  o.checkpoints.root = root + "/sharded";
  o.checkpoints.every_steps = rp.steps / 2;
  o.checkpoints.keep = 10;
  auto zero = make_model(9 + static_cast<std::uint64_t>(r));  // rank 0's initial weights win
  const auto rz = train::fit<P>(zero, toy_cache(r), o, quiet(), comm, {.shard_optimizer = true});
  const double diff = max_difference(values(zero), values(plain));
  auto initial = make_model(9);
  const double moved = max_difference(values(plain), values(initial));
  char detail[200];
  std::snprintf(detail, sizeof detail, "(%lld steps; max |difference| %.3g, weights moved by up to %.3g)",
                static_cast<long long>(rz.steps), diff, moved);
  checks.expect("fit with ZeRO-1 on " + std::to_string(n) + " ranks ends with plain data parallel's weights",
                rz.steps == rp.steps && diff < 1e-5 && moved > 1e-3, detail);
  comm.barrier();  // rank 0's checkpoints are complete
  if (r == 0) {
    const double m = max_difference(moments(rz.last_checkpoint, zero), moments(rp.last_checkpoint, plain));
    checks.expect("ZeRO-1's checkpoint holds plain data parallel's moments (gathered from the ranks)", m < 1e-6,
                  "(max |difference| " + std::to_string(m) + ")");
  }
  // Resume: the final checkpoint removed, the run continues from the middle one, on N
  // ranks with ZeRO-1, then on one process (rank 0) at the global batch, plainly.
  const auto final_dir = rz.last_checkpoint;
  const auto mid = train::checkpoint_dir(o.checkpoints.root, o.checkpoints.every_steps);
  const std::string copy = root + "/sharded-copy";
  if (r == 0) {
    std::filesystem::remove_all(final_dir);
    std::filesystem::create_directories(copy);
    std::filesystem::copy(mid, train::checkpoint_dir(copy, o.checkpoints.every_steps),
                          std::filesystem::copy_options::recursive);
  }
  comm.barrier();
  o.checkpoints.resume = true;
  auto resumed = make_model(1234);  // the checkpoint's weights replace these
  const auto rr = train::fit<P>(resumed, toy_cache(r), o, quiet(), comm, {.shard_optimizer = true});
  const double d_resumed = max_difference(values(resumed), values(zero));
  checks.expect("ZeRO-1 resumed mid-run on " + std::to_string(n) + " ranks ends where the uninterrupted run ended",
                rr.resumed_from == o.checkpoints.every_steps && d_resumed < 1e-6,
                "(from step " + std::to_string(rr.resumed_from) + "; max |difference| " + std::to_string(d_resumed) + ")");
  if (r == 0) {
    dist::LocalComm one;
    o.batch_size = 8 * n;
    o.checkpoints.root = copy;
    auto alone = make_model(4321);
    const auto ra = train::fit<P>(alone, toy_cache(r), o, quiet(), one);
    const double d_alone = max_difference(values(alone), values(zero));
    checks.expect("the checkpoint of " + std::to_string(n) + " ZeRO-1 ranks resumes on one process",
                  ra.resumed_from == o.checkpoints.every_steps && d_alone < 1e-5,
                  "(max |difference| " + std::to_string(d_alone) + ")");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "--skip") {
    std::printf("dist/mpi_data_parallel: skipped: %s\n", argv[2]);
    return 77;
  }
  dist::MpiEnvironment mpi(argc, argv);
  dist::MpiComm comm(mpi);
  return dist::run_or_abort(comm, [&] {
    Checks checks(comm.rank());
    check_averager(comm, checks);
    check_broadcast(comm, checks);
    check_agreement(comm, checks);
    check_equivalence(comm, checks, 8, 1, true);
    check_equivalence(comm, checks, 4, 2, true);
    check_equivalence(comm, checks, 8, 1, false);
    check_sharded(comm, checks);
    float failures = static_cast<float>(checks.failures());
    comm.all_reduce(&failures, 1);
    if (comm.rank() == 0) std::printf("dist/mpi_data_parallel: %d ranks, %d failed checks in all\n", comm.size(),
                                      static_cast<int>(failures));
    return failures == 0 ? 0 : 1;
  });
}

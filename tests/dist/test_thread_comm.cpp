// test::ThreadComm (tests/dist/thread_comm.hpp), the communicator of N rank threads that
// lets the multi-rank data-parallel code run without mpiexec and, on a GPU machine, on one
// GPU (tests/gpu/test_nccl_data_parallel.cu). Checked here on the host:
//   - every collective on 3 ranks against its definition (dist/communicator.hpp), in place
//     and not, float and bf16, and a misuse thrown by every rank;
//   - ZeRO-1 (ShardedOptimizer<AdamW>, clipping) on 3 rank threads, each with its own rows
//     of a global batch of 12, ends 3 steps within 1e-5 of one process training on the
//     whole batch, each rank holding a third of the optimizer state (the parameter count
//     is not a multiple of 3: the padding is exercised).
#include <catch2/catch.hpp>

#include <ctdl/dist/sharded_optimizer.hpp>
#include <ctdl/train/classifier.hpp>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "../train/toy_task.hpp"
#include "thread_comm.hpp"

using namespace ctdl;

TEST_CASE("ThreadComm: every collective on 3 rank threads, as dist/communicator.hpp defines it") {
  test::ThreadGroup group(3);
  std::vector<std::string> failures;
  std::mutex m;
  const auto check = [&](bool ok, int rank, const std::string& what) {
    if (ok) return;
    std::lock_guard<std::mutex> lock(m);
    failures.push_back("rank " + std::to_string(rank) + ": " + what);
  };
  group.run<Cpu>([&](test::ThreadComm<Cpu>& comm) {
    const int r = comm.rank();
    const float rf = static_cast<float>(r);
    std::vector<float> x{rf, 10 * rf + 1, -rf};
    comm.all_reduce(x.data(), 3, dist::ReduceOp::sum);
    check(x == std::vector<float>{3, 33, -3}, r, "all_reduce sum");
    std::vector<float> a{rf, 3};
    comm.all_reduce(a.data(), 2, dist::ReduceOp::avg);
    check(a == std::vector<float>{1, 3}, r, "all_reduce avg");
    std::vector<bf16> h{bf16(0.5f * rf), bf16(1.0f)};
    comm.all_reduce(h.data(), 2, dist::ReduceOp::sum);
    check(static_cast<float>(h[0]) == 1.5f && static_cast<float>(h[1]) == 3.0f, r, "all_reduce bf16");

    // reduce_scatter, in place: rank r's shard of the sum lands at send + r * 2.
    std::vector<float> s(6);
    for (int i = 0; i < 6; ++i) s[static_cast<std::size_t>(i)] = static_cast<float>(i) + 100 * rf;
    comm.reduce_scatter(s.data(), s.data() + 2 * r, 6, dist::ReduceOp::sum);
    check(s[static_cast<std::size_t>(2 * r)] == 3.0f * static_cast<float>(2 * r) + 300 &&
              s[static_cast<std::size_t>(2 * r + 1)] == 3.0f * static_cast<float>(2 * r + 1) + 300,
          r, "reduce_scatter in place");
    std::vector<float> t{rf, rf, 2 * rf, 2 * rf, 3 * rf, 3 * rf}, shard(2);
    comm.reduce_scatter(t.data(), shard.data(), 6, dist::ReduceOp::avg);  // (0 + 1 + 2) / 3 = 1, times r + 1
    check(shard == std::vector<float>{rf + 1, rf + 1}, r, "reduce_scatter avg, not in place");
    // all_gather, in place (send = recv + r * count) and not.
    std::vector<float> g(6, -1);
    g[static_cast<std::size_t>(2 * r)] = rf, g[static_cast<std::size_t>(2 * r + 1)] = rf + 0.5f;
    comm.all_gather(g.data() + 2 * r, g.data(), 2);
    check(g == std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f}, r, "all_gather in place");
    const std::vector<bf16> word{bf16(rf), bf16(-rf)};
    std::vector<bf16> words(6);
    comm.all_gather(word.data(), words.data(), 2);
    check(static_cast<float>(words[4]) == 2 && static_cast<float>(words[5]) == -2, r, "all_gather bf16");
    std::vector<float> b{rf, rf};
    comm.broadcast(b.data(), 2, 2);
    check(b == std::vector<float>{2, 2}, r, "broadcast from rank 2");
    comm.barrier();
    try {
      std::vector<float> odd(4);
      comm.reduce_scatter(odd.data(), odd.data(), 4, dist::ReduceOp::sum);
      check(false, r, "a count not divisible by 3 was taken");
    } catch (const Error& e) {
      check(std::string(e.what()).find("ThreadComm::reduce_scatter (rank " + std::to_string(r) + " of 3): count 4") !=
                std::string::npos,
            r, std::string("the misuse message: ") + e.what());
    }
  });
  INFO((failures.empty() ? std::string() : failures.front()));
  REQUIRE(failures.empty());
}

namespace thread_comm_test {  // named: the unit tests are compiled in unity batches

using Policy = precision::Fp32;
using Model = bert::BertForSequenceClassification<float, bert::Family<32, 4, 64>, Policy>;

Model toy_model() {
  auto m = Model::make(test::toy_bert_config(/*dropout=*/false), 3);
  bert::init_weights(m, 0.02, 5);
  return m;
}

std::vector<float> flat_values(Model& m) {
  std::vector<float> out;
  nn::visit_parameters(m, [&](const std::string&, auto& p) {
    const auto& v = std::as_const(p).value();
    out.insert(out.end(), v.data(), v.data() + v.size());
  });
  return out;
}

}  // namespace thread_comm_test

TEST_CASE("ThreadComm: ZeRO-1 on 3 rank threads ends where one process on the whole batch ends") {
  using thread_comm_test::Model, thread_comm_test::Policy, thread_comm_test::toy_model, thread_comm_test::flat_values;
  const auto& cache = test::toy_span_cache("thread_comm_rows");
  constexpr int kRanks = 3;
  constexpr index_t kRows = 4;  // per rank
  const auto batch_of = [&](int rank, int world, index_t rows) {
    data::Batcher batcher(cache, {.batch_size = rows, .rank = rank, .world_size = world, .shuffle = false});
    batcher.start_epoch(0);
    data::Batch out;
    batcher.next(out);
    return out;
  };

  auto single = toy_model();
  const auto initial = flat_values(single);
  REQUIRE(initial.size() % kRanks != 0);  // the last slice is padded
  {
    train::ClassifierTrainer<Model, Policy> trainer(single, {.max_grad_norm = 1.0});
    optim::AdamW adam;
    const data::Batch whole = batch_of(0, 1, kRows * kRanks);
    for (int step = 0; step < 3; ++step) {
      trainer.backward(whole);
      trainer.apply(adam, 1e-3f);
    }
  }
  const auto want = flat_values(single);

  std::vector<std::vector<float>> got(kRanks);
  std::vector<std::int64_t> state_bytes(kRanks);
  test::ThreadGroup group(kRanks);
  group.run<Cpu>([&](test::ThreadComm<Cpu>& comm) {
    auto model = toy_model();
    dist::ShardedOptimizer<optim::AdamW, test::ThreadComm<Cpu>> zero(comm, model);
    train::ClassifierTrainer<Model, Policy> trainer(model, {.max_grad_norm = 1.0});
    trainer.set_gradient_sync(&zero);
    const data::Batch mine = batch_of(comm.rank(), kRanks, kRows);
    for (int step = 0; step < 3; ++step) {
      trainer.backward(mine);
      trainer.apply(zero, 1e-3f);
    }
    got[static_cast<std::size_t>(comm.rank())] = flat_values(model);
    state_bytes[static_cast<std::size_t>(comm.rank())] = zero.state_bytes();
  });

  double moved = 0, worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) moved = std::max(moved, std::abs(double{want[i]} - initial[i]));
  for (int r = 0; r < kRanks; ++r) {
    REQUIRE(got[static_cast<std::size_t>(r)].size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, std::abs(double{got[static_cast<std::size_t>(r)][i]} - want[i]));
  }
  INFO("max |ZeRO-1 on 3 threads - one process| = " << worst << ", weights moved by up to " << moved);
  CHECK(moved > 1e-4);
  CHECK(worst < 1e-5);
  const auto whole_state = static_cast<std::int64_t>(2 * want.size() * sizeof(float));
  const std::int64_t sum = state_bytes[0] + state_bytes[1] + state_bytes[2];
  const std::int64_t most = *std::max_element(state_bytes.begin(), state_bytes.end());
  INFO("state bytes per rank: " << state_bytes[0] << ", " << state_bytes[1] << ", " << state_bytes[2] << " of "
                                << whole_state);
  CHECK(sum == whole_state);
  CHECK(most <= whole_state / kRanks + 8 * std::int64_t{sizeof(float)});
}

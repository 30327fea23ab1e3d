#pragma once
// require_same_on_all_ranks: before ranks work together, each checks that its settings
// (flags, config, vocabulary, labels, data sizes) are rank 0's. Each rank hashes every
// named value (XXH64); rank 0's hashes are broadcast; a difference stops every rank with
// the same Error, naming the settings that differ and on how many ranks, and, on a rank
// that differs, its own value.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"
#include "ctdl/data/fingerprint.hpp"
#include "ctdl/dist/communicator.hpp"

namespace ctdl::dist {

/// Every rank passes the same names (in any order) with its own values; throws on every
/// rank, naming the settings whose values differ from rank 0's, if any does on any rank.
template <Communicator C>
void require_same_on_all_ranks(C& comm, const std::map<std::string, std::string>& settings);

// ============================================================================

template <Communicator C>
void require_same_on_all_ranks(C& comm, const std::map<std::string, std::string>& settings) {
  // Every rank must pass as many settings for the broadcast below to match: sum n and
  // n^2 over the ranks (the same on each); they are N n and N n^2 only if all n are equal.
  const auto n = static_cast<float>(settings.size());
  std::vector<float> counts{n, n * n};
  comm.all_reduce(counts.data(), 2, ReduceOp::sum);
  const auto ranks = static_cast<float>(comm.size());
  if (counts[0] * counts[0] != ranks * counts[1]) {
    throw Error("the ranks do not agree (rank " + std::to_string(comm.rank()) + " of " + std::to_string(comm.size()) +
                "): they check different numbers of settings (this one " + std::to_string(settings.size()) + ")");
  }
  // Each value as a 64-bit hash, sent as four 16-bit words (bf16's wire form: moved bit
  // for bit by broadcast, never converted).
  std::vector<std::uint64_t> mine;
  for (const auto& [name, value] : settings) mine.push_back(data::xxh64(name + '\0' + value));
  std::vector<std::uint64_t> roots = mine;
  static_assert(sizeof(bf16) == 2);
  comm.broadcast(reinterpret_cast<bf16*>(roots.data()), static_cast<std::int64_t>(roots.size() * 4), 0);
  std::vector<float> differs(mine.size(), 0.f);
  for (std::size_t i = 0; i < mine.size(); ++i) differs[i] = mine[i] != roots[i] ? 1.f : 0.f;
  comm.all_reduce(differs.data(), static_cast<std::int64_t>(differs.size()), ReduceOp::sum);
  std::string list;
  std::size_t k = 0;
  for (const auto& entry : settings) {
    if (differs[k] > 0) {
      const bool here = mine[k] != roots[k];
      list += "\n  " + entry.first + ": differs from rank 0's on " + std::to_string(static_cast<int>(differs[k])) +
              (differs[k] == 1 ? " rank" : " ranks") + (here ? " (this one: " + entry.second + ")" : "");
    }
    ++k;
  }
  if (!list.empty()) {
    throw Error("the ranks do not agree (rank " + std::to_string(comm.rank()) + " of " + std::to_string(comm.size()) +
                "):" + list);
  }
}

}  // namespace ctdl::dist

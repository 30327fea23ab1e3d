#pragma once
// Training checkpoints: everything a run needs to continue exactly where it stopped, so
// that a run killed after a checkpoint and resumed ends with the weights, to the bit, of
// one that was never interrupted.
//
//   <root>/checkpoint-<step>/
//     model.safetensors      the parameters under their checkpoint (Hugging Face) names: with
//                            the files the caller adds, the directory is a valid initial
//                            checkpoint for the programs
//     optimizer.safetensors  the optimizer's moments, "m.<parameter>" and "v.<parameter>" (F32)
//     state.json             TrainingState: the step, the data position (epoch, batches taken),
//                            the dropout stream position, the loss scaler, the optimizer's
//                            step count, and the settings the run was started with
//     <extra files>          what the caller adds (the programs: bert_config.json, vocab.txt,
//                            labels.txt)
//     manifest.json          written last: every file's size and XXH64
//
// Every file is an io::AtomicFile (temporary, fsync, rename), and manifest.json comes only
// after all the others are complete. A directory without a manifest, or whose files do not
// match it (a write torn by a crash, a truncated copy, a flipped bit), is not a checkpoint:
// find_checkpoint passes over it, saying why, to the one before.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctdl/core/error.hpp"
#include "ctdl/data/fingerprint.hpp"
#include "ctdl/io/atomic_file.hpp"
#include "ctdl/io/parameters.hpp"
#include "ctdl/io/safetensors.hpp"
#include "ctdl/io/safetensors_writer.hpp"
#include "ctdl/optim/optimizer.hpp"
#include "ctdl/precision/loss_scaler.hpp"

namespace ctdl::train {

/// The state of a training run between two optimizer steps, besides the weights and the
/// optimizer's moments.
struct TrainingState {
  std::int64_t global_step = 0;        ///< optimizer steps applied
  std::uint64_t epoch = 0;             ///< the epoch the batcher is in ...
  std::uint64_t batches_taken = 0;     ///< ... and the micro-batches taken from it
  std::uint64_t dropout_step = 0;      ///< micro-batches run so far (keys the dropout masks)
  std::int64_t optimizer_steps = 0;    ///< the optimizer's own step count
  precision::LossScaler::State loss_scaler{};
  /// What must not change across a resume (batch size, seed, learning rate, data
  /// fingerprint, ...), name -> value; the names are the caller's (the programs': flags).
  std::map<std::string, std::string> settings;
};

/// An optimizer whose state a checkpoint can hold: per-parameter moments m and v, a step count.
template <class O>
concept CheckpointableOptimizer = requires(O o, std::int64_t n) {
  { o.m() } -> std::same_as<optim::SlotSet&>;
  { o.v() } -> std::same_as<optim::SlotSet&>;
  { o.steps() } -> std::convertible_to<std::int64_t>;
  o.set_steps(n);
};

/// A number as a setting's value: the shortest of %.15g, %.16g, %.17g that reads back as
/// the same double (3e-4 is "0.0003", not "0.00029999999999999997").
std::string setting_text(double v);

/// <root>/checkpoint-<step>
std::string checkpoint_dir(const std::string& root, std::int64_t step);

/// The steps of the checkpoint-<step> directories under root, oldest first (complete or not).
std::vector<std::int64_t> checkpoint_steps(const std::string& root);

/// Writes checkpoint-<state.global_step> under root (replacing a directory of that name):
/// model, optimizer, state, the `extra_files` (name in the checkpoint -> file to copy),
/// then the manifest. Returns its directory.
template <nn::Module M, CheckpointableOptimizer O>
std::string write_checkpoint(const std::string& root, M& model, O& optimizer, const TrainingState& state,
                             const std::map<std::string, std::string>& extra_files = {});

/// "" when `dir` holds a complete checkpoint whose files match its manifest; otherwise
/// what is wrong, naming the file ("model.safetensors: 1048576 bytes, the manifest says
/// 2097152 (torn or truncated)").
std::string verify_checkpoint(const std::string& dir);

struct FoundCheckpoint {
  std::string dir;
  std::int64_t step = 0;
  std::vector<std::string> passed_over;  ///< newer directories that are not valid, each "<dir>: <problem>"
};

/// The newest valid checkpoint under root, with the newer ones it passed over and why;
/// nullopt when there is none (passed_over is then in `rejected`, when given).
std::optional<FoundCheckpoint> find_checkpoint(const std::string& root, std::vector<std::string>* rejected = nullptr);

/// Reads a checkpoint that verify_checkpoint accepted into the model and the optimizer;
/// returns its state. A missing tensor or a shape that differs is an error naming the file
/// and the tensor.
template <nn::Module M, CheckpointableOptimizer O>
TrainingState read_checkpoint(const std::string& dir, M& model, O& optimizer);

/// Throws, naming the setting and both values, when `current` differs from the settings
/// the checkpoint in `dir` was written with (a resume with another batch size, seed,
/// learning rate ... would not continue that run but start a different one).
void require_same_settings(const std::string& dir, const std::map<std::string, std::string>& saved,
                           const std::map<std::string, std::string>& current);

// ============================================================================

namespace detail {

inline constexpr const char* kCheckpointFormat = "ctdl training checkpoint 1";

inline std::string hex64(std::uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

inline nlohmann::json state_to_json(const TrainingState& s) {
  return {{"global_step", s.global_step},
          {"epoch", s.epoch},
          {"batches_taken", s.batches_taken},
          {"dropout_step", s.dropout_step},
          {"optimizer_steps", s.optimizer_steps},
          {"loss_scale", s.loss_scaler.scale},
          {"loss_scale_clean_steps", s.loss_scaler.clean_steps},
          {"skipped_steps", s.loss_scaler.skipped_steps},
          {"loss_scale_overflow_steps", s.loss_scaler.overflow_steps},
          {"settings", s.settings}};
}

inline TrainingState state_from_json(const nlohmann::json& j, const std::string& path) {
  try {
    TrainingState s;
    s.global_step = j.at("global_step").get<std::int64_t>();
    s.epoch = j.at("epoch").get<std::uint64_t>();
    s.batches_taken = j.at("batches_taken").get<std::uint64_t>();
    s.dropout_step = j.at("dropout_step").get<std::uint64_t>();
    s.optimizer_steps = j.at("optimizer_steps").get<std::int64_t>();
    s.loss_scaler = {.scale = j.at("loss_scale").get<double>(),
                     .clean_steps = j.at("loss_scale_clean_steps").get<std::int64_t>(),
                     .skipped_steps = j.at("skipped_steps").get<std::int64_t>(),
                     // absent from checkpoints written before the scaler counted overflows
                     .overflow_steps = j.value("loss_scale_overflow_steps", std::int64_t{0})};
    s.settings = j.at("settings").get<std::map<std::string, std::string>>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not a training state (" + e.what() + ")");
  }
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot be read");
  auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(path + ": not valid JSON");
  return j;
}

}  // namespace detail

inline std::string setting_text(double v) {
  char b[40];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(b, sizeof b, "%.*g", digits, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

inline std::string checkpoint_dir(const std::string& root, std::int64_t step) {
  return root + "/checkpoint-" + std::to_string(step);
}

inline std::vector<std::int64_t> checkpoint_steps(const std::string& root) {
  std::vector<std::int64_t> steps;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    constexpr std::string_view prefix = "checkpoint-";
    if (!entry.is_directory() || name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) || digits.size() > 18)
      continue;
    steps.push_back(std::stoll(digits));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

template <nn::Module M, CheckpointableOptimizer O>
std::string write_checkpoint(const std::string& root, M& model, O& optimizer, const TrainingState& state,
                             const std::map<std::string, std::string>& extra_files) {
  namespace fs = std::filesystem;
  const std::string dir = checkpoint_dir(root, state.global_step);
  // A directory of this name is what a run killed while writing it left (a resumed run
  // reaches the same step again): its manifest goes first, so it is never half valid.
  std::error_code ec;
  fs::remove(dir + "/manifest.json", ec);
  fs::remove_all(dir, ec);
  fs::create_directories(dir);

  io::save_parameters(model, dir + "/model.safetensors",
                      {{"format", "pt"}, {"made_by", "ctdl"}, {"global_step", std::to_string(state.global_step)}});
  io::SafetensorsWriter moments;
  // Every parameter, not only those with a gradient now (none has one between steps):
  // slot k is the k-th parameter in visiting order, as the optimizers number them.
  std::size_t k = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    const index_t n = p.value().size();
    ++k;
    for (auto [slots, key] : {std::pair{&optimizer.m(), "m."}, {&optimizer.v(), "v."}}) {
      const auto& t = slots->at(k - 1, n);  // zeros when the optimizer has not updated it
      moments.add(key + name, "F32", {static_cast<std::int64_t>(n)}, t.data(), static_cast<std::size_t>(n) * sizeof(float));
    }
  });
  moments.write(dir + "/optimizer.safetensors", {{"steps", std::to_string(optimizer.steps())}});
  io::write_file_atomically(dir + "/state.json", detail::state_to_json(state).dump(2) + "\n");
  for (const auto& [name, from] : extra_files) io::copy_file_atomically(from, dir + "/" + name);

  nlohmann::json files = nlohmann::json::object();
  std::vector<std::string> all = {"model.safetensors", "optimizer.safetensors", "state.json"};
  for (const auto& [name, from] : extra_files) all.push_back(name);
  for (const auto& name : all) {
    const std::string path = dir + "/" + name;
    files[name] = {{"bytes", fs::file_size(path)}, {"xxh64", detail::hex64(data::file_fingerprint(path))}};
  }
  const nlohmann::json manifest = {{"format", detail::kCheckpointFormat}, {"step", state.global_step}, {"files", files}};
  io::write_file_atomically(dir + "/manifest.json", manifest.dump(2) + "\n");
  return dir;
}

inline std::string verify_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string manifest_path = dir + "/manifest.json";
  if (!fs::exists(manifest_path)) return "no manifest.json (the checkpoint was not finished)";
  nlohmann::json manifest;
  try {
    manifest = detail::read_json(manifest_path);
  } catch (const Error& e) {
    return e.what();
  }
  if (!manifest.is_object() || manifest.value("format", "") != detail::kCheckpointFormat || !manifest.contains("files") ||
      !manifest["files"].is_object())
    return "manifest.json is not a ctdl training checkpoint manifest";
  for (const auto& [name, info] : manifest["files"].items()) {
    const std::string path = dir + "/" + name;
    std::error_code ec;
    const auto bytes = fs::file_size(path, ec);
    if (ec) return name + ": missing";
    if (!info.contains("bytes") || !info.contains("xxh64")) return "manifest.json: no size or checksum for " + name;
    if (bytes != info["bytes"].get<std::uintmax_t>())
      return name + ": " + std::to_string(bytes) + " bytes, the manifest says " +
             std::to_string(info["bytes"].get<std::uintmax_t>()) + " (torn or truncated)";
    const std::string sum = detail::hex64(data::file_fingerprint(path));
    if (sum != info["xxh64"].get<std::string>())
      return name + ": checksum " + sum + ", the manifest says " + info["xxh64"].get<std::string>() + " (corrupt)";
  }
  for (const char* needed : {"model.safetensors", "optimizer.safetensors", "state.json"})
    if (!manifest["files"].contains(needed)) return std::string("manifest.json does not list ") + needed;
  return "";
}

inline std::optional<FoundCheckpoint> find_checkpoint(const std::string& root, std::vector<std::string>* rejected) {
  FoundCheckpoint found;
  const auto steps = checkpoint_steps(root);
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string dir = checkpoint_dir(root, *it);
    if (const std::string problem = verify_checkpoint(dir); !problem.empty()) {
      found.passed_over.push_back(dir + ": " + problem);
      continue;
    }
    found.dir = dir;
    found.step = *it;
    return found;
  }
  if (rejected) *rejected = found.passed_over;
  return std::nullopt;
}

template <nn::Module M, CheckpointableOptimizer O>
TrainingState read_checkpoint(const std::string& dir, M& model, O& optimizer) {
  const TrainingState state = detail::state_from_json(detail::read_json(dir + "/state.json"), dir + "/state.json");
  io::load_parameters(model, io::SafetensorsFile(dir + "/model.safetensors"));
  const io::SafetensorsFile moments(dir + "/optimizer.safetensors");
  std::size_t k = 0;
  nn::visit_parameters(model, [&](const std::string& name, auto& p) {
    const index_t n = p.value().size();
    moments.read_into("m." + name, optimizer.m().at(k, n));
    moments.read_into("v." + name, optimizer.v().at(k, n));
    ++k;
  });
  optimizer.set_steps(state.optimizer_steps);
  return state;
}

inline void require_same_settings(const std::string& dir, const std::map<std::string, std::string>& saved,
                                  const std::map<std::string, std::string>& current) {
  for (const auto& [name, value] : current) {
    const auto it = saved.find(name);
    const std::string before = it == saved.end() ? "(not recorded)" : it->second;
    if (before != value)
      throw Error("cannot resume from " + dir + ": it was written by a run with " + name + "=" + before +
                  ", this run has " + name + "=" + value +
                  " (a resumed run must repeat the interrupted one; give the same settings, or start afresh "
                  "without resuming)");
  }
  for (const auto& [name, value] : saved)
    if (!current.count(name))
      throw Error("cannot resume from " + dir + ": it was written by a run with " + name + "=" + value +
                  ", which this run does not set");
}

}  // namespace ctdl::train

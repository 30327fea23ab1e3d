#pragma once
// Shared helpers for ctdl's tests: dtype lists with per-dtype tolerances, random tensors.

#include <ctdl/ctdl.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>

namespace ctdl::test {

/// Relative tolerance for results stored in T (CTranslate2's figures for the half types).
template <class T>
constexpr double tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  else if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, fp16>) return 1e-2;
  else return 4e-2;  // bf16
}

/// A file's whole content, byte for byte ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

#ifdef CTDL_TEST_TMP
/// A new, empty directory CTDL_TEST_TMP/<group>/<name> for one test.
inline std::string scratch_dir(const std::string& group, const std::string& name) {
  const std::string d = std::string(CTDL_TEST_TMP) + "/" + group + "/" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}
#endif

/// |a - b| <= tol * max(1, |b|).
inline bool close(double a, double b, double tol) { return std::abs(a - b) <= tol * std::max(1.0, std::abs(b)); }

/// A tensor of uniform values in [lo, hi), reproducible from `seed`.
template <class T, class S>
Tensor<T, S> uniform(const Extents<S>& extents, double lo, double hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  auto t = Tensor<T, S>::uninitialized(extents);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = convert<T>(u(rng));
  return t;
}

template <class T>
double to_double(const T& v) {
  return convert<double>(v);
}

/// The shared data directory (../shared/data beside the project, or $CTDL_SHARED_DATA),
/// or nullopt when it is absent; tests that need it say so and skip.
inline std::optional<std::filesystem::path> shared_data_dir() {
  std::filesystem::path dir = CTDL_SHARED_DATA;
  if (const char* env = std::getenv("CTDL_SHARED_DATA")) dir = env;
  if (std::filesystem::is_directory(dir)) return dir;
  return std::nullopt;
}

}  // namespace ctdl::test

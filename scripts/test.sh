#!/usr/bin/env bash
# Installs dependencies, builds, then runs the test suite with ctest.
#
#   scripts/test.sh [--full] [cmake args]
#
# Builds the programs and the tests (the unit tests at -O1: CTDL_TEST_OPTIMIZATION) and
# runs them. --full adds the benchmarks (compiled, not run) and the variants (variant/*:
# the unit tests rebuilt under AddressSanitizer and UndefinedBehaviorSanitizer, the matmul
# tests against oneDNN 3.x from PyPI and without oneDNN), each a second build; CI
# (.ci/run) runs with --full.
# Where the CUDA toolkit is installed, the build includes the CUDA parts (compiled and
# linked with nvcc; their tests run kernels only when a GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
variants=OFF
for a in "$@"; do
  case $a in
    --full) variants=ON ;;
    *) args+=("$a") ;;
  esac
done
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc" ]; then
  args=(-DCTDL_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" "${args[@]}")
else
  args=(-DCTDL_WITH_CUDA=OFF "${args[@]}")
  echo "test.sh: no nvcc found; building without the CUDA parts"
fi
if [ $variants = ON ]; then
  echo "test.sh: --full: the benchmarks are built and the variant builds (sanitizers, oneDNN 3.x, oneDNN off) run too"
else
  echo "test.sh: the programs and the tests, without the benchmarks and the variant builds (scripts/test.sh --full adds them, as CI does)"
fi
start=$SECONDS
scripts/build.sh -DCTDL_VARIANT_TESTS=$variants -DCTDL_BUILD_BENCHMARKS=$variants "${args[@]}"
built=$SECONDS
cd build
status=0
ctest --output-on-failure --parallel "${CTDL_JOBS:-$(nproc)}" --timeout 900 || status=$?
echo "test.sh: build $((built - start)) s, tests $((SECONDS - built)) s"
exit $status

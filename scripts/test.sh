#!/usr/bin/env bash
# Installs dependencies, builds, then runs the whole test suite with ctest.
# Where the CUDA toolkit is installed, the build includes the CUDA parts (compiled and
# linked with nvcc; their tests run kernels only when a GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc" ]; then
  args+=(-DCTDL_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
else
  args+=(-DCTDL_WITH_CUDA=OFF)
  echo "test.sh: no nvcc found; building without the CUDA parts"
fi
scripts/build.sh "${args[@]}" "$@"
cd build
exec ctest --output-on-failure --parallel "${CTDL_JOBS:-$(nproc)}" --timeout 900

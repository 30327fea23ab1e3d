#!/usr/bin/env bash
# Installs dependencies, then builds ctdl (Release) into build/; programs land in build/bin/.
# Extra arguments are passed to CMake's configure step, e.g. -DCTDL_WITH_CUDA=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
jobs=${CTDL_JOBS:-$(nproc)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCTDL_NATIVE=ON "$@" >build.configure.log 2>&1 \
  || { cat build.configure.log >&2; exit 1; }
cmake --build build --parallel "$jobs"

#!/usr/bin/env bash
# Installs dependencies, then builds ctdl (Release) into build/; programs land in build/bin/.
#
#   scripts/build.sh [--target T]... [CMake configure options]
#
# With --target, only those targets (and what they need) are built; without, everything
# (the programs, the tests, the benchmarks; -DCTDL_BUILD_BENCHMARKS=OFF leaves the benchmarks
# out, as scripts/test.sh does without --full). Other arguments go to CMake's configure step,
# e.g. -DCTDL_WITH_CUDA=ON. CTDL_JOBS sets the parallel jobs (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
names=()
configure=()
while [ $# -gt 0 ]; do
  case $1 in
    --target) targets+=(--target "$2"); names+=("$2"); shift 2 ;;
    *) configure+=("$1"); shift ;;
  esac
done
scripts/setup-deps.sh
jobs=${CTDL_JOBS:-$(nproc)}
# The default BERT families in the programs (Tiny, Base and the runtime-shaped Dynamic, which
# runs every other shape) unless an argument says otherwise: a cached choice, such as the
# demo's, does not outlive the build that asked for it.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCTDL_NATIVE=ON -DCTDL_SPAN_CLASSIFIER_FAMILIES=default \
  -DCTDL_BUILD_BENCHMARKS=ON "${configure[@]}" >build.configure.log 2>&1 \
  || { cat build.configure.log >&2; exit 1; }
if [ ${#targets[@]} -gt 0 ]; then
  echo "build.sh: building ${names[*]} ($jobs jobs)"
else
  what="the programs, the tests and the benchmarks"
  [[ " ${configure[*]} " == *" -DCTDL_BUILD_BENCHMARKS=OFF "* ]] && what="the programs and the tests"
  echo "build.sh: building everything: $what ($jobs jobs)"
fi
cmake --build build --parallel "$jobs" "${targets[@]}"

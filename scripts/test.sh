#!/usr/bin/env bash
# Installs dependencies, builds, then runs the whole test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh "$@"
cd build
exec ctest --output-on-failure --parallel "${CTDL_JOBS:-$(nproc)}" --timeout 900

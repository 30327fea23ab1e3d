#!/usr/bin/env bash
# Installs every Debian package that ctdl's build, tests, examples and benchmarks need.
# Idempotent and quiet: packages already present are skipped, and apt runs only when
# something is missing.
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  libeigen3-dev        # bf16/fp16 scalar types, fallback kernels
  libdnnl-dev          # oneDNN matmul (fp32, bf16)
  ocl-icd-opencl-dev   # Debian's dnnl-config.cmake requires OpenCL (a recommends of libdnnl-dev)
  libboost1.81-dev     # Boost.PFR (module field visiting)
  libxtensor-dev       # NumPy I/O and xtensor interop
  libutf8proc-dev      # Unicode properties for the tokenizer
  nlohmann-json3-dev   # bert_config.json, metrics
  libcli11-dev         # command lines of the programs
  libopenmpi-dev openmpi-bin  # data-parallel training on CPUs
  catch2               # tests (v2)
  python3-numpy        # ctest io/npy_numpy_reads: NumPy reads the .npy files ctdl writes
  python3 python3-pip  # test goldens: Google's tokenization.py, fetched from PyPI by tools/make_fixtures.py
  ca-certificates      # pip's HTTPS on a base system
  procps               # ps, pkill: tests/scripts/gpu_run_test.sh (the GPU bundle's run.sh sweeps with pkill)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup-deps: apt-get failed (log above)" >&2
  exit 1
fi
rm -f "$log"

#!/usr/bin/env bash
# Builds the GPU tests and programs here (nvcc, sm_90, without oneDNN) and bundles them
# into build/gpu-bundle/ with every shared library they load that a GPU machine lacks,
# and run.sh, which runs there every GPU test, the program checks, compute-sanitizer's
# memcheck over the op and kernel tests, the GPU benchmarks and the PyTorch anchor, and
# writes one report.
#
#   scripts/gpu-check.sh [cmake args]          # here (needs the CUDA toolkit, no GPU)
#   build/gpu-bundle/run.sh [report-file]      # on the GPU machine
#
# The GPU machine is assumed to have the NVIDIA driver, CUDA 13's cuBLAS/cuBLASLt, NCCL,
# libstdc++ and libgomp; everything else the binaries load travels in lib/ (libcudart
# too: it is small, and the binaries then run on any CUDA 13 driver). Open MPI's
# libraries travel in lib/fallback/, for a machine without them (see below).
# The bundle must stay under 60 MiB (the device tool carries at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
[ -n "$nvcc" ] || { echo "gpu-check.sh: no nvcc (install the CUDA toolkit)" >&2; exit 1; }
build=build/gpu
bundle=build/gpu-bundle
mkdir -p build
cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DCTDL_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCTDL_WITH_ONEDNN=OFF -DCTDL_SPAN_CLASSIFIER_FAMILIES=Tiny \
  -DCTDL_BERT_BENCH_FAMILIES=Tiny -DCTDL_TEST_OPTIMIZATION=-O3 "$@" > $build.configure.log 2>&1 ||
  { cat $build.configure.log; exit 1; }
cmake --build $build --target gpu_programs -j "${CTDL_JOBS:-$(nproc)}"

rm -rf $bundle
mkdir -p $bundle/tests $bundle/programs $bundle/lib
for kind in tests programs; do
  while read -r f; do
    [ -n "$f" ] && cp "$f" $bundle/$kind/
  done < $build/gpu_$kind.txt
done
# Shared libraries: everything ldd resolves except what the GPU machine has itself, in
# lib/. Open MPI's (libmpi, which ner_span_classifier links and calls only with
# --distributed, and its own dependencies: hwloc, libevent, libz, libudev) go to
# lib/fallback/, which run.sh uses only for a library that neither the machine's paths
# nor /usr and /opt hold: a machine with Open MPI loads its own. libmpi_cxx would travel
# (not every Open MPI has it), but ctdl::mpi links without it.
have_there='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libutil\.|libstdc\+\+|libgcc_s|libgomp|libcublas|libcublasLt|libnccl|libcuda\.)'
open_mpi='^(libmpi\.|libopen-|libhwloc|libevent|libz\.|libudev)'
mkdir -p $bundle/lib/fallback
for f in $bundle/tests/* $bundle/programs/*; do
  [ -f "$f" ] || continue
  ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    if [[ $name =~ $open_mpi ]]; then dest=$bundle/lib/fallback
    elif [[ $name =~ $have_there ]]; then continue
    else dest=$bundle/lib; fi
    [ -e "$dest/$name" ] || cp -L "$path" "$dest/$name"
  done
done
cp scripts/gpu-run.sh $bundle/run.sh
# The program checks and their data: 203 of the shared consensus rows, the first 120 and
# 40 sentences of BC5CDR-chem's train.tsv and devel.tsv, and the cased vocabulary.
cp tests/examples/span_classifier_gpu_test.sh tests/examples/ner_gpu_test.sh $bundle/
shared=${CTDL_SHARED_DATA:-../shared/data}
if [ -f $shared/consensus-example/dev.tsv ]; then
  mkdir -p $bundle/data/consensus-example $bundle/data/vocab
  head -n 203 $shared/consensus-example/dev.tsv > $bundle/data/consensus-example/dev.tsv
  cp $shared/consensus-example/labels.txt $bundle/data/consensus-example/
  cp $shared/vocab/bert-base-cased-vocab.txt $bundle/data/vocab/
else
  echo "gpu-check.sh: no shared data at $shared: the bundle's program checks (consensus and NER) will exit 77, FAIL(skip) on a GPU machine" >&2
fi
if [ -f $shared/bc5cdr-chem/train.tsv ]; then
  mkdir -p $bundle/data/bc5cdr-chem
  awk '{ print } /^\r?$/ { if (++k == 120) exit }' $shared/bc5cdr-chem/train.tsv > $bundle/data/bc5cdr-chem/train.tsv
  awk '{ print } /^\r?$/ { if (++k == 40) exit }' $shared/bc5cdr-chem/devel.tsv > $bundle/data/bc5cdr-chem/devel.tsv
else
  echo "gpu-check.sh: no BC5CDR data at $shared/bc5cdr-chem: the bundle's NER check will exit 77, FAIL(skip) on a GPU machine" >&2
fi
# A TensorFlow run_ner.py checkpoint (made with TensorFlow) predicted on the GPU: the fixture
# and the script of examples/ner_tf_checkpoint.
cp tests/examples/ner_tf_checkpoint_test.sh $bundle/
mkdir -p $bundle/fixtures
cp -r tests/fixtures/tf_ner_checkpoint tests/fixtures/tiny_vocab.txt $bundle/fixtures/
# Issue 13's table: ctdl against the PyTorch anchor (the peer's own script, as is) in one run.
cp benchmarks/compare_pytorch.sh $bundle/
anchor=../shared/anchors/pytorch_gpu_bert.py
[ -f $anchor ] && cp $anchor $bundle/pytorch_gpu_bert.py
git rev-parse --short HEAD > $bundle/COMMIT 2>/dev/null || echo unknown > $bundle/COMMIT
git diff --quiet HEAD 2>/dev/null || echo "(with uncommitted changes)" >> $bundle/COMMIT
size=$(du -sm $bundle | cut -f1)
echo "gpu-check.sh: $bundle: $(ls $bundle/tests | wc -l) tests, $(ls $bundle/programs | wc -l) programs," \
  "libraries: $(ls $bundle/lib | grep -v '^fallback$' | tr '\n' ' ')fallback: $(ls $bundle/lib/fallback | tr '\n' ' ')(${size} MiB)"
if [ "$size" -gt 60 ]; then echo "gpu-check.sh: the bundle is over 60 MiB" >&2; exit 1; fi
echo "gpu-check.sh: run it on a GPU machine: $bundle/run.sh [report-file]"

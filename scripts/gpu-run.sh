#!/usr/bin/env bash
# The GPU bundle's run.sh (scripts/gpu-check.sh copies it there): on a GPU machine, runs
# in this order every GPU test, the program checks (ner_span_classifier --device=cuda
# against the CPU, for the consensus and the NER task), compute-sanitizer's memcheck over
# the op and kernel tests, then the benchmarks (bert_bench --device=cuda against the
# PyTorch anchor, when torch is there, and a kernel trace of a step), each under a time
# limit, within a total budget (CTDL_GPU_CHECK_BUDGET_S, default 450 s; give the call
# that runs it 60 s more), and writes one report. Exit 0: all passed; 1: a failure or a
# time-out; 4: no GPU (neither nvidia-smi nor CUDA found one), so nothing was checked on
# one; 2: all that ran passed, but a step was not run (the budget ran out before it, or
# compute-sanitizer is missing).
#
#   run.sh [report-file]      default: $OUT/gpu-report.txt where OUT is set, else beside run.sh
#
# The report is written as the run goes (each step's output, then its verdict line), so a
# run cut short keeps what it did. With a GPU present, a step that skips (exit 77) counts
# as a failure, FAIL(skip): a test that found no device where there is one, or a program
# check whose data the bundle lacks.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
report=${1:-${OUT:-$here}/gpu-report.txt}
budget=${CTDL_GPU_CHECK_BUDGET_S:-450}
machine_libs=${LD_LIBRARY_PATH:-}  # python (torch) and the machine's tools keep the machine's libraries
export LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
start=$SECONDS
: > "$report"
say() { echo "$*" | tee -a "$report"; }
summary=()

say "# ctdl GPU check, bundle of $(head -1 "$here/COMMIT") $(sed -n 2p "$here/COMMIT")"
say "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(hostname), kernel $(uname -r), $(nproc) cores"
# (nvidia-smi under a time limit: a wedged driver must not spend the budget here)
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 |
  sed 's/^/gpu: /' | tee -a "$report"
gpus=$(timeout 20 nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
command -v nvcc > /dev/null && say "nvcc: $(nvcc --version | tail -1)"

# Libraries a binary needs that neither lib/ nor the machine's paths hold: said in the
# report, then looked for under /usr and /opt (pip's nvidia-* packages), then in
# lib/fallback/ (Open MPI's, from the machine that built the bundle), and appended.
missing=$(for f in "$here"/tests/* "$here"/programs/*; do ldd "$f" 2> /dev/null | awk '$3 == "not" {print $1}'; done | sort -u)
for name in $missing; do
  found=$(find /usr /opt -name "$name" -print -quit 2> /dev/null)
  [ -z "$found" ] && [ -e "$here/lib/fallback/$name" ] && found=$here/lib/fallback/$name
  say "library $name: not on the loader's path${found:+; using $found}"
  [ -n "$found" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$(dirname "$found")
done

# Without a working nvidia-smi (a driver/NVML mismatch) CUDA may still find the device: a
# test that runs (passes, exit 0, or fails, exit 1; not 77, no device, nor a crash or a
# missing library) says so. The program checks take this count.
if [ "$gpus" -eq 0 ] && [ -x "$here/tests/test_gpu_device_memory" ]; then
  timeout 60 "$here/tests/test_gpu_device_memory" > /dev/null 2>&1
  case $? in 0 | 1) gpus=1 && say "nvidia-smi lists no GPU, but CUDA finds one: the GPU checks run" ;; esac
fi
export CTDL_GPUS=$gpus

# The machine's python with the machine's libraries (not lib/'s cudart and cupti).
machine_python=$(mktemp)
printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec python3 "$@"\n' "$machine_libs" > "$machine_python"
chmod +x "$machine_python"

# Whatever a step started and left running when its limit struck (an inner timeout runs
# in a process group of its own, out of the outer one's reach): killed before the next.
# (The bundle's path as a regular expression: its metacharacters escaped.)
here_re=$(printf '%s' "$here" | sed 's/[][\\.*^$+?(){}|]/\\&/g')
sweep() { pkill -KILL -f "$here_re/(programs|tests)/|$here_re/pytorch_gpu_bert\.py" 2> /dev/null || true; }
command -v pkill > /dev/null || say "pkill: missing (procps): what a step leaves running when its limit strikes is not killed"

# run <label> <limit-s> <command...>: runs it, its output into the report as it comes, and
# its verdict into the report and the summary. Verdicts: PASS; PASS* (passed, with a part
# skipped: the report says which); PARTIAL (exit 3: ran, some figures missing); SKIP
# (exit 77, without a GPU); FAIL; TIMEOUT; NOT RUN (less of the budget left than a
# quarter of the step's limit, at least 10 s: a step is not started only to be cut).
run() {
  local label=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - start))) least
  least=$((limit / 4 > 10 ? limit / 4 : 10))
  if [ $left -lt $least ]; then
    summary+=("NOT RUN  $label (${left} s of the ${budget} s budget left)")
    say "## $label: not run: ${left} s of the budget left"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "## $label"
  local t0=$SECONDS rc
  CTDL_STEP_LIMIT_S=$limit timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$report" > "$here/.out"
  rc=${PIPESTATUS[0]}
  sweep
  tail -40 "$here/.out"
  local verdict=FAIL
  case $rc in
    # A part skipped: a script's "SKIPPED ..." or "N. ...: skipped (why)", a test's
    # "<test>: skipped: why" (not a check named "...: skipped", which is indented).
    0) verdict=PASS; grep -Eq '^SKIPPED|^[^ ]+: skipped: |: skipped \(' "$here/.out" && verdict='PASS*' ;;
    3) verdict=PARTIAL ;;
    77) verdict=SKIP; [ "$gpus" -gt 0 ] && verdict='FAIL(skip)' ;;
    124 | 137) verdict="TIMEOUT(${limit}s)" ;;
  esac
  local line
  line=$(printf '%-8s %-44s %4d s  rc %d' "$verdict" "$label" $((SECONDS - t0)) $rc)
  summary+=("$line")
  say "verdict: $line"
}

for t in "$here"/tests/*; do run "test $(basename "$t")" 120 "$t"; done
# The program checks: ner_span_classifier --device=cuda against --device=cpu on the
# bundled data, each task; a TensorFlow NER checkpoint's predictions against its script's.
programs=$here/programs
[ -x "$programs/ner_span_classifier" ] &&
  run "program ner_span_classifier --device=cuda vs cpu" 300 \
    "$here/span_classifier_gpu_test.sh" "$programs/ner_span_classifier" "$here/data" "${TMPDIR:-/tmp}/ctdl-gpu-span"
[ -x "$programs/ner_span_classifier" ] &&
  run "program ner_span_classifier --task_name=ner --device=cuda vs cpu" 120 \
    "$here/ner_gpu_test.sh" "$programs/ner_span_classifier" "$here/data" "${TMPDIR:-/tmp}/ctdl-gpu-ner"
# A NER checkpoint of the TensorFlow run_ner.py predicted on the GPU: TensorFlow's script's labels.
[ -x "$programs/ner_span_classifier" ] && [ -f "$here/ner_tf_checkpoint_test.sh" ] &&
  run "program ner: TensorFlow checkpoint --device=cuda" 60 \
    "$here/ner_tf_checkpoint_test.sh" "$programs/ner_span_classifier" - "$here/fixtures" "${TMPDIR:-/tmp}/ctdl-gpu-ner-tf" \
    --device=cuda
# memcheck, before the benchmarks (correctness first when the budget runs short): every
# test under compute-sanitizer at once (each is slowed many times over; run side by side
# they take the time of the slowest), then each one's verdict. Memory
# errors only: failing CUDA API calls are not reported (--report-api-errors no), since
# the tests provoke some on purpose (an impossible allocation) and NCCL's start probes
# kernels that are not there for this GPU; every ctdl call's status is checked anyway.
# The op and kernel tests only: the model-level tests (a tiny BERT trained on both
# devices, several ZeRO-1 rank threads) run the same kernels many times over and would
# take the whole budget under the sanitizer (CTDL_MEMCHECK_SKIP names them).
skip_memcheck=" ${CTDL_MEMCHECK_SKIP:-test_gpu_bert test_gpu_nccl_data_parallel} "
targets=()
for t in "$here"/tests/*; do
  [[ $skip_memcheck == *" $(basename "$t") "* ]] || targets+=("$t")
done
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null || true)
if [ -n "$sanitizer" ]; then
  left=$((budget - (SECONDS - start) - 5))
  limit=${CTDL_MEMCHECK_LIMIT_S:-150}
  [ $limit -gt $left ] && limit=$left
  if [ $limit -lt 20 ]; then
    summary+=("NOT RUN  memcheck (the ${budget} s budget is spent)")
  else
    say "## memcheck (compute-sanitizer --tool memcheck, ${#targets[@]} tests side by side, limit $limit s;" \
      "not run under it:${skip_memcheck% })"
    t0=$SECONDS
    pids=()
    for t in "${targets[@]}"; do
      OMP_NUM_THREADS=2 timeout -k 10 "$limit" "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 9 \
        --print-limit 20 "$t" > "$here/.memcheck-$(basename "$t")" 2>&1 &
      pids+=($!)
    done
    i=0
    for t in "${targets[@]}"; do
      wait "${pids[$i]}"
      rc=$?
      i=$((i + 1))
      name=$(basename "$t")
      say "### memcheck $name (rc $rc)"
      tee -a "$report" < "$here/.memcheck-$name" | tail -8
      verdict=FAIL
      case $rc in
        0) verdict=PASS ;;
        77) verdict=SKIP; [ "$gpus" -gt 0 ] && verdict='FAIL(skip)' ;;
        124 | 137) verdict="TIMEOUT(${limit}s)" ;;
      esac
      line=$(printf '%-8s %-44s %4d s  rc %d' "$verdict" "memcheck $name" $((SECONDS - t0)) $rc)
      summary+=("$line")
      say "verdict: $line"
    done
    sweep
  fi
else
  summary+=("NOT RUN  memcheck (no compute-sanitizer)")
fi

# The benchmarks: bert_bench --device=cuda against PyTorch eager (the anchor script, when
# torch is here) and ctdl's matmul floor (its whole table first), in one table
# (benchmarks/compare_pytorch.sh --device=cuda, which prints each figure as it comes):
# issue 13's configurations at BERT-base; CTDL_COMPARE_CONFIGS replaces them.
traces=(bf16:train:64 bf16:infer:1)  # precision:mode:batch of the traced steps
if [ -x "$programs/bert_bench" ] && [ "$gpus" -eq 0 ]; then  # bert_bench stops with an error without one
  labels=("compare bert_bench vs pytorch (cuda)")
  for config in "${traces[@]}"; do
    IFS=: read -r prec mode batch <<<"$config"
    labels+=("trace bert_bench $prec $mode ${batch}x128")
  done
  for label in "${labels[@]}"; do
    summary+=("$(printf '%-8s %-44s %4d s  rc %d' SKIP "$label" 0 77)")
    say "## $label: skipped: no GPU (neither nvidia-smi nor CUDA finds one)"
  done
elif [ -x "$programs/bert_bench" ]; then
  anchor=$here/pytorch_gpu_bert.py
  if ! torch_error=$("$machine_python" -c 'import torch, transformers' 2>&1); then
    say "torch: cannot import torch and transformers, the table says n/a for them: $(tail -1 <<<"$torch_error")"
    anchor=/nonexistent
  fi
  read -r -a configs <<<"${CTDL_COMPARE_CONFIGS:-bf16:train:64:128 tf32:train:64:128 fp32:train:64:128 bf16:infer:64:128 fp32:infer:64:128 bf16:infer:1:128}"
  BENCH=$programs/bert_bench FLOOR=$programs/bench_cuda_matmul_floor ANCHOR=$anchor PYTHON=$machine_python \
    ANCHOR_LIMIT_S=${CTDL_ANCHOR_LIMIT_S:-120} \
    run "compare bert_bench vs pytorch (cuda)" "${CTDL_COMPARE_LIMIT_S:-240}" "$here/compare_pytorch.sh" --device=cuda "${configs[@]}"
  # The profile of a step (CUPTI's kernel trace, bert_bench --trace): how busy the GPU is
  # and which kernels take the time, for training and for batch-1 inference.
  for config in "${traces[@]}"; do
    IFS=: read -r prec mode batch <<<"$config"
    run "trace bert_bench $prec $mode ${batch}x128" 90 "$programs/bert_bench" --device=cuda --model=base \
      --precision="$prec" --mode="$mode" --batch="$batch" --seq_len=128 --warmup=3 --steps=3 --trace=30
  done
fi
say ""
say "# summary ($((SECONDS - start)) s)"
for line in "${summary[@]}"; do say "$line"; done
rm -f "$machine_python"
# Exit 1: a failure or a time-out; 4: no GPU (neither nvidia-smi nor CUDA found one), so
# nothing was checked on one; 2: all that ran passed, but a step was not run (the budget
# spent, or no compute-sanitizer).
verdicts=$(printf '%s\n' "${summary[@]}")
grep -q '^FAIL\|^TIMEOUT' <<<"$verdicts" && exit 1
if [ "$gpus" -eq 0 ]; then
  say "no GPU: every step skipped; nothing was checked on a GPU"
  exit 4
fi
grep -q '^NOT RUN' <<<"$verdicts" && exit 2
exit 0

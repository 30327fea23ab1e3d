#!/usr/bin/env bash
# The GPU bundle's run.sh (scripts/gpu-check.sh copies it there): on a GPU machine, runs
# every GPU test, the program check (ner_span_classifier --device=cuda against the CPU),
# the benchmarks (bert_bench --device=cuda), compute-sanitizer's memcheck over the tests
# and the PyTorch anchor (when torch is there), each under a time limit, within a total
# budget (CTDL_GPU_CHECK_BUDGET_S, default 450 s), and writes one report.
#
#   run.sh [report-file]      default: $OUT/gpu-report.txt where OUT is set, else beside run.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
report=${1:-${OUT:-$here}/gpu-report.txt}
budget=${CTDL_GPU_CHECK_BUDGET_S:-450}
export LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
start=$SECONDS
: > "$report"
say() { echo "$*" | tee -a "$report"; }
summary=()

say "# ctdl GPU check, bundle of $(head -1 "$here/COMMIT") $(sed -n 2p "$here/COMMIT")"
say "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$report"
command -v nvcc > /dev/null && say "nvcc: $(nvcc --version | tail -1)"

# run <label> <limit-s> <command...>: runs it, its output into the report, one summary line.
run() {
  local label=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - start)))
  if [ $left -lt 10 ]; then
    summary+=("NOT RUN  $label (the ${budget} s budget is spent)")
    say "## $label: not run: budget spent"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "## $label"
  local t0=$SECONDS rc
  timeout "$limit" "$@" > "$here/.out" 2>&1
  rc=$?
  tee -a "$report" < "$here/.out" > /dev/null
  tail -40 "$here/.out"
  local verdict=FAIL
  case $rc in
    0) verdict=PASS ;;
    77) verdict=SKIP ;;
    124) verdict="TIMEOUT(${limit}s)" ;;
  esac
  # The anchor's last stage (torch.compile) may be cut by its limit: its figures are in already.
  [ $rc = 124 ] && [[ $label == pytorch* ]] && verdict=CUT
  summary+=("$(printf '%-8s %-44s %4d s  rc %d' "$verdict" "$label" $((SECONDS - t0)) $rc)")
}

for t in "$here"/tests/*; do run "test $(basename "$t")" 120 "$t"; done
# The programs: the matmul floor, the program check (ner_span_classifier --device=cuda
# against --device=cpu on the bundled data), bert_bench on the GPU at BERT-base.
programs=$here/programs
[ -x "$programs/bench_cuda_matmul_floor" ] && run "program bench_cuda_matmul_floor" 120 "$programs/bench_cuda_matmul_floor"
[ -x "$programs/ner_span_classifier" ] &&
  run "program ner_span_classifier --device=cuda vs cpu" 240 \
    "$here/span_classifier_gpu_test.sh" "$programs/ner_span_classifier" "$here/data" "${TMPDIR:-/tmp}/ctdl-gpu-span"
if [ -x "$programs/bert_bench" ]; then
  for cfg in bf16:train:64 fp32:train:32 bf16:infer:64; do
    IFS=: read -r precision mode batch <<<"$cfg"
    run "bert_bench base $precision $mode $batch x 128" 90 "$programs/bert_bench" --device=cuda --model=base \
      --precision="$precision" --mode="$mode" --batch="$batch" --seq_len=128 --warmup=3 --steps=10
  done
fi
if [ -f "$here/pytorch_gpu_bert.py" ] && python3 -c 'import torch, transformers' 2> /dev/null; then
  # The peer in the same run: PyTorch BERT-base training and inference and its matmul
  # floors (the torch.compile run after them is cut by the limit when time is short).
  CONFIGS=${CTDL_ANCHOR_CONFIGS:-bf16:train:64:128,bf16:infer:64:128} PYTHONUNBUFFERED=1 \
    run "pytorch anchor" "${CTDL_ANCHOR_LIMIT_S:-75}" python3 "$here/pytorch_gpu_bert.py" "${OUT:-$here}/pytorch-anchor.json"
fi
# memcheck: every test under compute-sanitizer at once (each is slowed many times over;
# run side by side they take the time of the slowest), then each one's verdict. Memory
# errors only: failing CUDA API calls are not reported (--report-api-errors no), since
# the tests provoke some on purpose (an impossible allocation) and NCCL's start probes
# kernels that are not there for this GPU; every ctdl call's status is checked anyway.
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null || true)
if [ -n "$sanitizer" ]; then
  left=$((budget - (SECONDS - start) - 5))
  limit=${CTDL_MEMCHECK_LIMIT_S:-150}
  [ $limit -gt $left ] && limit=$left
  if [ $limit -lt 20 ]; then
    summary+=("NOT RUN  memcheck (the ${budget} s budget is spent)")
  else
    say "## memcheck (compute-sanitizer --tool memcheck, every test side by side, limit $limit s)"
    t0=$SECONDS
    pids=()
    for t in "$here"/tests/*; do
      timeout "$limit" "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 9 --print-limit 20 "$t" > "$here/.memcheck-$(basename "$t")" 2>&1 &
      pids+=($!)
    done
    i=0
    for t in "$here"/tests/*; do
      wait "${pids[$i]}"
      rc=$?
      i=$((i + 1))
      name=$(basename "$t")
      say "### memcheck $name (rc $rc)"
      tee -a "$report" < "$here/.memcheck-$name" | tail -8
      verdict=FAIL
      case $rc in 0) verdict=PASS ;; 77) verdict=SKIP ;; 124) verdict="TIMEOUT(${limit}s)" ;; esac
      summary+=("$(printf '%-8s %-44s %4d s  rc %d' "$verdict" "memcheck $name" $((SECONDS - t0)) $rc)")
    done
  fi
else
  summary+=("NOT RUN  memcheck (no compute-sanitizer)")
fi

say ""
say "# summary ($((SECONDS - start)) s)"
for line in "${summary[@]}"; do say "$line"; done
! printf '%s\n' "${summary[@]}" | grep -q '^FAIL\|^TIMEOUT'

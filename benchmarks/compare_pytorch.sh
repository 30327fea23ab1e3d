#!/usr/bin/env bash
# ctdl vs PyTorch (Hugging Face transformers) on the same BERT steps, in one run on the
# same machine, printed as a table with ratios.
#
#   benchmarks/compare_pytorch.sh [configs...]     config = model:precision:batch:seq_len:mode
#   default: base:fp32:8:128:train base:fp32:8:128:infer base:bf16:8:128:train base:bf16:8:128:infer
#
# PyTorch and transformers come from PyPI into a venv (build/venv-peers) if $PYTHON does
# not already have them. STEPS and WARMUP set the timed and untimed steps (default 3, 1).
#
#   benchmarks/compare_pytorch.sh --device=cuda [configs...]   config = precision:mode:batch:seq_len
#   default: issue 13's table at BERT-base: bf16, tf32, fp32 training at 64 x 128; bf16 and
#   fp32 inference at 64 x 128; bf16 inference at 1 x 128
#
# On a GPU: bert_bench --device=cuda (BENCH, default build/bin/bert_bench) against the
# PyTorch anchor (ANCHOR, default ../shared/anchors/pytorch_gpu_bert.py: eager PyTorch,
# fused AdamW, clipping; the same script that measured ../shared/anchors) with $PYTHON
# (default python3; the GPU machine has torch and transformers, and no network), and
# ctdl's matmul floor (FLOOR, default build/bin/bench_cuda_matmul_floor) where it exists.
# Both sides: 3 warm-up and 10 timed steps (WARMUP, STEPS); ctdl one process per
# configuration, then the anchor once over all of them, ending with its floors and
# torch.compile of bf16 training at batch COMPILE_B (64), within ANCHOR_LIMIT_S (300).
# Each figure is printed as soon as it exists (ctdl's JSON line per configuration, the
# anchor's lines as it writes them), the table at the end: a run cut short keeps what it
# measured. CTDL_STEP_LIMIT_S (set by the GPU bundle's run.sh): the seconds this whole
# comparison may take; the anchor's limit shrinks to fit, and a ctdl configuration that
# would start in the last 30 s is not run.
# Exit status: 1 when a ctdl configuration has no figures (other than by the time limit);
# 3 when the time limit cut a configuration, or PyTorch has none for one although ANCHOR
# exists (the anchor failed or ran out of time); else 0.
set -euo pipefail
cd "$(dirname "$0")/.."

compare_cuda() {
  local bench=${BENCH:-build/bin/bert_bench} anchor=${ANCHOR:-../shared/anchors/pytorch_gpu_bert.py} prec mode batch seq
  local floor_bin=${FLOOR:-build/bin/bench_cuda_matmul_floor} python=${PYTHON:-python3}
  local warm=${WARMUP:-3} reps=${STEPS:-10} work
  work=$(mktemp -d)
  local configs=("$@")
  [ ${#configs[@]} -gt 0 ] ||
    configs=(bf16:train:64:128 tf32:train:64:128 fp32:train:64:128 bf16:infer:64:128 fp32:infer:64:128 bf16:infer:1:128)
  [ -x "$bench" ] || { echo "compare_pytorch.sh: no $bench (build with -DCTDL_WITH_CUDA=ON, or set BENCH)" >&2; return 1; }
  field() { sed -n "s/.*\"$2\": *\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1" | head -1; }
  # Seconds left of CTDL_STEP_LIMIT_S, less a margin for the table (a large number without it).
  time_left() { echo $((${CTDL_STEP_LIMIT_S:-100000} - SECONDS - 10)); }
  local floor_lines=""
  if [ -x "$floor_bin" ]; then
    floor_lines=$(timeout -k 5 $(($(time_left) / 4)) "$floor_bin" 2>&1 || true)
    echo "ctdl's matmul floor ($floor_bin):"
    sed 's/^/  /' <<<"$floor_lines"
  fi
  # ctdl first, each configuration in its own process; then the anchor once over all of
  # them (it ends with its floors and a torch.compile run, cut by ANCHOR_LIMIT_S if need be).
  local c i=0 list="" failed=0 torch_missing=0 cut=0 versions
  # Asked before the anchor runs: after it, little of the time limit may be left.
  versions=$("$python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null || true)
  for c in "${configs[@]}"; do
    IFS=: read -r prec mode batch seq <<<"$c"
    if [ "$(time_left)" -lt 30 ]; then
      echo "not run: the time limit is near" >"$work/ctdl.$i"
      cut=1
    else
      local rc=0
      timeout -k 5 "$(time_left)" "$bench" --device=cuda --model=base --precision="$prec" --mode="$mode" \
        --batch="$batch" --seq_len="$seq" --warmup="$warm" --steps="$reps" >"$work/ctdl.$i" 2>&1 || rc=$?
      if [ $rc = 124 ] || [ $rc = 137 ]; then echo "cut at the time limit" >>"$work/ctdl.$i"; cut=1; fi
    fi
    echo "ctdl $c: $(grep '"sentences_per_s"' "$work/ctdl.$i" | tail -1 || tail -1 "$work/ctdl.$i")"
    list+="${list:+,}$c"
    i=$((i + 1))
  done
  local anchor_limit=${ANCHOR_LIMIT_S:-300}
  [ "$(time_left)" -lt "$anchor_limit" ] && anchor_limit=$(time_left)
  : >"$work/torch.out"
  if [ "$anchor_limit" -lt 20 ]; then
    echo "the anchor is not run: ${anchor_limit} s left" >"$work/torch.err"
  else
    CONFIGS=$list WARM=$warm REPS=$reps COMPILE_B=${COMPILE_B:-64} PYTHONUNBUFFERED=1 \
      timeout -k 5 "$anchor_limit" "$python" "$anchor" "$work/anchor.json" 2>"$work/torch.err" |
      tee "$work/torch.out" | sed 's/^/torch: /' || true
  fi
  printf "%-5s %-5s %4s %4s | %10s %9s %9s | %10s %9s %9s | %7s | %9s %6s\n" prec mode B S "ctdl ms" "sent/s" "peak MiB" \
    "torch ms" "sent/s" "peak MiB" "speedup" "floor s/s" "of it"
  i=0
  for c in "${configs[@]}"; do
    IFS=: read -r prec mode batch seq <<<"$c"
    local ours theirs o_ms o_sps o_mb t_ms t_sps t_gib t_mb ratio fl of
    ours=$(grep '"sentences_per_s"' "$work/ctdl.$i" | tail -1 || true)
    theirs=$(grep -F "\"prec\": \"$prec\", \"mode\": \"$mode\", \"B\": $batch, \"S\": $seq, \"step_ms\"" "$work/torch.out" | head -1 || true)
    o_ms=$(field "$ours" step_ms); o_sps=$(field "$ours" sentences_per_s); o_mb=$(field "$ours" peak_device_mb)
    t_ms=$(field "$theirs" step_ms); t_sps=$(field "$theirs" sent_per_s); t_gib=$(field "$theirs" peak_GiB)
    t_mb=""; [ -n "$t_gib" ] && t_mb=$(awk -v g="$t_gib" 'BEGIN { printf "%.0f", g * 1024 }')
    ratio="-"; [ -n "$o_ms" ] && [ -n "$t_ms" ] && ratio=$(awk -v a="$o_ms" -v b="$t_ms" 'BEGIN { printf "%.2fx", b / a }')
    # ctdl's floor line for this precision, mode and batch (bench_cuda_matmul_floor's table).
    fl=$(awk -v p="$prec" -v m="$mode" -v b="$batch" -v s="$seq" \
      '$1 == (m == "train" ? "train" : "inference") && $2 == p && $3 == "batch" && $4 == b && $6 == s \
      { for (i = 1; i < NF; i++) if ($(i + 1) == "sentences/s") { print $i; exit } }' <<<"$floor_lines")
    of="-"; [ -n "$fl" ] && [ -n "$o_sps" ] && of=$(awk -v a="$o_sps" -v f="$fl" 'BEGIN { printf "%.2f", a / f }')
    printf "%-5s %-5s %4s %4s | %10s %9s %9s | %10s %9s %9s | %7s | %9s %6s\n" "$prec" "$mode" "$batch" "$seq" \
      "${o_ms:-n/a}" "${o_sps:-n/a}" "${o_mb:-n/a}" "${t_ms:-n/a}" "${t_sps:-n/a}" "${t_mb:-n/a}" "$ratio" "${fl:--}" "$of"
    if [ -z "$o_ms" ]; then  # no figures: a failure, unless the time limit cut it
      echo "  ctdl: $(tail -1 "$work/ctdl.$i")"
      grep -q "^not run: the time limit\|^cut at the time limit" "$work/ctdl.$i" || failed=1
    fi
    [ -n "$t_ms" ] || { echo "  torch: $(tail -1 "$work/torch.err" 2>/dev/null)"; [ -f "$anchor" ] && torch_missing=1; }
    i=$((i + 1))
  done
  local compiled
  compiled=$(grep '"compiled": true' "$work/torch.out" | tail -1 || true)
  [ -n "$compiled" ] && echo "torch.compile, bf16 training: $compiled"
  echo "speedup = PyTorch eager step time / ctdl step time (above 1: ctdl is faster); floor = ctdl's matmul floor"
  echo "(bench_cuda_matmul_floor: the step's products alone through cuBLASLt), 'of it' = ctdl sent/s / floor."
  echo "peak: ctdl's memory pool's high-water mark from the model in place on (cuBLASLt's workspace, a plain"
  echo "cudaMalloc of 32 MiB per device, not in it), PyTorch's max_memory_allocated likewise; ctdl"
  echo "gives the median step, the anchor the mean."
  echo "$(timeout 20 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1);" \
    "$versions;" \
    "$warm warm-up + $reps timed steps each; $(date -u +%F)."
  [ -s "$work/torch.err" ] && [ $torch_missing = 1 ] && { echo "the anchor's stderr, last lines:"; tail -5 "$work/torch.err"; }
  rm -rf "$work"
  # A ctdl configuration without figures fails the comparison (1); one cut by the time
  # limit, or PyTorch's missing where its anchor script is there, makes it partial (3).
  [ $failed = 1 ] && return 1
  [ $torch_missing = 1 ] || [ $cut = 1 ] && return 3
  return 0
}

if [ "${1:-}" = "--device=cuda" ]; then
  shift
  compare_cuda "$@"
  exit
fi
bench=build/bin/bert_bench
[ -x "$bench" ] || scripts/build.sh
steps=${STEPS:-3}
warmup=${WARMUP:-1}

. benchmarks/peer_python.sh
peer_python torch transformers -- torch transformers

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(base:fp32:8:128:train base:fp32:8:128:infer base:bf16:8:128:train base:bf16:8:128:infer)

printf "%-8s %-5s %5s %5s %-6s | %12s %12s | %12s %12s | %8s\n" model prec batch seq mode "ctdl ms" "ctdl sent/s" "torch ms" "torch sent/s" "speedup"
for c in "${configs[@]}"; do
  IFS=: read -r model prec batch seq mode <<<"$c"
  args=(--model="$model" --precision="$prec" --batch="$batch" --seq_len="$seq" --mode="$mode" --steps="$steps" --warmup="$warmup")
  ours=$("$bench" "${args[@]}" 2>&1 | tail -1 || true)
  theirs=$("$python" benchmarks/pytorch_bert_step.py "${args[@]}" 2>/dev/null | tail -1 || true)
  field() { sed -n "s/.*\"$2\": *\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1"; }
  o_ms=$(field "$ours" step_ms); o_sps=$(field "$ours" sentences_per_s)
  t_ms=$(field "$theirs" step_ms); t_sps=$(field "$theirs" sentences_per_s)
  ratio="-"
  [ -n "$o_ms" ] && [ -n "$t_ms" ] && ratio=$(awk -v a="$o_ms" -v b="$t_ms" 'BEGIN { printf "%.2fx", b / a }')
  printf "%-8s %-5s %5s %5s %-6s | %12s %12s | %12s %12s | %8s\n" "$model" "$prec" "$batch" "$seq" "$mode" \
    "${o_ms:-n/a}" "${o_sps:-n/a}" "${t_ms:-n/a}" "${t_sps:-n/a}" "$ratio"
  [ -n "$o_ms" ] || echo "  ctdl: $ours"
done
echo "speedup = PyTorch step time / ctdl step time (above 1: ctdl is faster). $(nproc) cores; $(date -u +%F)."

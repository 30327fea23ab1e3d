#!/usr/bin/env bash
# ctdl vs PyTorch (Hugging Face transformers) on the same BERT steps, in one run on the
# same machine, printed as a table with ratios.
#
#   benchmarks/compare_pytorch.sh [configs...]     config = model:precision:batch:seq_len:mode
#   default: base:fp32:8:128:train base:fp32:8:128:infer base:bf16:8:128:train base:bf16:8:128:infer
#
# PyTorch and transformers come from PyPI into a venv (build/venv-peers) if $PYTHON does
# not already have them. STEPS and WARMUP set the timed and untimed steps (default 3, 1).
set -euo pipefail
cd "$(dirname "$0")/.."
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

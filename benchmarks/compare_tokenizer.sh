#!/usr/bin/env bash
# ctdl's FullTokenizer vs Hugging Face BertTokenizerFast (Rust) on the same rows, in one
# run on the same machine: rows/s on one thread and on all cores, cased and uncased.
#
#   benchmarks/compare_tokenizer.sh [shared data dir]     (default ../shared/data)
#
# Rows: every left context, span and right context of consensus-example/dev.tsv, then
# every BC5CDR train sentence, repeated to REPEAT x (default 10). transformers comes from
# PyPI into build/venv-peers if $PYTHON does not already have it.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
bench=build/bin/bench_tokenizer
[ -x "$bench" ] || scripts/build.sh
repeat=${REPEAT:-10}

. benchmarks/peer_python.sh
peer_python transformers -- transformers

rows=build/bench_tokenizer_rows.txt
{
  for _ in $(seq "$repeat"); do
    cut -f4-6 "$data/consensus-example/dev.tsv" | tr '\t' '\n'
    awk 'BEGIN { RS = "\r?\n\r?\n" } { n = split($0, l, "\r?\n"); s = ""; for (i = 1; i <= n; i++) { split(l[i], f, "\t"); if (f[1] != "") s = s (s == "" ? "" : " ") f[1] } if (s != "") print s }' \
      "$data/bc5cdr-chem/train.tsv"
  done
} >"$rows"
echo "rows: $(wc -l <"$rows") lines, $(du -h "$rows" | cut -f1) ($repeat x consensus dev fields + BC5CDR train sentences)"

field() { sed -n "s/.*\"$2\": *\([0-9.]*\).*/\1/p" <<<"$1"; }
printf "%-8s %7s | %12s %14s | %12s %14s | %7s\n" casing threads "ctdl rows/s" "ctdl tokens/s" "HF rows/s" "HF tokens/s" "ratio"
for casing in cased uncased; do
  vocab="$data/vocab/bert-base-$casing-vocab.txt"
  flag=$([ $casing = cased ] && echo true || echo false)
  for threads in 1 "$(nproc)"; do
    ours=$(OMP_NUM_THREADS=$threads "$bench" --vocab_file="$vocab" --cased=$flag --input="$rows" --reps=5)
    theirs=$(RAYON_NUM_THREADS=$threads TOKENIZERS_PARALLELISM=true "$python" benchmarks/hf_tokenize.py \
      --vocab_file="$vocab" --cased=$flag --input="$rows" --reps=5)
    o=$(field "$ours" rows_per_s); t=$(field "$theirs" rows_per_s)
    if [ "$(field "$ours" tokens)" != "$(field "$theirs" tokens)" ]; then
      echo "  note: token counts differ (ctdl $(field "$ours" tokens), HF $(field "$theirs" tokens)): HF's fast tokenizer is not Google's algorithm (docs/data.md)"
    fi
    printf "%-8s %7s | %12s %14s | %12s %14s | %6.2fx\n" $casing "$threads" "$o" "$(field "$ours" tokens_per_s)" \
      "$t" "$(field "$theirs" tokens_per_s)" "$(awk -v a="$o" -v b="$t" 'BEGIN { print a / b }')"
  done
done
echo "ratio = ctdl rows/s / HF rows/s (above 1: ctdl is faster). $(nproc) cores; $(date -u +%F)."

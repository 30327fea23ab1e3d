#!/usr/bin/env bash
# Data-parallel scaling on one machine: ner_span_classifier trained on 1 process x T
# threads against R MPI ranks x T/R threads (--distributed), at the same global batch, for
# the tiny BERT (128/2/512, 2 layers) and BERT-base (768/12/3072, 12 layers), M = 128,
# fp32, random initialisation, the shared consensus rows. Prints sentences/s (the
# program's "throughput without overhead": steps 3 on, no preparation or saving) and the
# parallel efficiency (ranks' throughput / one process's).
#
#   benchmarks/scaling_mpi.sh [build/bin/ner_span_classifier] [ranks=2] [threads=2]
#
# Ranks are pinned to cores (mpirun --bind-to core, with --map-by slot:PE=T/R), the one
# process's threads with OMP_PROC_BIND=close; ranks x threads per rank = threads.
set -euo pipefail
prog=${1:-build/bin/ner_span_classifier} ranks=${2:-2} threads=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${CTDL_SHARED_DATA:-$here/../shared/data}
data=$shared/consensus-example vocab=$shared/vocab/bert-base-cased-vocab.txt
per_rank=$((threads / ranks))
[ "$per_rank" -ge 1 ] || { echo "scaling_mpi.sh: $ranks ranks need at least $ranks threads"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data"
mpi_flags=()
mpirun --version 2>/dev/null | grep -q "Open MPI" && mpi_flags=(--allow-run-as-root --oversubscribe)

run() {  # run <label> <rows> <config> <batch per rank> <ranks>
  local label=$1 rows=$2 config=$3 batch=$4 n=$5 out=$work/$1
  head -n "$rows" "$data/dev.tsv" >"$work/data/train.tsv"
  local args=(--do_train --vocab_file="$vocab" --bert_config_file="$config" --cased --data_dir="$work/data"
              --labels_dir="$data" --max_seq_length=128 --num_train_epochs=1 --train_batch_size="$batch"
              --learning_rate=5e-5 --save_checkpoints_steps=100000 --log_every=1000 --output_dir="$out")
  if [ "$n" = 1 ]; then
    OMP_NUM_THREADS=$threads OMP_PROC_BIND=close OMP_PLACES=cores "$prog" "${args[@]}" 2>"$out.err" >/dev/null
  else
    OMP_NUM_THREADS=$per_rank mpirun "${mpi_flags[@]}" -np "$n" --map-by "slot:PE=$per_rank" --bind-to core \
      -x OMP_NUM_THREADS "$prog" "${args[@]}" --distributed 2>"$out.err" >/dev/null
  fi || { cat "$out.err"; exit 1; }
  sed -n 's/.*throughput without overhead.*: \([0-9.]*\) sentences\/s/\1/p' "$out.err"
}

cat >"$work/tiny.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 512}
JSON
cat >"$work/base.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
 "intermediate_size": 3072, "max_position_embeddings": 512}
JSON
echo "ner_span_classifier, fp32, M = 128, global batch 16: 1 process x $threads threads against $ranks ranks x $per_rank threads"
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(mpirun --version 2>&1 | head -1)"
printf '%-10s %8s %22s %22s %12s\n' model rows "1 x $threads (sent/s)" "$ranks x $per_rank (sent/s)" efficiency
for model in tiny base; do
  rows=960; [ $model = base ] && rows=160
  one=$(run "$model-1" $rows "$work/$model.json" 16 1)
  many=$(run "$model-$ranks" $rows "$work/$model.json" $((16 / ranks)) "$ranks")
  printf '%-10s %8s %22s %22s %12s\n' "$model" "$rows" "$one" "$many" "$(awk -v a="$one" -v b="$many" 'BEGIN { printf "%.2f", b / a }')"
done

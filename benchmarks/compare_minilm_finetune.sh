#!/usr/bin/env bash
# The demo's pretrained fine-tune (all-MiniLM-L6-v2 on the consensus rows, 80% train and
# 20% held out) in ctdl and in PyTorch + transformers, one after the other on the same
# machine in one run, with the same recipe: batch 32, max_seq_length 64, warmup 10% then
# linear decay, clipping at 1.0, seed 42; PRECISION (default bf16), LR (3e-5), EPOCHS (10)
# and THREADS (all cores) as the environment says. Prints each one's training time and
# eval_accuracy (and ctdl's f1-macro), and a table.
#
#   benchmarks/compare_minilm_finetune.sh
#
# PyTorch and transformers come from PyPI into a venv (build/venv-peers) if $PYTHON does
# not already have them. The differences between the two recipes that remain (AdamW's bias
# correction, dropout masks, initialisation of the classifier) are in
# benchmarks/minilm_finetune_pytorch.py's header.
set -euo pipefail
cd "$(dirname "$0")/.."
precision=${PRECISION:-bf16}
lr=${LR:-3e-5}
epochs=${EPOCHS:-10}
threads=${THREADS:-$(nproc)}
data=${CTDL_DATA:-../shared/data/consensus-example}
program=build/bin/ner_span_classifier
[ -x "$program" ] || scripts/build.sh --target ner_span_classifier
model_dir=$(scripts/fetch-minilm.sh | tail -n 1)
. benchmarks/peer_python.sh
peer_python torch transformers -- torch transformers

work=build/compare-minilm
rm -rf "$work"
mkdir -p "$work/data"
rows=$(grep -c . "$data/dev.tsv")
train_rows=$((rows * 8 / 10))
head -n "$train_rows" "$data/dev.tsv" >"$work/data/train.tsv"
tail -n +"$((train_rows + 1))" "$data/dev.tsv" >"$work/data/dev.tsv"
echo "compare_minilm_finetune: $train_rows training rows, $((rows - train_rows)) held out; $precision, lr $lr, $epochs epochs, $threads threads; $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"

echo "== ctdl (build/bin/ner_span_classifier)"
t0=$(date +%s.%N)
OMP_NUM_THREADS=$threads "$program" --do_prepare --do_train --do_eval --task_name=consensus \
  --data_dir="$work/data" --labels_dir="$data" --max_seq_length=64 --train_batch_size=32 --eval_batch_size=32 \
  --warmup_proportion=0.1 --seed=42 --log_every=50 --output_dir="$work/ctdl" \
  --init_checkpoint="$model_dir" --vocab_file= --bert_config_file="$model_dir/bert_config.json" --cased=false \
  --precision="$precision" --learning_rate="$lr" --num_train_epochs="$epochs" --num_threads="$threads" 2>&1 |
  tee "$work/ctdl.log" | grep -E "^training|eval_accuracy|f1-macro"
t1=$(date +%s.%N)

echo "== PyTorch $("$python" -c 'import torch; print(torch.__version__)') + transformers $("$python" -c 'import transformers; print(transformers.__version__)')"
"$python" benchmarks/minilm_finetune_pytorch.py --model_dir "$model_dir" --data_dir "$data" --precision "$precision" \
  --learning_rate "$lr" --epochs "$epochs" --threads "$threads" --seed 42 2>&1 | tee "$work/pytorch.log" | grep -v "^{"
t2=$(date +%s.%N)

ctdl_train=$(sed -n 's/^training done: .* in \([0-9.ms]*\)$/\1/p' "$work/ctdl.log")
value() { sed -n "s/^$1 = //p" "$work/ctdl/eval_results.txt"; }
torch_json=$(grep "^{" "$work/pytorch.log" | tail -n 1)
field() { "$python" -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$torch_json"; }
printf "\n%-28s %14s %14s %10s %10s\n" "" "training" "whole run (s)" "accuracy" "f1-macro"
printf "%-28s %14s %14.0f %10s %10s\n" "ctdl $precision" "$ctdl_train" "$(echo "$t1 - $t0" | bc)" "$(value eval_accuracy)" "$(value f1-macro)"
printf "%-28s %14s %14.0f %10s %10s\n" "PyTorch $precision" "$(field train_seconds) s" "$(echo "$t2 - $t1" | bc)" "$(field eval_accuracy)" "-"

#!/usr/bin/env bash
# The NER task (ner_span_classifier --task_name=ner) against PyTorch + transformers, one
# after the other on the same machine in one run, with the same recipe and features:
# a pretrained BERT (all-MiniLM-L6-v2 from scripts/fetch-minilm.sh, or MODEL_DIR) fine-tuned
# as a token classifier on BC5CDR-chem's train.tsv and scored on devel.tsv; batch 32 of
# features, max_seq_length 128, warmup 10% then linear decay, clipping at 1.0, seed 42;
# PRECISION (default bf16), LR (5e-5), EPOCHS (1), THREADS (all cores),
# TRAIN_SENTENCES (all) and PAD_TO_MAX_LENGTH (false: both cut each batch to its longest
# feature, rounded up to 8, and predict devel.tsv's features in order of decreasing length;
# true: both pad every batch to 128 and predict in file order) and GROUP_BY_LENGTH (false;
# true: training batches grouped by length, ctdl's --group_by_length and Hugging Face's
# get_length_grouped_indices) as the environment says. Both sets of predictions are scored by
# seqeval (an independent implementation of conlleval's entity scores), and ctdl's also by
# its own conlleval report, which must agree with seqeval's. ctdl runs --ner_scheme=first_piece,
# the recipe of the peer (Hugging Face's run_ner.py), whatever the program's default.
#
#   benchmarks/compare_ner_finetune.sh
#
# PyTorch, transformers and seqeval come from PyPI into a venv (build/venv-peers) if
# $PYTHON does not already have them. The recipes' remaining differences (AdamW's bias
# correction, dropout masks, the classifier's initialisation) are in
# benchmarks/ner_finetune_pytorch.py's header.
set -euo pipefail
cd "$(dirname "$0")/.."
precision=${PRECISION:-bf16}
lr=${LR:-5e-5}
epochs=${EPOCHS:-1}
threads=${THREADS:-$(nproc)}
pad_to_max_length=${PAD_TO_MAX_LENGTH:-false}
group_by_length=${GROUP_BY_LENGTH:-false}
peer_pad=()
[ "$pad_to_max_length" = true ] && peer_pad=(--pad_to_max_length)
[ "$group_by_length" = true ] && peer_pad+=(--group_by_length)
data=${CTDL_DATA:-../shared/data/bc5cdr-chem}
program=${PROGRAM:-build/bin/ner_span_classifier}
[ -x "$program" ] || scripts/build.sh --target ner_span_classifier
model_dir=${MODEL_DIR:-$(scripts/fetch-minilm.sh | tail -n 1)}
. benchmarks/peer_python.sh
peer_python torch transformers seqeval -- torch transformers seqeval

work=build/compare-ner
rm -rf "$work"
mkdir -p "$work/data"
# The first TRAIN_SENTENCES sentences of train.tsv (all by default); devel.tsv whole, as
# ctdl's test.tsv too (its NER_result_conll.txt is the devel predictions).
awk -v n="${TRAIN_SENTENCES:-0}" '{ print } /^\r?$/ { if (n && ++k == n) exit }' "$data/train.tsv" >"$work/data/train.tsv"
cp "$data/devel.tsv" "$work/data/devel.tsv"
cp "$data/devel.tsv" "$work/data/test.tsv"
sentences() { grep -c $'^\r\\?$' "$1"; }
echo "compare_ner_finetune: $(sentences "$work/data/train.tsv") training sentences, $(sentences "$work/data/devel.tsv") devel; $precision, lr $lr, $epochs epochs, $threads threads, pad_to_max_length $pad_to_max_length, group_by_length $group_by_length; $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); model $model_dir"

echo "== ctdl ($program --task_name=ner)"
t0=$(date +%s.%N)
OMP_NUM_THREADS=$threads "$program" --task_name=ner --do_prepare --do_train --do_eval --do_predict \
  --data_dir="$work/data" --max_seq_length=128 --train_batch_size=32 --eval_batch_size=64 --predict_batch_size=64 \
  --warmup_proportion=0.1 --seed=42 --log_every=25 --output_dir="$work/ctdl" \
  --init_checkpoint="$model_dir" --vocab_file= --bert_config_file="$model_dir/bert_config.json" --cased=false \
  --precision="$precision" --learning_rate="$lr" --num_train_epochs="$epochs" --num_threads="$threads" \
  --pad_to_max_length="$pad_to_max_length" --group_by_length="$group_by_length" --ner_scheme=first_piece 2>&1 |
  tee "$work/ctdl.log" | grep -E "^training|^predicted|^(f1|precision|recall|eval_accuracy) = "
t1=$(date +%s.%N)

echo "== PyTorch $("$python" -c 'import torch; print(torch.__version__)') + transformers $("$python" -c 'import transformers; print(transformers.__version__)')"
"$python" benchmarks/ner_finetune_pytorch.py --model_dir "$model_dir" --data_dir "$work/data" --out "$work/pytorch" \
  --precision "$precision" --learning_rate "$lr" --epochs "$epochs" --threads "$threads" --seed 42 --lower_case \
  "${peer_pad[@]}" 2>&1 |
  tee "$work/pytorch.log" | grep -v "^{"
t2=$(date +%s.%N)

# seqeval over a NER_result_conll.txt: "precision recall f1 accuracy".
score() {
  "$python" - "$1" <<'PY'
import sys
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
gold, guess, g, p = [], [], [], []
for line in open(sys.argv[1], encoding="utf-8"):
    f = line.split()
    if not f:
        if g: gold.append(g); guess.append(p)
        g, p = [], []
        continue
    g.append(f[1]); p.append(f[2])
if g: gold.append(g); guess.append(p)
print(f"{precision_score(gold, guess):.4f} {recall_score(gold, guess):.4f} {f1_score(gold, guess):.4f} {accuracy_score(gold, guess):.4f}")
PY
}
read -r c_p c_r c_f c_a <<<"$(score "$work/ctdl/NER_result_conll.txt")"
read -r t_p t_r t_f t_a <<<"$(score "$work/pytorch/NER_result_conll.txt")"
own_f1=$(sed -n 's/^f1 = //p' "$work/ctdl/eval_results.txt")
ctdl_train=$(sed -n 's/^training done: .* in \([0-9.ms]*\)$/\1/p' "$work/ctdl.log")
ctdl_predict=$(sed -n 's/^predicted .* in \([0-9.]* s\) -> .*/\1/p' "$work/ctdl.log")
torch_json=$(grep "^{" "$work/pytorch.log" | tail -n 1)
field() { "$python" -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$torch_json"; }
printf "\n%-22s %12s %12s %14s %10s %10s %10s %10s\n" "devel.tsv (seqeval)" "training" "prediction" "whole run (s)" "precision" "recall" "f1" "accuracy"
printf "%-22s %12s %12s %14.0f %10s %10s %10s %10s\n" "ctdl $precision" "$ctdl_train" "$ctdl_predict" "$(echo "$t1 - $t0" | bc)" "$c_p" "$c_r" "$c_f" "$c_a"
printf "%-22s %12s %12s %14.0f %10s %10s %10s %10s\n" "PyTorch $precision" "$(field train_seconds) s" "$(field predict_seconds) s" "$(echo "$t2 - $t1" | bc)" "$t_p" "$t_r" "$t_f" "$t_a"
echo "ctdl's own conlleval f1 on the same file: $own_f1 (seqeval: $c_f)"
awk -v a="$own_f1" -v b="$c_f" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-4) }' \
  || { echo "compare_ner_finetune: ctdl's conlleval f1 $own_f1 and seqeval's $c_f disagree" >&2; exit 1; }

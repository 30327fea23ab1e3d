#!/usr/bin/env bash
# ner_span_classifier --task_name=ner --device=cuda against --device=cpu (tiny BERT from
# random initialisation, dropout on, 120 sentences of BC5CDR-chem's train.tsv and 40 of its
# devel.tsv, M = 32, so that long sentences are cut into several features; fp32):
#   1. train (2 epochs), evaluate and predict on each device: eval_loss within 1e-4
#      (relative) of the CPU's; NER_result_conll.txt the same words and gold labels, and
#      the same predicted labels but for near ties (at most 1 word in 200: logits 1e-5
#      apart may rank two labels either way); the GPU-trained model loads on the CPU and
#      predicts the GPU's labels (the same allowance) with its eval_loss. (This tiny model
#      from random weights still labels every word O after 2 epochs, so eval_loss, the
#      mean cross-entropy over the 957 words, carries the comparison);
#   2. --precision=bf16 and --use_fp16 (fp16 with loss scaling) train and predict on the
#      GPU: the log names the precision, eval_loss is finite, every word is predicted;
#   3. the default scheme (--ner_scheme=tensorflow) on both devices: eval_loss within 1e-4
#      and the same labels but for near ties.
# Runs 1 and 2 use --ner_scheme=first_piece, the scheme their allowances were set for.
# Usage: ner_gpu_test.sh <program> <shared data> <work dir>
# Exit 77 (skipped) without a GPU (nvidia-smi finds none; CTDL_GPUS, when set, is the count) or without the shared data.
set -uo pipefail
prog=$1 shared=$2 work=$3
data=$shared/bc5cdr-chem vocab=$shared/vocab/bert-base-cased-vocab.txt
[ -f "$data/train.tsv" ] && [ -f "$data/devel.tsv" ] && [ -f "$vocab" ] || { echo "SKIPPED: no shared data at $shared"; exit 77; }
gpus=${CTDL_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}  # CTDL_GPUS: run.sh's count
[ "${gpus:-0}" -gt 0 ] || { echo "SKIPPED: no GPU (nvidia-smi lists none)"; exit 77; }
rm -rf "$work" && mkdir -p "$work/data"
sentences() { awk -v n="$2" '{ print } /^\r?$/ { if (++k == n) exit }' "$1"; }  # the first n of a CoNLL file
sentences "$data/train.tsv" 120 >"$work/data/train.tsv"
sentences "$data/devel.tsv" 40 >"$work/data/devel.tsv"
cp "$work/data/devel.tsv" "$work/data/test.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64}
JSON
fail() { echo "FAILED: $*"; exit 1; }
# BioBERT's PyTorch scheme, as calibrated below (the devices run the default scheme's parts too:
# the same batcher, loss and reading on the host).
common=(--task_name=ner --ner_scheme=first_piece --vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased
        --data_dir="$work/data" --max_seq_length=32 --eval_batch_size=8 --predict_batch_size=8)
train=(--do_train --do_eval --do_predict "${common[@]}" --num_train_epochs=2 --learning_rate=5e-4
       --train_batch_size=16 --log_every=5 --seed=11)
eval_loss() { grep '^eval_loss' "$1/eval_results.txt" | cut -d' ' -f3; }
same_words() {  # same_words <run> <run>: both NER_result_conll.txt hold the same words and gold labels
  cmp -s <(cut -d' ' -f1,2 "$1/NER_result_conll.txt") <(cut -d' ' -f1,2 "$2/NER_result_conll.txt") \
    || fail "$1 and $2: NER_result_conll.txt holds other words or gold labels"
}
labels_differ() {  # labels_differ <run> <run>: the words whose predicted label differs
  paste -d' ' "$1/NER_result_conll.txt" "$2/NER_result_conll.txt" | awk 'NF == 6 && $3 != $6 { n++ } END { print n + 0 }'
}
# within_allowance <differing words>: at most 1 word in 200 (and at least 1 allowed).
words=$(grep -c '[^[:space:]]' "$work/data/test.tsv")
within_allowance() { [ "$1" -le $(((words + 199) / 200)) ]; }
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; exit !(a != "" && d <= 1e-4 * s) }'; }

# 1. The same run on both devices.
for device in cpu cuda; do
  "$prog" "${train[@]}" --device=$device --output_dir="$work/$device" >"$work/$device.out" 2>"$work/$device.err" \
    || { cat "$work/$device.err"; fail "the --device=$device NER run failed"; }
done
grep -q "on cuda" "$work/cuda.err" || fail "the GPU run does not say it ran on the GPU: $(grep -m1 '^model:' "$work/cuda.err")"
lc=$(eval_loss "$work/cpu") lg=$(eval_loss "$work/cuda")
close "$lg" "$lc" || fail "eval_loss $lg on the GPU, $lc on the CPU"
same_words "$work/cpu" "$work/cuda"
n=$(labels_differ "$work/cpu" "$work/cuda")
within_allowance "$n" || fail "$n of $words words predicted otherwise on the GPU than on the CPU"
"$prog" --do_eval --do_predict "${common[@]}" --init_checkpoint="$work/cuda" --output_dir="$work/reload" \
  >/dev/null 2>"$work/reload.err" || { cat "$work/reload.err"; fail "the GPU-trained NER model does not load on the CPU"; }
lr=$(eval_loss "$work/reload")
close "$lr" "$lg" || fail "the GPU-trained model's eval_loss on the CPU is $lr, on the GPU $lg"
same_words "$work/cuda" "$work/reload"
n2=$(labels_differ "$work/cuda" "$work/reload")
within_allowance "$n2" || fail "the GPU-trained model predicts $n2 of $words words otherwise on the CPU"
echo "1. --task_name=ner --device=cuda = --device=cpu: eval_loss $lg (CPU $lc), $n of $words words labelled otherwise;" \
  "reloaded on the CPU: eval_loss $lr, $n2 words otherwise; F1 $(grep '^f1' "$work/cuda/eval_results.txt" | cut -d' ' -f3)"

# 2. bf16 and fp16 on the GPU.
for precision in bf16 fp16; do
  flag=--precision=$precision
  [ $precision = fp16 ] && flag=--use_fp16
  "$prog" "${train[@]}" --device=cuda "$flag" --output_dir="$work/$precision" >/dev/null 2>"$work/$precision.err" \
    || { cat "$work/$precision.err"; fail "the $precision NER GPU run failed"; }
  grep -q "precision $precision" "$work/$precision.err" || fail "$flag: not $precision: $(grep -m1 '^model:' "$work/$precision.err")"
  l=$(eval_loss "$work/$precision")
  awk -v l="$l" 'BEGIN { exit !(l + 0 == l && l > 0 && l < 1e30) }' || fail "$flag on the GPU: eval_loss '$l'"
  same_words "$work/cuda" "$work/$precision"
  echo "2. $flag on the GPU: eval_loss $l (fp32: $lg)"
done

# 3. The default scheme (tensorflow: 7 classes, every position trained in batches M wide)
#    on both devices: eval_loss within 1e-4 (relative), the same words, the predicted
#    labels but for near ties (its reading may shift the labels after a flipped position,
#    so the allowance is counted over differing words all the same).
tf_train=("${train[@]/--ner_scheme=first_piece/--ner_scheme=tensorflow}")
for device in cpu cuda; do
  "$prog" "${tf_train[@]}" --device=$device --output_dir="$work/tf_$device" >/dev/null 2>"$work/tf_$device.err" \
    || { cat "$work/tf_$device.err"; fail "the --ner_scheme=tensorflow --device=$device run failed"; }
done
grep -q "token classification over 7 classes" "$work/tf_cuda.err" || fail "tensorflow scheme: not 7 classes on the GPU"
tc=$(eval_loss "$work/tf_cpu") tg=$(eval_loss "$work/tf_cuda")
close "$tg" "$tc" || fail "tensorflow scheme: eval_loss $tg on the GPU, $tc on the CPU"
same_words "$work/tf_cpu" "$work/tf_cuda"
n=$(labels_differ "$work/tf_cpu" "$work/tf_cuda")
within_allowance "$n" || fail "tensorflow scheme: $n of $words words predicted otherwise on the GPU than on the CPU"
echo "3. --ner_scheme=tensorflow: eval_loss $tg on the GPU, $tc on the CPU; $n words differ"
echo "PASSED"

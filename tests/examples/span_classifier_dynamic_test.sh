#!/usr/bin/env bash
# ner_span_classifier on a BERT shape with no static family: TinyBERT's hidden/heads/
# intermediate 312/12/1200 (one layer, the 89-token fixture vocabulary) trains a few steps,
# evaluates, predicts, and predicts again from its own output directory, on the
# runtime-shaped family bert::Dynamic, which the log names. A static shape whose family this
# build did not compile falls back to it too. In a build without Dynamic, both are the
# error that names the families built.
#
# Usage: span_classifier_dynamic_test.sh <ner_span_classifier> <vocab.txt> <work dir> <compiled families, ", "-separated>
set -uo pipefail
prog=$1 vocab=$2 work=$3 families=$4
rm -rf "$work" && mkdir -p "$work/data" "$work/labels"
fail() { echo "FAILED: $*"; exit 1; }
has_family() { [[ ", $families, " == *", $1, "* ]]; }

n_vocab=$(wc -l <"$vocab")
config() {  # config <hidden> <heads> <intermediate> > file
  printf '{"vocab_size": %s, "hidden_size": %s, "num_hidden_layers": 1, "num_attention_heads": %s,\n "intermediate_size": %s, "max_position_embeddings": 32}\n' \
    "$n_vocab" "$1" "$2" "$3"
}
config 312 12 1200 >"$work/tinybert_config.json"
config 256 4 1024 >"$work/mini_config.json"
printf 'che\ndis\nggp\norg\nout\n' >"$work/labels/labels.txt"
# Span rows (id, type, label, left context, span, right context) from the fixture's words.
labels=(che dis ggp org out) words=(hello world Hello World unaffable a b c the of TNF Ca thymidine naloxone)
rows() {  # rows <count> <seed>
  for ((i = 0; i < $1; i++)); do
    local k=$(((i * 7 + $2) % ${#words[@]}))
    printf 'd%s\tT%s\t%s\t%s %s\t%s\t%s %s\n' "$i" "$i" "${labels[$(((i + $2) % 5))]}" "${words[$k]}" "${words[$(((k + 3) % ${#words[@]}))]}" \
      "${words[$(((k + 5) % ${#words[@]}))]}" "${words[$(((k + 1) % ${#words[@]}))]}" "${words[$(((k + 2) % ${#words[@]}))]}"
  done
}
rows 32 1 >"$work/data/train.tsv"
rows 8 2 >"$work/data/dev.tsv"
rows 8 3 >"$work/data/test.tsv"
common=(--vocab_file="$vocab" --labels_dir="$work/labels" --data_dir="$work/data" --max_seq_length=16 --cased)

if ! has_family Dynamic; then
  "$prog" --do_train "${common[@]}" --bert_config_file="$work/tinybert_config.json" --output_dir="$work/out" \
    >"$work/stdout" 2>"$work/stderr"; rc=$?
  [ $rc = 1 ] || fail "exit $rc (wanted 1) for 312/12/1200 in a build without Dynamic: $(cat "$work/stderr")"
  grep -qF "compiled only the families $families, not it nor the runtime-shaped family Dynamic" "$work/stderr" \
    || fail "no families message: $(cat "$work/stderr")"
  echo "ner_span_classifier: a build without Dynamic ($families) refuses 312/12/1200, naming the families"
  exit 0
fi

out=$work/out
"$prog" --do_train --do_eval --do_predict "${common[@]}" --bert_config_file="$work/tinybert_config.json" --output_dir="$out" \
  --train_batch_size=8 --num_train_epochs=1 --learning_rate=1e-3 --log_every=1 \
  >"$work/stdout" 2>"$work/stderr" || { cat "$work/stderr"; fail "training 312/12/1200 failed"; }
grep -qF "no compiled BERT family for 312/12/1200 (hidden/heads/intermediate of $work/tinybert_config.json): using the runtime-shaped family" \
  "$work/stderr" || fail "the log does not name the runtime-shaped family: $(cat "$work/stderr")"
grep -qF "model: BERT 312/12/1200 (runtime-shaped family) x 1 layers" "$work/stderr" || fail "no model line: $(cat "$work/stderr")"
[ "$(grep -c '"type":"train"' "$out/metrics.jsonl")" = 4 ] || fail "not 4 training steps in $out/metrics.jsonl: $(cat "$out/metrics.jsonl")"
! grep -qi 'nan\|inf' "$out/metrics.jsonl" || fail "a loss that is not finite: $(cat "$out/metrics.jsonl")"
[ "$(wc -l <"$out/test_results.tsv")" = 8 ] || fail "test_results.tsv rows"
grep -q eval_accuracy "$out/eval_results.txt" || fail "no eval_accuracy"
# The saved model (widths 312, 1200; 12 heads from the config) predicts the same again.
"$prog" --do_predict "${common[@]}" --init_checkpoint="$out" --bert_config_file="$out/bert_config.json" --output_dir="$work/again" \
  >"$work/stdout2" 2>"$work/stderr2" || { cat "$work/stderr2"; fail "predicting from $out failed"; }
cmp -s "$out/test_results.tsv" "$work/again/test_results.tsv" || fail "predictions differ after reloading $out"

# A static shape whose family this build did not compile runs on Dynamic, saying why.
if ! has_family Mini; then
  "$prog" --do_eval "${common[@]}" --bert_config_file="$work/mini_config.json" --output_dir="$work/mini" \
    >"$work/stdout3" 2>"$work/stderr3" || { cat "$work/stderr3"; fail "eval of 256/4/1024 on Dynamic failed"; }
  grep -qF "did not compile the BERT family of 256/4/1024" "$work/stderr3" || fail "no fallback message: $(cat "$work/stderr3")"
  grep -qF "model: BERT 256/4/1024 (runtime-shaped family)" "$work/stderr3" || fail "no model line: $(cat "$work/stderr3")"
fi
echo "ner_span_classifier: 312/12/1200 trained, evaluated and predicted on the runtime-shaped family"

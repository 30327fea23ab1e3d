#!/usr/bin/env bash
# ner_span_classifier end to end on a slice of the shared consensus rows (tiny BERT,
# M = 32, one epoch), then its input checks. Exit 77 (skipped) without the shared data.
set -uo pipefail
prog=$1 shared=$2 work=$3
data=$shared/consensus-example vocab=$shared/vocab/bert-base-cased-vocab.txt
[ -f "$data/dev.tsv" ] && [ -f "$vocab" ] || { echo "SKIPPED: no shared data at $shared"; exit 77; }
rm -rf "$work" && mkdir -p "$work/data"
head -n 160 "$data/dev.tsv" >"$work/data/train.tsv"
tail -n 40 "$data/dev.tsv" >"$work/data/dev.tsv"
cp "$work/data/dev.tsv" "$work/data/test.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64}
JSON
fail() { echo "FAILED: $*"; exit 1; }
common=(--vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased --data_dir="$work/data"
        --labels_dir="$data" --max_seq_length=32)

"$prog" --do_prepare --do_train --do_eval --do_predict --dump_features "${common[@]}" --output_dir="$work/out" \
  --train_batch_size=16 --num_train_epochs=1 --learning_rate=3e-4 --save_checkpoints_steps=5 --log_every=5 \
  >"$work/stdout" 2>"$work/stderr" || { cat "$work/stderr"; fail "the run failed"; }
out=$work/out
for f in model.safetensors bert_config.json vocab.txt labels.txt eval_results.txt test_results.tsv \
         test_output_labels.txt metrics.jsonl training_curves.svg train_features.jsonl checkpoint-5/model.safetensors; do
  [ -s "$out/$f" ] || fail "no $out/$f"
done
grep -q "no --init_checkpoint: the model starts from random initialisation" "$work/stderr" || fail "no random-init notice"
grep -q "throughput without overhead" "$work/stderr" || fail "no throughput line"
grep -q "latency per batch" "$work/stderr" || fail "no latency percentiles"
keys=$(sed -n '/ = /p' "$out/eval_results.txt" | cut -d' ' -f1 | tr '\n' ' ')
[ "$keys" = "eval_accuracy eval_loss f1-macro f1-score f1-weighted global_step majority_baseline precision precision_mac precision_weighted recall recall_mac recall_weighted " ] \
  || fail "eval_results.txt keys: $keys"
grep -q "confusion matrix" "$out/eval_results.txt" || fail "no confusion matrix"
[ "$(wc -l <"$out/test_results.tsv")" = 40 ] || fail "test_results.tsv rows"
[ "$(awk -F'\t' '{print NF}' "$out/test_results.tsv" | sort -u)" = 5 ] || fail "test_results.tsv columns"
[ "$(wc -l <"$out/test_output_labels.txt")" = 40 ] || fail "test_output_labels.txt rows"
[ "$(wc -l <"$out/train_features.jsonl")" = 160 ] || fail "train_features.jsonl rows"
grep -q '"type":"eval"' "$out/metrics.jsonl" || fail "no eval record in metrics.jsonl"

# The output directory is a valid --init_checkpoint; evaluation from it gives the same accuracy.
"$prog" --do_eval "${common[@]}" --init_checkpoint="$out" --output_dir="$work/out2" >"$work/stdout2" 2>"$work/stderr2" \
  || { cat "$work/stderr2"; fail "eval from the output directory failed"; }
[ "$(grep eval_accuracy "$out/eval_results.txt")" = "$(grep eval_accuracy "$work/out2/eval_results.txt")" ] \
  || fail "accuracy differs after reloading"

# Input checks: one clear message, before any work.
expect() {  # expect <exit code> <message part> args...
  local code=$1 msg=$2; shift 2
  "$prog" "$@" >"$work/e.out" 2>"$work/e.err"; local rc=$?
  [ $rc = "$code" ] || fail "exit $rc (wanted $code) for $*: $(cat "$work/e.err")"
  grep -qF -- "$msg" "$work/e.err" || fail "no '$msg' in: $(cat "$work/e.err")"
}
expect 2 "unknown flag --do_trian; did you mean --do_train?" --do_trian
expect 1 "nothing to do" "${common[@]}" --output_dir="$work/e"
expect 1 "is above max_position_embeddings 64" --do_eval "${common[@]}" --output_dir="$work/e" --max_seq_length=128
expect 1 "no such file (--vocab_file)" --do_eval "${common[@]}" --output_dir="$work/e" --vocab_file="$work/none.txt"
expect 1 "the --replace_span token '[NOPE]' is not in the vocabulary" --do_eval "${common[@]}" --output_dir="$work/e" --replace_span="[NOPE]"
expect 1 "test.tsv: no such file (needed by --do_predict)" --do_predict "${common[@]}" --output_dir="$work/e" --data_dir="$work"
expect 1 "data-parallel training is not built yet" --do_train --horovod "${common[@]}" --output_dir="$work/e"
sed 's/"hidden_size": 128/"hidden_size": 96/' "$work/bert_config.json" >"$work/odd_config.json"
expect 1 "no compiled BERT shape family for hidden_size 96" --do_eval "${common[@]}" --output_dir="$work/e" --bert_config_file="$work/odd_config.json"
printf 'che\tonly three\tcolumns\n' >"$work/bad/dev.tsv" 2>/dev/null || { mkdir -p "$work/bad"; printf 'che\tonly three\tcolumns\n' >"$work/bad/dev.tsv"; }
expect 1 "dev.tsv:1: has 3 columns" --do_eval "${common[@]}" --output_dir="$work/e" --data_dir="$work/bad"
echo "ner_span_classifier: end to end and input checks passed"

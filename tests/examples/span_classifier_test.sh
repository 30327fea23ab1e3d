#!/usr/bin/env bash
# ner_span_classifier end to end on a slice of the shared consensus rows (tiny BERT,
# M = 32, one epoch), then its input checks, the case flags, and outputs that must be complete
# or left as they were (a file-size limit, stdout on /dev/full, a bad input row, a killed
# run's temporaries, NaN weights). Exit 77 (skipped) without the shared data.
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
         test_output_labels.txt metrics.jsonl training_curves.svg train_features.jsonl checkpoint-10/model.safetensors checkpoint-10/optimizer.safetensors \
         checkpoint-10/state.json checkpoint-10/manifest.json checkpoint-10/bert_config.json; do
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
expect 1 "--shard_optimizer and --bucket_size_mb are settings of --distributed" --do_train --shard_optimizer "${common[@]}" --output_dir="$work/e"
# (A shape with no compiled family runs on the runtime-shaped one: span_classifier_dynamic_test.sh.)
sed 's/"hidden_size": 128/"hidden_size": 96/; s/"num_attention_heads": 2/"num_attention_heads": 5/' "$work/bert_config.json" >"$work/odd_config.json"
expect 1 "odd_config.json: hidden_size 96 is not a multiple of num_attention_heads 5" --do_eval "${common[@]}" --output_dir="$work/e" --bert_config_file="$work/odd_config.json"
printf 'che\tonly three\tcolumns\n' >"$work/bad/dev.tsv" 2>/dev/null || { mkdir -p "$work/bad"; printf 'che\tonly three\tcolumns\n' >"$work/bad/dev.tsv"; }
expect 1 "dev.tsv:1: has 3 columns" --do_eval "${common[@]}" --output_dir="$work/e" --data_dir="$work/bad"
# --do_lower_case, the original's spelling of --cased=false; a case flag that contradicts
# the vocabulary is a warning naming both.
nocase=(--vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --data_dir="$work/data"
        --labels_dir="$data" --max_seq_length=32 --init_checkpoint="$out")
expect 2 "--cased=true and --do_lower_case=true contradict each other" --do_eval "${nocase[@]}" --cased --do_lower_case --output_dir="$work/e"
expect 0 "warning: --do_lower_case=true lower-cases the text, but $vocab is a cased vocabulary" \
  --do_eval "${nocase[@]}" --do_lower_case --output_dir="$work/lc"
"$prog" --do_eval "${nocase[@]}" --do_lower_case=false --output_dir="$work/lc" >"$work/e.out" 2>"$work/e.err" \
  || fail "--do_lower_case=false: $(cat "$work/e.err")"
! grep -q "cased vocabulary" "$work/e.err" || fail "a case warning for --do_lower_case=false: $(cat "$work/e.err")"
[ "$(grep eval_accuracy "$out/eval_results.txt")" = "$(grep eval_accuracy "$work/lc/eval_results.txt")" ] \
  || fail "--do_lower_case=false is not --cased=true"
# --use_fp16, the original's flag: bf16 on the CPU (fp16 on a GPU: span_classifier_gpu_test.sh).
expect 0 "parameters, precision bf16" --do_eval "${nocase[@]}" --cased --use_fp16 --output_dir="$work/fp16"
# Without a case flag the text keeps its case, as the original's do_lower_case=False: the
# cased run's accuracy, no case warning.
"$prog" --do_eval "${nocase[@]}" --output_dir="$work/default_case" >"$work/e.out" 2>"$work/e.err" \
  || fail "no case flag: $(cat "$work/e.err")"
! grep -q "warning: --" "$work/e.err" || fail "a case warning without a case flag: $(cat "$work/e.err")"
[ "$(grep eval_accuracy "$out/eval_results.txt")" = "$(grep eval_accuracy "$work/default_case/eval_results.txt")" ] \
  || fail "the default case is not --cased=true"

# The other defaults are the original script's too (run_ner_consensus.py): training batches
# of 64, evaluation and prediction batches of 16, learning rate 5e-6, 10 epochs, a checkpoint
# every 10000 steps; its TPU flags --iterations_per_loop and --master are accepted (a note
# says they do nothing), --task_name is case-blind as there.
"$prog" --help >"$work/help" 2>&1
for d in "train_batch_size (default 64)" "eval_batch_size (default 16)" "predict_batch_size (default 16)" \
         "learning_rate (default 5e-06)" "num_train_epochs (default 10)" "save_checkpoints_steps (default 10000)" \
         "cased (default true)" "iterations_per_loop (default 1000)" "master"; do
  grep -qF -- "--$d" "$work/help" || fail "--help has no '--$d'"
done
head -n 64 "$work/data/train.tsv" >"$work/defaults_train.tsv"
mkdir -p "$work/defaults_data" && cp "$work/defaults_train.tsv" "$work/defaults_data/train.tsv"
expect 0 "training: 64 rows, 10 steps of 64 (10 epochs), peak learning rate 5e-06, warmup proportion 0.1, a checkpoint every 10000 steps and at the end" \
  --do_train --task_name=Consensus "${common[@]}" --data_dir="$work/defaults_data" --output_dir="$work/defaults" \
  --iterations_per_loop=100 --master=grpc://unused
grep -qF -- "--iterations_per_loop and --master have no effect" "$work/e.err" || fail "no note on the TPU flags: $(cat "$work/e.err")"

# Outputs are complete or left as they were. Files of an earlier complete run:
snapshot() { (cd "$1" && md5sum model.safetensors metrics.jsonl eval_results.txt test_results.tsv test_output_labels.txt training_curves.svg); }
before=$(snapshot "$out")
no_temporaries() { ! find "$out" -name '*.tmp.*' | grep -q . || fail "temporaries left after $1: $(find "$out" -name '*.tmp.*')"; }
# A file-size limit (as a full disk; 1 KiB, below test_results.tsv's size, or none at all):
# the write fails naming the file, exit 1, nothing replaced. The messages go through a pipe,
# which the limit does not cut.
limited() {  # limited <KiB> args...: runs the program under `ulimit -f`; sets rc
  local kib=$1; shift
  (ulimit -f "$kib"; exec "$prog" "$@" 2>&1 >/dev/null) | cat >"$work/e.err"; rc=${PIPESTATUS[0]}
}
limited 1 --do_predict "${common[@]}" --init_checkpoint="$out" --output_dir="$out"
[ $rc = 1 ] || fail "exit $rc for --do_predict past a file-size limit: $(cat "$work/e.err")"
grep -qF "$out/test_results.tsv: write failed (File too large" "$work/e.err" || fail "file-size limit message: $(cat "$work/e.err")"
[ "$(snapshot "$out")" = "$before" ] || fail "a failed --do_predict changed the earlier outputs"
no_temporaries "--do_predict past a file-size limit"
limited 0 --do_eval "${common[@]}" --init_checkpoint="$out" --output_dir="$out"
[ $rc = 1 ] && grep -qF "write failed (File too large" "$work/e.err" || fail "exit $rc for --do_eval past a file-size limit: $(cat "$work/e.err")"
[ "$(snapshot "$out")" = "$before" ] || fail "a failed --do_eval changed the earlier outputs"
no_temporaries "--do_eval past a file-size limit"
# The results printed on stdout count too.
if [ -w /dev/full ]; then
  "$prog" --do_eval "${common[@]}" --init_checkpoint="$out" --output_dir="$work/full" >/dev/full 2>"$work/e.err"; rc=$?
  [ $rc = 1 ] && grep -qF "stdout: write failed (No space left on device)" "$work/e.err" || fail "exit $rc with stdout on /dev/full: $(cat "$work/e.err")"
fi
# A bad input row stops --do_train before anything of the earlier run is replaced.
mkdir -p "$work/bad_dev" && cp "$work/data/train.tsv" "$work/bad_dev/" && { head -n 2 "$work/data/dev.tsv"; printf 'che\tonly three\tcolumns\n'; } >"$work/bad_dev/dev.tsv"
expect 1 "dev.tsv:3: has 3 columns" --do_train --do_eval "${common[@]}" --data_dir="$work/bad_dev" --output_dir="$out" --train_batch_size=16 --num_train_epochs=1
[ "$(snapshot "$out")" = "$before" ] || fail "a --do_train stopped by a bad dev.tsv row changed the earlier outputs"
# What a killed run left is swept at the next start; a good run replaces the outputs whole.
sleep 0 & wait $!; dead=$!
touch "$out/test_results.tsv.tmp.$dead" "$out/checkpoint-10/model.safetensors.tmp.$dead"
"$prog" --do_predict "${common[@]}" --init_checkpoint="$out" --output_dir="$out" >"$work/e.out" 2>"$work/e.err" || fail "predict: $(cat "$work/e.err")"
grep -qF "removed $out/test_results.tsv.tmp.$dead (left by an interrupted run)" "$work/e.err" || fail "no sweep message: $(cat "$work/e.err")"
no_temporaries "a run after a killed one"
[ "$(wc -l <"$out/test_results.tsv")" = 40 ] || fail "test_results.tsv rows after predicting again"

# --write_npy: test_logits.npy (rows x labels) and test_pooled.npy (rows x hidden), float32,
# beside test_results.tsv, which stays what it is without the flag; NumPy checks them.
expect 1 "--write_npy writes what --do_predict computes: give --do_predict too" --do_eval --write_npy "${common[@]}" --output_dir="$work/e"
"$prog" --do_predict --write_npy "${common[@]}" --init_checkpoint="$out" --output_dir="$work/npy" >"$work/e.out" 2>"$work/e.err" \
  || fail "--write_npy: $(cat "$work/e.err")"
grep -qF "test_logits.npy, test_pooled.npy" "$work/e.err" || fail "--write_npy does not say what it wrote: $(cat "$work/e.err")"
cmp -s "$out/test_results.tsv" "$work/npy/test_results.tsv" || fail "--write_npy changed test_results.tsv"
[ -z "$(find "$work/npy" -name '*.tmp.*')" ] || fail "--write_npy left temporaries: $(ls "$work/npy")"
if python3 -c "import numpy" 2>/dev/null; then
  python3 - "$work/npy" <<'PY' || fail "the .npy files of --write_npy do not match test_results.tsv"
import sys
import numpy as np
d = sys.argv[1]
logits = np.load(d + "/test_logits.npy", allow_pickle=False)
pooled = np.load(d + "/test_pooled.npy", allow_pickle=False)
probs = np.loadtxt(d + "/test_results.tsv", delimiter="\t", ndmin=2)
assert logits.dtype == np.float32 and logits.shape == probs.shape == (40, 5), (logits.dtype, logits.shape, probs.shape)
assert pooled.dtype == np.float32 and pooled.shape == (40, 128), (pooled.dtype, pooled.shape)
z = logits.astype(np.float64)
softmax = np.exp(z - z.max(axis=1, keepdims=True))
softmax /= softmax.sum(axis=1, keepdims=True)
err = np.abs(softmax - probs).max()
assert err < 1e-5, f"softmax(test_logits.npy) differs from test_results.tsv by {err}"
assert np.all(np.abs(pooled) < 1) and np.unique(pooled, axis=0).shape[0] > 1, "test_pooled.npy is not tanh pooler output of distinct rows"
print(f"--write_npy: logits {logits.shape}, pooled {pooled.shape}, max |softmax - tsv| = {err:.2e}")
PY
else
  echo "NOTE: python3 has no numpy (Debian: python3-numpy): the contents of the --write_npy files are not checked"
fi

# NaN weights: an error naming the first row, and no results.
mkdir -p "$work/nan" && cp "$out"/{model.safetensors,bert_config.json,vocab.txt,labels.txt} "$work/nan/"
st=$work/nan/model.safetensors
hlen=$(od -An -t u8 -N8 "$st" | tr -d ' ')
bias_at=$(head -c $((8 + hlen)) "$st" | tail -c "$hlen" | grep -o '"classifier.bias":{[^}]*}' | grep -o 'data_offsets":\[[0-9]*' | grep -o '[0-9]*$')
[ -n "$bias_at" ] || fail "no classifier.bias in $st"
printf '\x00\x00\xc0\x7f' | dd of="$st" bs=1 seek=$((8 + hlen + bias_at)) conv=notrunc status=none  # NaN
expect 1 "$work/data/test.tsv:1: the model's logits for this row are not finite (NaN or infinite; 40 of 40 rows)" \
  --do_predict "${common[@]}" --init_checkpoint="$work/nan" --output_dir="$work/nan_out"
[ ! -e "$work/nan_out/test_results.tsv" ] || fail "test_results.tsv written from NaN logits"
echo "ner_span_classifier: end to end and input checks passed"

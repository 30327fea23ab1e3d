#!/usr/bin/env bash
# ner_span_classifier --task_name=ner (BioBERT's run_ner.py) end to end on slices of the
# shared BC5CDR chemical NER data (tiny BERT, M = 32: long sentences are cut into several
# features): train, evaluate, predict; the labels taken from train.tsv and kept with the
# model; NER_result_conll.txt holds every word of test.tsv once, in order, with its gold
# label; the reports' counts agree with it; the output directory reloads with the same
# scores, and predicts the same with batches padded to M (--pad_to_max_length); a run
# killed after a checkpoint resumes to the same model (and refuses another batch width or
# grouping); --group_by_length with --pad_to_max_length is refused (these with
# --ner_scheme=first_piece); the default scheme, tensorflow, trains 7 classes and reloads
# under that scheme alone;
# under mpiexec -np 2 (when given) prediction writes one process's files byte for byte;
# and the task's input errors (a GPU that is not there among them). Exit 77 (skipped) without the shared data.
# Usage: ner_test.sh <program> <shared data> <work dir> ["<mpiexec and its flags>" <-n flag>]
set -uo pipefail
prog=$1 shared=$2 work=$3 mpiexec=${4:-} np_flag=${5:--n}
data=$shared/bc5cdr-chem vocab=$shared/vocab/bert-base-cased-vocab.txt
[ -f "$data/train.tsv" ] && [ -f "$data/devel.tsv" ] && [ -f "$vocab" ] || { echo "SKIPPED: no shared data at $shared"; exit 77; }
rm -rf "$work" && mkdir -p "$work/data"
# The first n sentences of a CoNLL file (its blank lines may end in CR).
sentences() { awk -v n="$2" '{ print } /^\r?$/ { if (++k == n) exit }' "$1"; }
sentences "$data/train.tsv" 240 >"$work/data/train.tsv"
sentences "$data/devel.tsv" 70 >"$work/data/devel.tsv"
cp "$work/data/devel.tsv" "$work/data/test.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64}
JSON
fail() { echo "FAILED: $*"; exit 1; }
base=(--task_name=ner --vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased
      --data_dir="$work/data" --max_seq_length=32)
# Most checks run BioBERT's PyTorch scheme; the default (the TensorFlow scheme) has its own below.
common=("${base[@]}" --ner_scheme=first_piece)
out=$work/out
"$prog" --do_prepare --do_train --do_eval --do_predict "${common[@]}" --output_dir="$out" \
  --train_batch_size=16 --num_train_epochs=3 --learning_rate=1e-3 --log_every=5 \
  >"$work/stdout" 2>"$work/stderr" || { cat "$work/stderr"; fail "the run failed"; }
for f in model.safetensors bert_config.json vocab.txt labels.txt eval_results.txt test_results.txt \
         NER_result_conll.txt metrics.jsonl train.features devel.features test.features; do
  [ -s "$out/$f" ] || fail "no $out/$f"
done
[ "$(tr '\n' ' ' <"$out/labels.txt")" = "B I O " ] || fail "labels.txt: $(cat "$out/labels.txt")"
grep -q "labels: B, I, O (those of $work/data/train.tsv" "$work/stderr" || fail "no labels notice"
grep -q "runtime-shaped family" "$work/stderr" || fail "no model line"
grep -q "latency per batch" "$work/stderr" || fail "no latency percentiles"
# NVIDIA's run_ner.py saves a checkpoint every 1000 steps (run_ner_consensus.py every 10000).
grep -q "a checkpoint every 1000 steps and at the end" "$work/stderr" || fail "not NVIDIA's checkpoint default: $(grep '^training' "$work/stderr")"
keys=$(sed -n '/ = /p' "$out/eval_results.txt" | cut -d' ' -f1 | tr '\n' ' ')
[ "$keys" = "eval_accuracy eval_loss f1 global_step precision recall " ] || fail "eval_results.txt keys: $keys"

# Every word of test.tsv once, in order, with its gold label; a blank line after each sentence.
words=$(grep -cv $'^\r\\?$' "$work/data/test.tsv")
blank=$(grep -c $'^\r\\?$' "$work/data/test.tsv")
[ "$(grep -cv '^$' "$out/NER_result_conll.txt")" = "$words" ] || fail "NER_result_conll.txt: not $words words"
[ "$(grep -c '^$' "$out/NER_result_conll.txt")" = "$blank" ] || fail "NER_result_conll.txt: not $blank sentences"
diff <(tr -d '\r' <"$work/data/test.tsv" | awk 'NF { print $1, $NF }') \
     <(awk 'NF { print $1, $2 }' "$out/NER_result_conll.txt") >/dev/null || fail "words or gold labels differ from test.tsv"
[ "$(awk 'NF { print $3 }' "$out/NER_result_conll.txt" | sort -u | tr '\n' ' ')" != "" ] || fail "no predictions"
# conlleval's counts against the file: processed <words> tokens with <B count> phrases.
gold_b=$(awk 'NF && $2 == "B"' "$out/NER_result_conll.txt" | wc -l)
head -n 1 "$out/test_results.txt" | grep -q "^processed $words tokens with $gold_b phrases; " \
  || fail "test_results.txt: $(head -n 1 "$out/test_results.txt") (wanted $words tokens, $gold_b phrases)"
right=$(awk 'NF && $2 == $3' "$out/NER_result_conll.txt" | wc -l)
accuracy=$(awk -v r="$right" -v n="$words" 'BEGIN { printf "%6.2f%%", 100 * r / n }')
grep -qF "accuracy: $accuracy;" "$out/test_results.txt" || fail "accuracy in test_results.txt is not $accuracy"
# It learned something: the mean training loss of the last records below the first's.
awk -F'"loss":' '/"type":"train"/ { split($2, v, ","); l[++n] = v[1] } END { exit !(n >= 3 && l[n] < 0.7 * l[1]) }' \
  "$out/metrics.jsonl" || fail "the training loss did not fall: $(grep -o '"loss":[0-9.e-]*' "$out/metrics.jsonl" | tr '\n' ' ')"
# devel = test here: the evaluation's entity line is the prediction's.
grep -qF "$(sed -n 2p "$out/test_results.txt")" "$out/eval_results.txt" || fail "eval and predict disagree"

# The output directory is a valid --init_checkpoint (labels.txt beside it): the same scores.
"$prog" --do_eval --do_predict "${common[@]}" --init_checkpoint="$out" --output_dir="$work/out2" \
  >"$work/stdout2" 2>"$work/stderr2" || { cat "$work/stderr2"; fail "eval from the output directory failed"; }
grep -q "labels: $out/labels.txt (beside --init_checkpoint" "$work/stderr2" || fail "labels not taken from the checkpoint"
cmp -s "$out/NER_result_conll.txt" "$work/out2/NER_result_conll.txt" || fail "predictions differ after reloading"
[ "$(grep '^f1 = ' "$out/eval_results.txt")" = "$(grep '^f1 = ' "$work/out2/eval_results.txt")" ] || fail "f1 differs after reloading"
# Batches padded to M in file order (--pad_to_max_length, as the original pads) predict
# what the default's batches, grouped by length and each as wide as its longest feature,
# predict (the loss up to rounding).
"$prog" --do_eval --do_predict "${common[@]}" --init_checkpoint="$out" --pad_to_max_length --output_dir="$work/out_padded" \
  >/dev/null 2>"$work/stderr_padded" || { cat "$work/stderr_padded"; fail "prediction with --pad_to_max_length failed"; }
cmp -s "$out/NER_result_conll.txt" "$work/out_padded/NER_result_conll.txt" || fail "--pad_to_max_length predicts otherwise"
awk -v a="$(grep '^eval_loss' "$work/out2/eval_results.txt" | cut -d' ' -f3)" \
  -v b="$(grep '^eval_loss' "$work/out_padded/eval_results.txt" | cut -d' ' -f3)" \
  'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d <= 1e-5 * b) }' || fail "--pad_to_max_length: another eval_loss"

# Killed after its first checkpoint (step 20) and resumed: the uninterrupted run's model, byte for byte.
train=(--do_train "${common[@]}" --train_batch_size=16 --num_train_epochs=3 --learning_rate=1e-3 --log_every=5
       --save_checkpoints_steps=20 --output_dir="$work/out_resume")
CTDL_TEST_KILL_AFTER_CHECKPOINT=1 "$prog" "${train[@]}" >"$work/stdout6" 2>"$work/stderr6"
[ $? = 137 ] || fail "the run was not killed after its first checkpoint: $(tail -n 3 "$work/stderr6")"
[ -s "$work/out_resume/checkpoint-20/manifest.json" ] && [ ! -e "$work/out_resume/model.safetensors" ] || fail "no checkpoint-20 alone"
# The labels found in train.tsv go with the checkpoint, and into --output_dir only with a model.
[ "$(tr '\n' ' ' <"$work/out_resume/checkpoint-20/labels.txt")" = "B I O " ] || fail "checkpoint-20/labels.txt"
[ ! -e "$work/out_resume/labels.txt" ] || fail "labels.txt in --output_dir before a model was saved"
ls "$work/out_resume"/labels.txt.pending.tmp.* >/dev/null 2>&1 || fail "the killed run left no pending labels: $(ls "$work/out_resume")"
"$prog" "${train[@]}" --resume >"$work/stdout7" 2>"$work/stderr7" || { cat "$work/stderr7"; fail "the resumed run failed"; }
grep -q "resumed from $work/out_resume/checkpoint-20 (step 20 of 66" "$work/stderr7" || fail "not resumed at step 20: $(cat "$work/stderr7")"
cmp -s "$out/model.safetensors" "$work/out_resume/model.safetensors" || fail "the resumed run's model differs from the uninterrupted one's"
grep -q "removed $work/out_resume/labels.txt.pending.tmp.[0-9]* (left by an interrupted run)" "$work/stderr7" \
  || fail "the killed run's pending labels not swept: $(cat "$work/stderr7")"
[ "$(tr '\n' ' ' <"$work/out_resume/labels.txt")" = "B I O " ] || fail "labels.txt after the resumed run"
! ls "$work/out_resume"/*.pending.* 2>/dev/null || fail "a pending file after the resumed run"
# The batches' width is a setting a resumed run must repeat (it changes the dropout masks).
"$prog" "${train[@]}" --resume --pad_to_max_length >/dev/null 2>"$work/stderr8" && fail "a resume that pads to M ran"
grep -qF -- "--pad_to_max_length=false, this run has --pad_to_max_length=true" "$work/stderr8" \
  || fail "resume with another --pad_to_max_length: $(cat "$work/stderr8")"
"$prog" "${train[@]}" --resume --group_by_length >/dev/null 2>"$work/stderr9" && fail "a resume grouped by length ran"
grep -qF -- "--group_by_length=false, this run has --group_by_length=true" "$work/stderr9" \
  || fail "resume with another --group_by_length: $(cat "$work/stderr9")"
"$prog" "${train[@]}" --group_by_length --pad_to_max_length >/dev/null 2>"$work/stderr10" && fail "--group_by_length with --pad_to_max_length ran"
grep -qF -- "--group_by_length groups rows so that batches need less padding; --pad_to_max_length pads them all" \
  "$work/stderr10" || fail "--group_by_length with --pad_to_max_length: $(cat "$work/stderr10")"

# Prediction over 2 ranks writes one process's files.
if [ -n "$mpiexec" ]; then
  read -r -a mpi <<<"$mpiexec"
  OMP_NUM_THREADS=1 "${mpi[@]}" "$np_flag" 2 "$prog" --distributed --do_predict "${common[@]}" --init_checkpoint="$out" \
    --predict_batch_size=4 --output_dir="$work/out_np2" >"$work/stdout3" 2>"$work/stderr3" \
    || { cat "$work/stderr3"; fail "prediction on 2 ranks failed"; }
  OMP_NUM_THREADS=1 "$prog" --do_predict "${common[@]}" --init_checkpoint="$out" --predict_batch_size=4 \
    --output_dir="$work/out_np1" >"$work/stdout4" 2>"$work/stderr4" || { cat "$work/stderr4"; fail "prediction failed"; }
  for f in NER_result_conll.txt test_results.txt; do
    cmp -s "$work/out_np1/$f" "$work/out_np2/$f" || fail "$f on 2 ranks differs from one process's"
  done
fi

# --skip_bad_rows: a bad sentence in test.tsv is left out (and listed); the rest line up.
mkdir -p "$work/skip"
{ sentences "$work/data/test.tsv" 3; printf 'bad line without a label\nlonely\n\n'; tail -n +1 "$work/data/test.tsv" | awk 'f; /^\r?$/ { if (++k == 3) f = 1 }'; } >"$work/skip/test.tsv"
"$prog" --do_predict --skip_bad_rows "${common[@]}" --data_dir="$work/skip" --init_checkpoint="$out" --output_dir="$work/out_skip" \
  >"$work/stdout5" 2>"$work/stderr5" || { cat "$work/stderr5"; fail "prediction with --skip_bad_rows failed"; }
grep -q "skipped 1 bad sentences of $work/skip/test.tsv" "$work/stderr5" || fail "no skip notice: $(cat "$work/stderr5")"
[ "$(sed -n 1p "$work/out_skip/test_skipped_rows.tsv")" = "$(printf 'line\treason\tsentence')" ] || fail "test_skipped_rows.tsv header"
[ "$(wc -l <"$work/out_skip/test_skipped_rows.tsv")" = 2 ] || fail "test_skipped_rows.tsv: not one sentence"
cmp -s "$out/NER_result_conll.txt" "$work/out_skip/NER_result_conll.txt" || fail "the good sentences' predictions differ"

# The default scheme, --ner_scheme=tensorflow (the TensorFlow run_ner.py of NVIDIA and
# BioBERT): 7 classes (padding, B, I, O, X, [CLS], [SEP]), every position trained in batches
# M wide, sentences cut at 30 words. It learns; its output directory (a 7-row classifier,
# labels.txt B I O) predicts the same when reloaded and is refused under the other scheme.
expect() {  # expect <exit code> <message part> args...
  local code=$1 msg=$2; shift 2
  "$prog" "$@" >"$work/e.out" 2>"$work/e.err"; local rc=$?
  [ $rc = "$code" ] || fail "exit $rc (wanted $code) for $*: $(cat "$work/e.err")"
  grep -qF -- "$msg" "$work/e.err" || fail "no '$msg' in: $(cat "$work/e.err")"
}
tf=$work/out_tf
"$prog" --do_train --do_eval --do_predict "${base[@]}" --output_dir="$tf" \
  --train_batch_size=16 --num_train_epochs=3 --learning_rate=1e-3 --log_every=5 >"$work/stdout_tf" 2>"$work/stderr_tf" \
  || { cat "$work/stderr_tf"; fail "the tensorflow scheme's run failed"; }
grep -qF "NER scheme: tensorflow (the default;" "$work/stderr_tf" || fail "no scheme notice: $(cat "$work/stderr_tf")"
grep -qF "token classification over 7 classes ([padding], B, I, O, X, [CLS], [SEP])" "$work/stderr_tf" \
  || fail "not 7 classes: $(grep 'model:' "$work/stderr_tf")"
[ "$(tr '\n' ' ' <"$tf/labels.txt")" = "B I O " ] || fail "tensorflow scheme: labels.txt: $(cat "$tf/labels.txt")"
convert=$(dirname "$prog")/ctdl-convert
if [ -x "$convert" ]; then
  "$convert" --list "$tf/model.safetensors" 2>/dev/null | grep -q $'^classifier.weight\tF32\t\\[7, 128\\]$' \
    || fail "classifier.weight is not [7, 128]: $("$convert" --list "$tf/model.safetensors" 2>&1 | grep classifier)"
fi
awk -F'"loss":' '/"type":"train"/ { split($2, v, ","); l[++n] = v[1] } END { exit !(n >= 3 && l[n] < 0.5 * l[1]) }' \
  "$tf/metrics.jsonl" || fail "tensorflow scheme: the loss did not fall: $(grep -o '"loss":[0-9.e-]*' "$tf/metrics.jsonl" | tr '\n' ' ')"
[ "$(grep -cv '^$' "$tf/NER_result_conll.txt")" = "$words" ] || fail "tensorflow scheme: NER_result_conll.txt is not $words words"
# Reloaded in a directory whose caches were made without the cut: they are rebuilt, saying why.
"$prog" --do_predict "${base[@]}" --ner_scheme=tensorflow --init_checkpoint="$tf" --output_dir="$work/out2" \
  >/dev/null 2>"$work/stderr_tf2" || { cat "$work/stderr_tf2"; fail "tensorflow scheme: prediction from its output directory failed"; }
cmp -s "$tf/NER_result_conll.txt" "$work/out2/NER_result_conll.txt" || fail "tensorflow scheme: predictions differ after reloading"
grep -qF "sentences not cut by words, now cut at 30 (--ner_scheme)" "$work/stderr_tf2" \
  || fail "tensorflow scheme: no cache rebuild reason: $(cat "$work/stderr_tf2")"
expect 1 "$tf/model.safetensors: the classifier has 7 rows for the 3 labels of $tf/labels.txt: a token classifier of --ner_scheme=tensorflow (padding, the labels, X, [CLS], [SEP]); this run has --ner_scheme=first_piece: give --ner_scheme=tensorflow" \
  --do_predict "${common[@]}" --init_checkpoint="$tf" --output_dir="$work/e"
expect 1 "the classifier has 3 rows for the 3 labels of $out/labels.txt: a token classifier of --ner_scheme=first_piece (a row per label); this run has --ner_scheme=tensorflow: give --ner_scheme=first_piece" \
  --do_predict "${base[@]}" --init_checkpoint="$out" --output_dir="$work/e"
expect 1 "--ner_scheme=tensorflow (the default) trains on batches --max_seq_length wide" \
  --do_train "${base[@]}" --group_by_length --output_dir="$work/e"
mkdir -p "$work/no_o" && printf 'Naloxone\tB\nhydrochloride\tI\n\n' >"$work/no_o/train.tsv"
expect 1 "but $work/no_o/train.tsv (its labels) has no label O" --do_train "${base[@]}" --data_dir="$work/no_o" --output_dir="$work/e"
expect 1 "--ner_scheme=pytorch: must be tensorflow or first_piece" --do_eval "${base[@]}" --ner_scheme=pytorch --output_dir="$work/e"
echo "--ner_scheme=tensorflow: trained 7 classes, reloaded with the same predictions, refused by the other scheme"

# Input checks: one clear message, before any work (expect is defined above).
expect 1 "--task_name=pos: the tasks are consensus (span classification) and ner (token classification)" \
  --do_eval "${common[@]}" --task_name=pos --output_dir="$work/e"
expect 1 "--task_name=ner has none" --do_predict --write_npy "${common[@]}" --output_dir="$work/e"
# A GPU that is not there (on this machine or in this build): a clear refusal, no crash.
"$prog" --do_eval "${common[@]}" --device=cuda:7 --output_dir="$work/e" >"$work/e.out" 2>"$work/e.err" && fail "--device=cuda:7 ran"
grep -qE -- '--device=cuda:7: (this build of ner_span_classifier has no CUDA|no usable CUDA device|no such device)' "$work/e.err" \
  || fail "--device=cuda:7: $(cat "$work/e.err")"
expect 1 "--data_dir: '$work/none' is not a directory" --do_eval "${common[@]}" --data_dir="$work/none" --output_dir="$work/e"
mkdir -p "$work/nodev" && cp "$work/data/train.tsv" "$work/nodev/"
expect 1 "devel.tsv: no such file (needed by --do_eval)" --do_eval "${common[@]}" --data_dir="$work/nodev" --output_dir="$work/e"
mkdir -p "$work/nolabels" && cp "$work/data/test.tsv" "$work/nolabels/"
expect 1 "--labels_dir is required: there is no labels.txt beside --init_checkpoint and no $work/nolabels/train.tsv" \
  --do_predict "${common[@]}" --data_dir="$work/nolabels" --output_dir="$work/e"
mkdir -p "$work/bad" && cp "$work/data/train.tsv" "$work/bad/" && printf 'Naloxone\tB\nlonely\n\n' >"$work/bad/devel.tsv"
expect 1 "devel.tsv:2: has 1 field" --do_eval "${common[@]}" --data_dir="$work/bad" --output_dir="$work/e"
# A run that stops early leaves an earlier model's labels.txt as it was (its own labels,
# found in train.tsv, would be saved only with its model), and no pending file.
mkdir -p "$work/earlier" && printf 'X\nY\nZ\n' >"$work/earlier/labels.txt"
expect 1 "devel.tsv:2: has 1 field" --do_train --do_eval "${common[@]}" --data_dir="$work/bad" --output_dir="$work/earlier"
[ "$(tr '\n' ' ' <"$work/earlier/labels.txt")" = "X Y Z " ] || fail "a failed run replaced labels.txt: $(cat "$work/earlier/labels.txt")"
! ls "$work/earlier"/*.pending.* 2>/dev/null || fail "a failed run left a pending file"
printf 'Naloxone\tB-Chemical\n\n' >"$work/bad/devel.tsv"
expect 1 "B-Chemical" --do_eval "${common[@]}" --data_dir="$work/bad" --output_dir="$work/e"
echo "ner: all checks passed"

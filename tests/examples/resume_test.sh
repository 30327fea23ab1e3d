#!/usr/bin/env bash
# ner_span_classifier --resume: a run killed with SIGKILL right after a checkpoint and
# resumed ends with a model.safetensors byte-identical to an uninterrupted run's (fp32,
# bf16, fp16; tiny BERT, 96 of the shared consensus rows, 12 steps, a checkpoint every 4);
# a torn newest checkpoint is passed over, naming it, for the one before; the newest
# --keep_checkpoint_max are kept; a resume with a flag that changes the run is an error
# naming the flag and both values. The kill is the program's test hook
# CTDL_TEST_KILL_AFTER_CHECKPOINT=N (raise(SIGKILL) right after the N-th checkpoint is
# complete): a real SIGKILL at a known point. Exit 77 (skipped) without the shared data.
set -uo pipefail
prog=$1 shared=$2 work=$3
data=$shared/consensus-example vocab=$shared/vocab/bert-base-cased-vocab.txt
[ -f "$data/dev.tsv" ] && [ -f "$vocab" ] || { echo "SKIPPED: no shared data at $shared"; exit 77; }
# Bit-identical results need the same thread count in every run (the kernels' sums are
# cut by it); the order of additions does not otherwise depend on timing.
export OMP_NUM_THREADS=2
rm -rf "$work" && mkdir -p "$work/data"
head -n 96 "$data/dev.tsv" >"$work/data/train.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64}
JSON
fail() { echo "FAILED: $*"; exit 1; }
# 96 rows, micro-batches of 8, 2 accumulated: 6 steps an epoch, 12 in all; checkpoints
# at 4, 8, 12 (4 and 8 mid-epoch), so a resumed run crosses an epoch boundary.
train=(--do_train --vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased --data_dir="$work/data"
       --labels_dir="$data" --max_seq_length=32 --train_batch_size=8 --gradient_accumulation_steps=2
       --num_train_epochs=2 --learning_rate=3e-4 --save_checkpoints_steps=4 --log_every=4 --seed=7)

for precision in fp32 bf16 fp16; do
  w=$work/$precision
  "$prog" "${train[@]}" --precision=$precision --output_dir="$w/whole" >"$w.whole.out" 2>"$w.whole.err" \
    || { cat "$w.whole.err"; fail "$precision: the uninterrupted run failed"; }
  [ "$(cd "$w/whole" && ls -d checkpoint-*)" = checkpoint-12 ] || fail "$precision: --keep_checkpoint_max=1 kept: $(ls "$w/whole")"
  # Killed right after the first checkpoint (step 4).
  CTDL_TEST_KILL_AFTER_CHECKPOINT=1 "$prog" "${train[@]}" --precision=$precision --output_dir="$w/killed" \
    >"$w.killed.out" 2>"$w.killed.err"; rc=$?
  [ $rc = 137 ] || fail "$precision: the run to be killed exited $rc: $(tail -3 "$w.killed.err")"
  [ -f "$w/killed/checkpoint-4/manifest.json" ] || fail "$precision: no checkpoint-4 before the kill: $(ls "$w/killed")"
  [ ! -e "$w/killed/model.safetensors" ] || fail "$precision: a model.safetensors after the kill"
  "$prog" "${train[@]}" --precision=$precision --output_dir="$w/killed" --resume >"$w.resumed.out" 2>"$w.resumed.err" \
    || { cat "$w.resumed.err"; fail "$precision: the resumed run failed"; }
  grep -qF "resumed from $w/killed/checkpoint-4 (step 4 of 12" "$w.resumed.err" || fail "$precision: no resume line: $(cat "$w.resumed.err")"
  cmp "$w/whole/model.safetensors" "$w/killed/model.safetensors" \
    || fail "$precision: the resumed run's model.safetensors differs from the uninterrupted run's"
  cmp "$w/whole/checkpoint-12/optimizer.safetensors" "$w/killed/checkpoint-12/optimizer.safetensors" \
    || fail "$precision: the optimizer state at the end differs"
  [ "$(grep -c '"type":"train"' "$w/killed/metrics.jsonl")" = 3 ] \
    || fail "$precision: metrics.jsonl of the resumed run: $(cat "$w/killed/metrics.jsonl")"
  echo "$precision: killed after step 4, resumed: model.safetensors identical to the uninterrupted run's"
done

# --keep_checkpoint_max=2, and a torn newest checkpoint: killed after the second (step 8),
# so checkpoint-4 and checkpoint-8 are there; checkpoint-8 is cut short.
w=$work/torn
CTDL_TEST_KILL_AFTER_CHECKPOINT=2 "$prog" "${train[@]}" --keep_checkpoint_max=2 --output_dir="$w" >"$w.out" 2>"$w.err"; rc=$?
[ $rc = 137 ] || fail "torn: exited $rc: $(tail -3 "$w.err")"
[ "$(cd "$w" && ls -d checkpoint-* | tr '\n' ' ')" = "checkpoint-4 checkpoint-8 " ] || fail "--keep_checkpoint_max=2 kept: $(ls "$w")"
st=$w/checkpoint-8/optimizer.safetensors
truncate -s $(($(stat -c %s "$st") / 2)) "$st"
"$prog" "${train[@]}" --keep_checkpoint_max=2 --output_dir="$w" --resume >"$w.resumed.out" 2>"$w.resumed.err" \
  || { cat "$w.resumed.err"; fail "torn: the resumed run failed"; }
grep -qF "warning: not resuming from $w/checkpoint-8: optimizer.safetensors:" "$w.resumed.err" \
  && grep -qF "(torn or truncated); using $w/checkpoint-4 instead" "$w.resumed.err" \
  || fail "torn: no message naming both checkpoints: $(cat "$w.resumed.err")"
cmp "$work/fp32/whole/model.safetensors" "$w/model.safetensors" || fail "torn: the run resumed at step 4 differs"
# metrics.jsonl was committed with checkpoint-8; the steps after 4 are logged once, by the resumed run.
[ "$(grep -o '"step":[0-9]*' "$w/metrics.jsonl" | tr '\n' ' ')" = '"step":4 "step":8 "step":12 ' ] \
  || fail "torn: metrics.jsonl steps: $(grep -o '"step":[0-9]*' "$w/metrics.jsonl" | tr '\n' ' ')"
[ "$(cd "$w" && ls -d checkpoint-* | tr '\n' ' ')" = "checkpoint-12 checkpoint-8 " ] || fail "torn: checkpoints at the end: $(ls "$w")"
echo "torn checkpoint-8 passed over for checkpoint-4; --keep_checkpoint_max=2 keeps two"

# A bert_config.json rewritten for --hidden_act (the tiny config says no hidden_act: erf)
# goes with each checkpoint and into --output_dir only with the model: a killed run leaves
# an earlier model's there as it was; the resumed run sweeps the pending copy and saves it.
w=$work/act
mkdir -p "$w" && echo '{"earlier": true}' >"$w/bert_config.json"
CTDL_TEST_KILL_AFTER_CHECKPOINT=1 "$prog" "${train[@]}" --hidden_act=gelu_tanh --output_dir="$w" >"$w.out" 2>"$w.err"; rc=$?
[ $rc = 137 ] || fail "act: exited $rc: $(tail -3 "$w.err")"
[ "$(cat "$w/bert_config.json")" = '{"earlier": true}' ] || fail "act: the earlier bert_config.json replaced before a model was saved"
grep -q '"hidden_act": "gelu_new"' "$w/checkpoint-4/bert_config.json" || fail "act: checkpoint-4/bert_config.json: $(cat "$w/checkpoint-4/bert_config.json")"
ls "$w"/bert_config.json.pending.tmp.* >/dev/null 2>&1 || fail "act: the killed run left no pending config: $(ls "$w")"
"$prog" "${train[@]}" --hidden_act=gelu_tanh --output_dir="$w" --resume >"$w.resumed.out" 2>"$w.resumed.err" \
  || { cat "$w.resumed.err"; fail "act: the resumed run failed"; }
grep -q "removed $w/bert_config.json.pending.tmp.[0-9]* (left by an interrupted run)" "$w.resumed.err" \
  || fail "act: the pending config not swept: $(cat "$w.resumed.err")"
grep -q '"hidden_act": "gelu_new"' "$w/bert_config.json" || fail "act: bert_config.json after the run: $(cat "$w/bert_config.json")"
! ls "$w"/*.pending.* 2>/dev/null || fail "act: a pending file after the run"
echo "--hidden_act's bert_config.json: saved with the checkpoints and the model, an earlier one kept until then"

# Flags that change the run: an error naming the flag and both values, before any work.
expect_resume_error() {  # expect_resume_error <message part> flags...
  local msg=$1; shift
  "$prog" "${train[@]}" --output_dir="$work/fp32/killed" --resume "$@" >"$work/e.out" 2>"$work/e.err"; local rc=$?
  [ $rc = 1 ] || fail "exit $rc (wanted 1) for --resume $*: $(cat "$work/e.err")"
  grep -qF -- "$msg" "$work/e.err" || fail "no '$msg' in: $(cat "$work/e.err")"
}
expect_resume_error "it was written by a run with --learning_rate=0.0003, this run has --learning_rate=0.0001" --learning_rate=1e-4
expect_resume_error "it was written by a run with --train_batch_size=8, this run has --train_batch_size=16" --train_batch_size=16
expect_resume_error "it was written by a run with --seed=7, this run has --seed=8" --seed=8
expect_resume_error "it was written by a run with --precision=fp32, this run has --precision=bf16" --precision=bf16
mkdir -p "$work/empty"
"$prog" "${train[@]}" --output_dir="$work/empty" --resume >"$work/e.out" 2>"$work/e.err"; rc=$?
[ $rc = 1 ] && grep -qF "cannot resume: $work/empty has no checkpoint-<step> directory" "$work/e.err" \
  || fail "exit $rc for --resume without checkpoints: $(cat "$work/e.err")"
echo "ner_span_classifier --resume: all passed"

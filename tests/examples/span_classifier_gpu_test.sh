#!/usr/bin/env bash
# ner_span_classifier --device=cuda against --device=cpu (tiny BERT from random
# initialisation, dropout on, 160 of the shared consensus rows, M = 32, fp32):
#   1. train (2 epochs, checkpoints every 5 steps), evaluate and predict on each device:
#      the GPU's test_results.tsv within 1e-4 of the CPU's, the same predicted labels (but
#      for near ties: rows whose two best classes are within 2e-4, which the devices'
#      rounding may rank either way; "the same labels" below means this too), the same
#      eval accuracy unless a near tie flipped; the saved model loads on the CPU (a
#      GPU-trained model.safetensors is an ordinary one) and predicts what the GPU predicted;
#   2. --precision=bf16, tf32 and --use_fp16 (fp16 on a GPU) train and predict on the GPU
#      (finite results, the precision the log names);
#   3. --device=cuda:999 (a device no machine has) stops naming the device count;
#   4. ZeRO-1 on the GPU (--distributed --shard_optimizer, one rank under mpirun: NCCL of
#      that rank): test_results.tsv within 1e-4 of the plain GPU run's, the same labels,
#      and the same run resumed from its checkpoint-10 within 1e-4 of it (skipped where
#      mpirun is missing or cannot start the job, or the build has no MPI or NCCL; a crash
#      or a time-out fails it);
#   5. (run before 4) the GPU run of 1 resumed from its checkpoint-10 (--resume) ends within
#      1e-4 of the uninterrupted one, with the same labels.
# Usage: span_classifier_gpu_test.sh <program> <shared data> <work dir>
# Exit 77 (skipped) without a GPU (nvidia-smi finds none; CTDL_GPUS, when set, is the count) or without the shared data.
set -uo pipefail
prog=$1 shared=$2 work=$3
data=$shared/consensus-example vocab=$shared/vocab/bert-base-cased-vocab.txt
[ -f "$data/dev.tsv" ] && [ -f "$vocab" ] || { echo "SKIPPED: no shared data at $shared"; exit 77; }
gpus=${CTDL_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}  # CTDL_GPUS: run.sh's count
[ "${gpus:-0}" -gt 0 ] || { echo "SKIPPED: no GPU (nvidia-smi lists none)"; exit 77; }
rm -rf "$work" && mkdir -p "$work/data"
head -n 160 "$data/dev.tsv" >"$work/data/train.tsv"
tail -n 43 "$data/dev.tsv" >"$work/data/dev.tsv"
cp "$work/data/dev.tsv" "$work/data/test.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64}
JSON
fail() { echo "FAILED: $*"; exit 1; }
common=(--vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased --data_dir="$work/data"
        --labels_dir="$data" --max_seq_length=32 --eval_batch_size=8 --predict_batch_size=8)
train=(--do_train --do_eval --do_predict "${common[@]}" --num_train_epochs=2 --learning_rate=3e-4
       --train_batch_size=16 --save_checkpoints_steps=5 --keep_checkpoint_max=4 --log_every=5 --seed=11)
# max |a - b| over the numbers of two TSV files of the same shape
max_diff() { paste "$1" "$2" | awk -F'\t' '{h = NF / 2; for (i = 1; i <= h; i++) { d = $i - $(i + h); if (d < 0) d = -d; if (d > m) m = d } } END { printf "%.3g", m + 0 }'; }
accuracy() { grep '^eval_accuracy' "$1" | cut -d' ' -f3; }
# labels_differ <run a> <run b>: "n real": the rows whose predicted labels differ, and of
# them those whose two best classes in a's test_results.tsv are more than 2e-4 apart. The
# others are near ties that the devices' rounding may rank either way: each probability
# may move by the 1e-4 the checks allow (about 1e-5 is expected after 20 steps).
labels_differ() {
  paste "$1/test_results.tsv" "$1/test_output_labels.txt" "$2/test_output_labels.txt" |
    awk -F'\t' '{ h = NF - 2; a = b = -1
                  for (i = 1; i <= h; i++) { v = $i + 0; if (v > a) { b = a; a = v } else if (v > b) b = v }
                  if ($(NF - 1) != $NF) { n++; if (a - b > 2e-4) real++ } } END { print n + 0, real + 0 }'
}
# same_labels <run a> <run b> <what>: fails on a real difference (or a labels file missing,
# empty or of another length); says how many near ties differ, and leaves that count in
# near_ties.
same_labels() {
  local real f
  for f in "$1/test_output_labels.txt" "$2/test_output_labels.txt"; do
    [ -s "$f" ] || fail "$3: no labels in $f"
  done
  [ "$(wc -l <"$1/test_output_labels.txt")" = "$(wc -l <"$2/test_output_labels.txt")" ] ||
    fail "$3: $1 and $2 predicted different numbers of rows"
  read -r near_ties real <<<"$(labels_differ "$1" "$2")"
  [ "$real" = 0 ] || fail "$3: $real predicted labels differ where the two best classes are more than 2e-4 apart"
  [ "$near_ties" = 0 ] || echo "   ($3: $near_ties labels differ at near ties, best two classes within 2e-4)"
  return 0
}

# 1. The same run on both devices.
for device in cpu cuda; do
  "$prog" "${train[@]}" --device=$device --output_dir="$work/$device" >"$work/$device.out" 2>"$work/$device.err" \
    || { cat "$work/$device.err"; fail "the --device=$device run failed"; }
done
grep -q "on cuda" "$work/cuda.err" || fail "the GPU run does not say it ran on the GPU: $(head -5 "$work/cuda.err")"
d=$(max_diff "$work/cpu/test_results.tsv" "$work/cuda/test_results.tsv")
awk -v d="$d" 'BEGIN { exit !(d < 1e-4) }' || fail "the GPU's test_results.tsv differs from the CPU's by $d"
same_labels "$work/cpu" "$work/cuda" "GPU vs CPU"
# dev.tsv is test.tsv: the accuracies differ only where the labels do.
[ "$near_ties" != 0 ] ||
  [ "$(accuracy "$work/cpu/eval_results.txt")" = "$(accuracy "$work/cuda/eval_results.txt")" ] ||
  fail "eval accuracy $(accuracy "$work/cuda/eval_results.txt") on the GPU, $(accuracy "$work/cpu/eval_results.txt") on the CPU"
[ -s "$work/cuda/checkpoint-20/optimizer.safetensors" ] || fail "the GPU run wrote no checkpoint"
"$prog" --do_predict "${common[@]}" --init_checkpoint="$work/cuda" --output_dir="$work/reload" >/dev/null 2>"$work/reload.err" \
  || { cat "$work/reload.err"; fail "the GPU-trained model does not load on the CPU"; }
d2=$(max_diff "$work/cuda/test_results.tsv" "$work/reload/test_results.tsv")
awk -v d="$d2" 'BEGIN { exit !(d < 1e-4) }' || fail "the GPU-trained model predicts on the CPU $d2 away from the GPU"
echo "1. --device=cuda = --device=cpu: test_results.tsv within $d, the same labels and accuracy $(accuracy "$work/cuda/eval_results.txt"); reloaded on the CPU within $d2"

# 2. bf16 and tf32 on the GPU.
for precision in bf16 tf32 fp16; do
  flag=--precision=$precision
  [ $precision = fp16 ] && flag=--use_fp16  # the original's flag: fp16 with loss scaling on a GPU
  "$prog" "${train[@]}" --device=cuda "$flag" --output_dir="$work/$precision" >/dev/null 2>"$work/$precision.err" \
    || { cat "$work/$precision.err"; fail "the $precision GPU run failed"; }
  grep -q "precision $precision" "$work/$precision.err" || fail "$flag on the GPU: not $precision: $(grep -m1 '^model:' "$work/$precision.err")"
  grep -qi 'nan\|inf' "$work/$precision/test_results.tsv" && fail "the $precision GPU run predicted non-finite probabilities"
  echo "2. $flag on the GPU: accuracy $(accuracy "$work/$precision/eval_results.txt") (fp32: $(accuracy "$work/cuda/eval_results.txt"))"
done

# 3. A device that is not there (an ordinal no machine has: CUDA's count of devices can
# differ from nvidia-smi's, under MIG or CUDA_VISIBLE_DEVICES).
"$prog" --do_predict "${common[@]}" --device=cuda:999 --output_dir="$work/nodevice" >/dev/null 2>"$work/nodevice.err" \
  && fail "--device=cuda:999 ran"
grep -q "no such device (this machine has [0-9]* CUDA device" "$work/nodevice.err" \
  || fail "--device=cuda:999: $(cat "$work/nodevice.err")"
echo "3. --device=cuda:999: $(cat "$work/nodevice.err")"

# resume_from_10 <run dir> <copy>: the run's output directory as a run stopped after
# checkpoint-10 leaves it (the later checkpoints removed), for a --resume run to finish.
resume_from_10() {
  [ -d "$1/checkpoint-10" ] || fail "$1 has no checkpoint-10 to resume from: $(ls "$1" | tr '\n' ' ')"
  rm -rf "$2" && cp -r "$1" "$2" && rm -rf "$2/checkpoint-15" "$2/checkpoint-20"
  # and without the finished run's results: the resumed run must write its own.
  rm -f "$2/test_results.tsv" "$2/test_output_labels.txt" "$2/eval_results.txt"
}
# resumed <run> <resumed run> <what>: the resumed run said so and ends where the run ended.
resumed() {
  grep -q "resumed from $2/checkpoint-10 (step 10 of 20" "$2.err" || fail "$3: no resume line: $(tail -5 "$2.err")"
  local d
  d=$(max_diff "$1/test_results.tsv" "$2/test_results.tsv")
  awk -v d="$d" 'BEGIN { exit !(d < 1e-4) }' || fail "$3 ends $d from the uninterrupted run"
  same_labels "$1" "$2" "$3" >&2
  echo "$d"
}

# 5 (first: it needs no mpirun). A GPU run resumed from its checkpoint-10 ends where the
# uninterrupted GPU run ends (within 1e-4: the embeddings' scatter-add is not bit-exact).
resume_from_10 "$work/cuda" "$work/cuda-resumed"
"$prog" "${train[@]}" --device=cuda --resume --output_dir="$work/cuda-resumed" >"$work/cuda-resumed.out" \
  2>"$work/cuda-resumed.err" || { cat "$work/cuda-resumed.err"; fail "the resumed GPU run failed"; }
d5=$(resumed "$work/cuda" "$work/cuda-resumed" "the resumed GPU run") || { echo "$d5"; exit 1; }
echo "5. --resume on the GPU from checkpoint-10: test_results.tsv within $d5 of the uninterrupted run"

# 4. ZeRO-1 on the GPU, one rank.
zero_ran=no
if command -v mpirun >/dev/null; then
  if OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "${CTDL_ZERO_LIMIT_S:-120}" mpirun -np 1 \
    "$prog" "${train[@]}" --device=cuda --distributed --shard_optimizer --output_dir="$work/zero" \
    >"$work/zero.out" 2>"$work/zero.err"; then
    zero_ran=yes
  else
    rc=$?
    # A build without MPI or NCCL skips the check, saying why, and so does an mpirun that
    # could not start the job. Anything else fails it: the program's own error, a crash
    # (mpirun: "exited on signal", "non-zero exit code"), a time-out, output from the program.
    if grep -q "has no MPI\|has no NCCL" "$work/zero.err"; then
      zero_why=$(grep -m1 "has no MPI\|has no NCCL" "$work/zero.err")
    elif [ $rc -ne 124 ] && [ $rc -ne 137 ] && ! [ -s "$work/zero.out" ] &&
      ! grep -q "ner_span_classifier\|aborting the job\|exited on signal\|non-zero exit\|noticed that process" "$work/zero.err"; then
      zero_why="mpirun could not start the job: $(head -3 "$work/zero.err" | tr '\n' ' ')"
    else
      cat "$work/zero.err"; fail "the ZeRO-1 GPU run failed (rc $rc)"
    fi
  fi
fi
if [ $zero_ran = yes ]; then
  d3=$(max_diff "$work/cuda/test_results.tsv" "$work/zero/test_results.tsv")
  awk -v d="$d3" 'BEGIN { exit !(d < 1e-4) }' || fail "ZeRO-1 on the GPU differs from the plain GPU run by $d3"
  same_labels "$work/cuda" "$work/zero" "ZeRO-1 on the GPU"
  echo "4. --distributed --shard_optimizer --device=cuda (1 rank): test_results.tsv within $d3 of the plain GPU run"
  # ZeRO-1 resumed: rank 0's slice of the moments scattered back, the model loaded in place.
  resume_from_10 "$work/zero" "$work/zero-resumed"
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "${CTDL_ZERO_LIMIT_S:-120}" mpirun -np 1 \
    "$prog" "${train[@]}" --device=cuda --distributed --shard_optimizer --resume --output_dir="$work/zero-resumed" \
    >"$work/zero-resumed.out" 2>"$work/zero-resumed.err" || { cat "$work/zero-resumed.err"; fail "the resumed ZeRO-1 GPU run failed"; }
  d4=$(resumed "$work/zero" "$work/zero-resumed" "the resumed ZeRO-1 GPU run") || { echo "$d4"; exit 1; }
  echo "   and resumed from checkpoint-10: within $d4 of the uninterrupted ZeRO-1 run"
else
  echo "4. ZeRO-1 on the GPU: skipped (${zero_why:-no mpirun})"
fi
echo "PASSED"

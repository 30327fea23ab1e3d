#!/usr/bin/env bash
# ner_span_classifier --distributed under mpiexec -np 2 (tiny BERT, dropout off, 160 of the
# shared consensus rows, M = 32):
#   1. training on 2 ranks at --train_batch_size=8 ends where one process at 16 ends (the
#      predicted probabilities within 1e-5), and rank 0 alone writes and logs;
#   2. evaluation and prediction split across the 2 ranks write one process's files, byte
#      for byte (from the same model);
#   3. --shard_optimizer (ZeRO-1) ends where plain data parallel ends;
#   4. a job killed after its first checkpoint resumes on 2 ranks (--resume) and ends
#      with the uninterrupted job's model.safetensors, byte for byte;
#   5. ranks whose flags differ stop, every rank, naming the flag; a rank that fails
#      (a missing file) ends the whole job at once (MPI_Abort), naming the file;
#   6. --device=cuda on 2 ranks: --device=cuda:N is refused, and a rank without a GPU of
#      its own ends the job naming why (with --shard_optimizer too: ZeRO-1 on GPUs).
# Usage: span_classifier_distributed_test.sh <program> <shared data> <work dir> "<mpiexec and its flags>" <-n flag>
# Exit 77 (skipped) without the shared data.
set -uo pipefail
prog=$1 shared=$2 work=$3 mpiexec=$4 np_flag=${5:--n}
data=$shared/consensus-example vocab=$shared/vocab/bert-base-cased-vocab.txt
[ -f "$data/dev.tsv" ] && [ -f "$vocab" ] || { echo "SKIPPED: no shared data at $shared"; exit 77; }
export OMP_NUM_THREADS=1
read -r -a mpi <<<"$mpiexec"
rm -rf "$work" && mkdir -p "$work/data"
head -n 160 "$data/dev.tsv" >"$work/data/train.tsv"
tail -n 43 "$data/dev.tsv" >"$work/data/dev.tsv"  # 43 rows: the last global batch of 2 x 8 is cut
cp "$work/data/dev.tsv" "$work/data/test.tsv"
cat >"$work/bert_config.json" <<'JSON'
{"vocab_size": 28996, "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64,
 "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
JSON
fail() { echo "FAILED: $*"; exit 1; }
common=(--vocab_file="$vocab" --bert_config_file="$work/bert_config.json" --cased --data_dir="$work/data"
        --labels_dir="$data" --max_seq_length=32 --eval_batch_size=8 --predict_batch_size=8)
train=(--do_train --do_eval --do_predict "${common[@]}" --num_train_epochs=2 --learning_rate=3e-4
       --save_checkpoints_steps=5 --log_every=5 --seed=11)
two() { "${mpi[@]}" "$np_flag" 2 "$prog" "$@"; }
# max |a - b| over the numbers of two TSV files of the same shape
max_diff() { paste "$1" "$2" | awk -F'\t' '{h = NF / 2; for (i = 1; i <= h; i++) { d = $i - $(i + h); if (d < 0) d = -d; if (d > m) m = d } } END { printf "%.3g", m + 0 }'; }

# 1. Two ranks at 8 rows each against one process at 16.
"$prog" "${train[@]}" --train_batch_size=16 --output_dir="$work/one" >"$work/one.out" 2>"$work/one.err" \
  || { cat "$work/one.err"; fail "the one-process run failed"; }
two "${train[@]}" --train_batch_size=8 --distributed --output_dir="$work/two" >"$work/two.out" 2>"$work/two.err" \
  || { cat "$work/two.err"; fail "the 2-rank run failed"; }
grep -qF "distributed: 2 ranks (MPI)" "$work/two.err" || fail "no 'distributed: 2 ranks' line: $(cat "$work/two.err")"
[ "$(grep -c "training done" "$work/two.err")" = 1 ] || fail "not rank 0 alone logs: $(grep "training done" "$work/two.err")"
[ "$(grep -c "eval results" "$work/two.out")" = 1 ] || fail "the eval results printed $(grep -c "eval results" "$work/two.out") times"
d=$(max_diff "$work/one/test_results.tsv" "$work/two/test_results.tsv")
awk -v d="$d" 'BEGIN { exit !(d < 1e-5) }' || fail "2 ranks x 8 and 1 process x 16 differ by $d in test_results.tsv"
cmp -s "$work/one/test_output_labels.txt" "$work/two/test_output_labels.txt" || fail "the predicted labels differ"
for f in model.safetensors eval_results.txt test_results.tsv test_output_labels.txt metrics.jsonl checkpoint-20/state.json; do
  [ -s "$work/two/$f" ] || fail "no $work/two/$f"
done
[ "$(grep -c '"type":"train"' "$work/two/metrics.jsonl")" = "$(grep -c '"type":"train"' "$work/one/metrics.jsonl")" ] \
  || fail "metrics.jsonl has other records than one process's"
grep -q '"--train_batch_size": "16"' "$work/two/checkpoint-20/state.json" \
  || fail "the checkpoint does not record the global batch 16: $(cat "$work/two/checkpoint-20/state.json")"
echo "1. 2 ranks x 8 rows = 1 process x 16 rows (test_results.tsv within $d)"

# 2. Evaluation and prediction of one model, split across 2 ranks: one process's files.
eval=(--do_eval --do_predict "${common[@]}" --init_checkpoint="$work/one")
"$prog" "${eval[@]}" --output_dir="$work/eval1" >"$work/eval1.out" 2>"$work/eval1.err" || { cat "$work/eval1.err"; fail "eval on one process"; }
two "${eval[@]}" --distributed --output_dir="$work/eval2" >"$work/eval2.out" 2>"$work/eval2.err" || { cat "$work/eval2.err"; fail "eval on 2 ranks"; }
for f in eval_results.txt test_results.tsv test_output_labels.txt; do
  cmp "$work/eval1/$f" "$work/eval2/$f" || fail "$f of 2 ranks differs from one process's"
done
echo "2. evaluation and prediction on 2 ranks: eval_results.txt, test_results.tsv, test_output_labels.txt identical to one process's"

# 3. ZeRO-1 against plain data parallel.
two "${train[@]}" --train_batch_size=8 --distributed --shard_optimizer --output_dir="$work/zero" >"$work/zero.out" 2>"$work/zero.err" \
  || { cat "$work/zero.err"; fail "the ZeRO-1 run failed"; }
grep -qF "the optimizer state sharded (ZeRO-1)" "$work/zero.err" || fail "no ZeRO-1 line"
d=$(max_diff "$work/two/test_results.tsv" "$work/zero/test_results.tsv")
awk -v d="$d" 'BEGIN { exit !(d < 1e-6) }' || fail "ZeRO-1 and plain data parallel differ by $d"
echo "3. --shard_optimizer ends where plain data parallel ends (test_results.tsv within $d)"

# 4. Killed after the first checkpoint (step 5; rank 0 kills itself), resumed on 2 ranks.
CTDL_TEST_KILL_AFTER_CHECKPOINT=1 two "${train[@]}" --train_batch_size=8 --distributed --shard_optimizer \
  --output_dir="$work/killed" >"$work/killed.out" 2>"$work/killed.err" && fail "the job to be killed exited 0"
[ -f "$work/killed/checkpoint-5/manifest.json" ] || fail "no checkpoint-5 before the kill: $(ls "$work/killed")"
two "${train[@]}" --train_batch_size=8 --distributed --shard_optimizer --resume --output_dir="$work/killed" \
  >"$work/resumed.out" 2>"$work/resumed.err" || { cat "$work/resumed.err"; fail "the resumed job failed"; }
grep -qF "resumed from $work/killed/checkpoint-5 (step 5 of 20" "$work/resumed.err" || fail "no resume line: $(cat "$work/resumed.err")"
cmp "$work/zero/model.safetensors" "$work/killed/model.safetensors" || fail "the resumed job's model differs from the uninterrupted one's"
echo "4. a 2-rank ZeRO-1 job killed after step 5 and resumed: model.safetensors identical to the uninterrupted job's"

# 5. Ranks that disagree; a rank that fails.
"${mpi[@]}" "$np_flag" 1 "$prog" "${train[@]}" --train_batch_size=8 --distributed --output_dir="$work/x" : \
  "$np_flag" 1 "$prog" "${train[@]}" --train_batch_size=8 --distributed --output_dir="$work/x" --learning_rate=1e-4 \
  >"$work/differ.out" 2>"$work/differ.err" && fail "ranks with different --learning_rate ran"
grep -qF -- "--learning_rate: differs from rank 0's on 1 rank (this one: 0.0001" "$work/differ.err" \
  || fail "no message naming --learning_rate: $(cat "$work/differ.err")"
[ ! -e "$work/x/model.safetensors" ] || fail "a model was written by ranks that disagree"
start=$SECONDS
timeout 120 "${mpi[@]}" "$np_flag" 1 "$prog" "${train[@]}" --train_batch_size=8 --distributed --output_dir="$work/y" : \
  "$np_flag" 1 "$prog" "${train[@]}" --train_batch_size=8 --distributed --output_dir="$work/y" --vocab_file="$work/none.txt" \
  >"$work/fails.out" 2>"$work/fails.err"; rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "a job with a failing rank exited $rc: $(cat "$work/fails.err")"
grep -qF "rank 1 of 2: aborting the job: $work/none.txt: no such file (--vocab_file)" "$work/fails.err" \
  || fail "no abort naming the file: $(cat "$work/fails.err")"
echo "5. different --learning_rate stops every rank naming it; a failing rank ends the job in $((SECONDS - start)) s"

# 6. --device=cuda on 2 ranks (ZeRO-1 too): the GPU flags are checked on every build and machine; a rank
#    without a GPU of its own (no GPU here; the second rank of a one-GPU machine) or a
#    build without CUDA or NCCL ends the job, saying why.
expect_refused() {  # <what> <message piece> <flags...>
  local what=$1 piece=$2; shift 2
  timeout 120 "${mpi[@]}" "$np_flag" 2 "$prog" "${train[@]}" --train_batch_size=8 --distributed \
    --output_dir="$work/gpu" "$@" >"$work/gpu.out" 2>"$work/gpu.err"; rc=$?
  [ $rc != 0 ] && [ $rc != 124 ] || fail "$what: exited $rc: $(cat "$work/gpu.err")"
  grep -qE -- "$piece" "$work/gpu.err" || fail "$what: no message matching '$piece': $(cat "$work/gpu.err")"
  [ ! -e "$work/gpu/model.safetensors" ] || fail "$what: a model was written"
}
expect_refused "--device=cuda:1 on 2 ranks" "--device=cuda:1 with --distributed on 2 ranks: give --device=cuda" \
  --device=cuda:1
no_gpus="has no CUDA|has no NCCL|no usable CUDA device|no such device \(this machine has 1 CUDA device\); this is rank 1 of the 2 ranks"
expect_refused "--device=cuda --shard_optimizer (ZeRO-1 on GPUs) on 2 ranks without 2 GPUs" "$no_gpus" \
  --device=cuda --shard_optimizer
expect_refused "--device=cuda on 2 ranks without 2 GPUs" "$no_gpus" --device=cuda
echo "6. --device=cuda on 2 ranks: cuda:N refused; a rank without a GPU ends the job (with --shard_optimizer too): $(grep -o 'aborting the job: .*' "$work/gpu.err" | head -1)"
echo "span_classifier_distributed: all passed"

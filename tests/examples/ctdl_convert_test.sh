#!/usr/bin/env bash
# ctdl-convert: --list of a TF checkpoint (prefix and directory) and of safetensors; the
# conversion (Hugging Face names, kernels transposed, __metadata__ naming the source,
# skipped tensors listed); errors naming the file/tensor (shape against the config, a
# corrupt data file, no checkpoint) leave no output file.
set -uo pipefail
prog=$1 fixture=$2 work=$3
fail() { echo "FAILED: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work" || fail "cannot make $work"

out=$("$prog" --list "$fixture/model.ckpt-7" 2>"$work/err") || fail "--list exit $?: $(cat "$work/err")"
[ "$(wc -l <<<"$out")" = 124 ] || fail "--list printed $(wc -l <<<"$out") lines, want 124"
grep -qx $'bert/encoder/layer_1/intermediate/dense/kernel\tF32\t\\[32, 64\\]' <<<"$out" || fail "kernel line: $out"
grep -qx $'global_step\tI64\t\\[\\]' <<<"$out" || fail "global_step line"
grep -q "124 tensors (TensorFlow checkpoint, 1 shard(s))" "$work/err" || fail "--list summary: $(cat "$work/err")"
out_dir=$("$prog" --list "$fixture" 2>/dev/null) || fail "--list of the directory: exit $?"
[ "$out_dir" = "$out" ] || fail "--list of the directory differs from the prefix's"

"$prog" "$fixture" "$work/model.safetensors" --bert_config_file "$fixture/bert_config.json" 2>"$work/err" \
  || fail "convert exit $?: $(cat "$work/err")"
grep -q "skipped 82 tensors such as bert/embeddings/LayerNorm/beta/adam_m (optimizer state" "$work/err" || fail "Adam slots not listed: $(cat "$work/err")"
grep -q "skipped global_step (the training step counter, not a weight)" "$work/err" || fail "global_step not listed"
grep -q "wrote $work/model.safetensors: 41 tensors" "$work/err" || fail "summary: $(cat "$work/err")"
grep -q "hidden_act=gelu_tanh" "$work/err" || fail "no note on the activation"
st=$("$prog" --list "$work/model.safetensors" 2>"$work/err") || fail "--list safetensors exit $?"
[ "$(wc -l <<<"$st")" = 41 ] || fail "safetensors has $(wc -l <<<"$st") tensors"
grep -qx $'bert.encoder.layer.1.intermediate.dense.weight\tF32\t\\[64, 32\\]' <<<"$st" || fail "transposed kernel: $st"
grep -qx $'classifier.weight\tF32\t\\[5, 32\\]' <<<"$st" || fail "classifier: $st"
grep -q "metadata source: .*model.ckpt-7" "$work/err" || fail "metadata source: $(cat "$work/err")"
grep -q "metadata made_by: ctdl-convert" "$work/err" || fail "metadata made_by"

# The output's directory is made when missing.
"$prog" "$fixture" "$work/new/dir/model.safetensors" --bert_config_file "$fixture/bert_config.json" 2>/dev/null \
  && [ -s "$work/new/dir/model.safetensors" ] || fail "no output in a new directory"

# A config that disagrees: the tensor and both shapes named, no output written.
sed 's/"vocab_size": 100/"vocab_size": 99/' "$fixture/bert_config.json" >"$work/bad_config.json"
err=$("$prog" "$fixture/model.ckpt-7" "$work/bad.safetensors" --bert_config_file "$work/bad_config.json" 2>&1); rc=$?
[ $rc = 1 ] || fail "exit $rc for a mismatched config"
grep -q 'tensor "bert/embeddings/word_embeddings" (bert.embeddings.word_embeddings.weight) has shape \[100, 32\], but the config says \[99, 32\]' <<<"$err" || fail "mismatch message: $err"
[ ! -e "$work/bad.safetensors" ] || fail "output written despite the error"

# A corrupt data file: the CRC error names the data file and the tensor.
mkdir -p "$work/corrupt" && cp "$fixture"/model.ckpt-7.* "$work/corrupt/"
# 100 KB of zeros in the middle: weights as well as Adam slots (which are skipped, not read)
dd if=/dev/zero of="$work/corrupt/model.ckpt-7.data-00000-of-00001" bs=1000 seek=100 count=100 conv=notrunc 2>/dev/null
err=$("$prog" "$work/corrupt/model.ckpt-7" "$work/bad.safetensors" --bert_config_file "$fixture/bert_config.json" 2>&1); rc=$?
[ $rc = 1 ] || fail "exit $rc for a corrupt data file"
grep -q 'model.ckpt-7.data-00000-of-00001: tensor "bert/[^"]*": CRC-32C mismatch' <<<"$err" || fail "CRC message: $err"
[ ! -e "$work/bad.safetensors" ] || fail "output written despite the corrupt input"

err=$("$prog" "$work/nothing" "$work/x.safetensors" --bert_config_file "$fixture/bert_config.json" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "$work/nothing: not a TensorFlow checkpoint" <<<"$err" || fail "missing input: $rc $err"
err=$("$prog" "$fixture/model.ckpt-7" "$work/x.safetensors" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "bert_config_file is required" <<<"$err" || fail "no config: $rc $err"
echo "ctdl-convert: all checks passed"

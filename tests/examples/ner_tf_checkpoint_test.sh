#!/usr/bin/env bash
# A token classifier fine-tuned by the TensorFlow run_ner.py of NVIDIA and of BioBERT
# predicts with ner_span_classifier as that script predicts:
# tests/fixtures/tf_ner_checkpoint (made by tools/make_tf_fixture.py with TensorFlow) holds
# such a checkpoint (output_weights [7, H]: padding, B, I, O, X, [CLS], [SEP]; Adam slots,
# gradient accumulators and the fp16 loss scale of NVIDIA's optimization.py, skipped quietly;
# global_step), a test file, and the NER_result_conll.txt the script's own steps write for
# it: its _read_data cut, convert_single_example (a reference WordPiece) and result_to_pair
# over TensorFlow's logits at every position. The model's predictions put every class
# somewhere (padding, X and [CLS] at word positions, [SEP] early), so the reading is
# checked in all its cases.
# Checked: --ner_scheme=tensorflow (the default) with --pad_to_max_length writes the
# script's words, gold labels and predictions (its blank lines aside: the script writes a
# cut sentence's pieces apart, ctdl keeps the file's sentences); the same after
# ctdl-convert; --ner_scheme=first_piece refuses the checkpoint, naming the scheme to give.
# Flags after the fourth argument go to every run of the program: the GPU bundle
# (scripts/gpu-run.sh) passes --device=cuda, and "-" for ctdl-convert, which it lacks.
# Usage: ner_tf_checkpoint_test.sh <ner_span_classifier> <ctdl-convert|-> <fixtures dir> <work dir> [flags...]
# Exit 77 (skipped) for --device=cuda without a GPU (nvidia-smi finds none; CTDL_GPUS, when set, is the count).
set -uo pipefail
prog=$1 convert=$2 fixtures=$3 work=$4
shift 4
flags=("$@")
if [[ " ${flags[*]} " == *" --device=cuda"* ]]; then
  gpus=${CTDL_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}  # CTDL_GPUS: run.sh's count
  [ "${gpus:-0}" -gt 0 ] || { echo "SKIPPED: no GPU (nvidia-smi lists none)"; exit 77; }
fi
fx=$fixtures/tf_ner_checkpoint
fail() { echo "FAILED: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work/data" || fail "cannot make $work"
# The labels come from train.tsv (sorted: B, I, O, the script's order); the script writes no labels.txt.
cp "$fx/test.tsv" "$work/data/test.tsv" && cp "$fx/test.tsv" "$work/data/train.tsv" || fail "cannot copy $fx/test.tsv"
args=(--task_name=ner --do_predict --vocab_file="$fixtures/tiny_vocab.txt" --bert_config_file="$fx/bert_config.json"
      --cased --data_dir="$work/data" --max_seq_length=40 --pad_to_max_length --precision=fp32 "${flags[@]}")
words() { grep -v '^$' "$1"; }

"$prog" "${args[@]}" --init_checkpoint="$fx" --output_dir="$work/out" >"$work/stdout" 2>"$work/stderr" \
  || { cat "$work/stderr"; fail "prediction from the TensorFlow checkpoint failed"; }
grep -qF "NER scheme: tensorflow (the default;" "$work/stderr" || fail "no scheme notice: $(cat "$work/stderr")"
grep -qxF "labels: B, I, O (those of $work/data/train.tsv)" "$work/stderr" || fail "labels line (nothing is saved without --do_train): $(grep ^labels "$work/stderr")"
grep -q "^activation: gelu_tanh.* TensorFlow checkpoint" "$work/stderr" || fail "no activation notice: $(cat "$work/stderr")"
grep -q "note: .*skipped" "$work/stderr" && fail "a tensor was skipped: $(grep skipped "$work/stderr")"
diff <(words "$fx/NER_result_conll.txt") <(words "$work/out/NER_result_conll.txt") >"$work/diff" \
  || { cat "$work/diff"; fail "the predictions differ from the TensorFlow script's (< script, > ctdl)"; }
n=$(words "$fx/NER_result_conll.txt" | wc -l)
entities=$(awk 'NF && $3 != "O"' "$fx/NER_result_conll.txt" | wc -l)
[ "$entities" -gt 10 ] || fail "the fixture predicts $entities words other than O: it checks too little"

# Converted to safetensors, the same model predicts the same.
converted=", converted too"
if [ "$convert" = - ]; then
  converted=""
else
  mkdir -p "$work/converted"
  "$convert" "$fx" "$work/converted/model.safetensors" --bert_config_file "$fx/bert_config.json" 2>"$work/convert_err" \
    || { cat "$work/convert_err"; fail "ctdl-convert failed"; }
  grep -q "classifier.weight" <("$convert" --list "$work/converted/model.safetensors" 2>/dev/null) || fail "no classifier in the conversion"
  "$prog" "${args[@]}" --init_checkpoint="$work/converted" --hidden_act=gelu_tanh --output_dir="$work/out_converted" \
    >/dev/null 2>"$work/stderr_converted" || { cat "$work/stderr_converted"; fail "prediction from the conversion failed"; }
  cmp -s "$work/out/NER_result_conll.txt" "$work/out_converted/NER_result_conll.txt" \
    || fail "the converted checkpoint predicts otherwise"
fi

# The other scheme refuses the 7-row head, naming the scheme that reads it.
"$prog" "${args[@]}" --ner_scheme=first_piece --init_checkpoint="$fx" --output_dir="$work/out_fp" >/dev/null 2>"$work/stderr_fp" \
  && fail "--ner_scheme=first_piece loaded a 7-row head for 3 labels"
grep -qF "$fx/model.ckpt-3: the classifier has 7 rows for the 3 labels of $work/data/train.tsv (its labels): a token classifier of --ner_scheme=tensorflow" "$work/stderr_fp" \
  || fail "first_piece's refusal: $(cat "$work/stderr_fp")"
echo "the TensorFlow run_ner.py checkpoint predicts its script's labels for all $n words ($entities not O)$converted${flags[*]:+ (${flags[*]})}"

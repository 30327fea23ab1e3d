#!/usr/bin/env python3
"""Hugging Face BertTokenizerFast (Rust) throughput over the lines of a file, the peer of
bench_tokenizer: same vocabulary, same rows, no special tokens, I/O not timed, best of
--reps. Prints one JSON line. Threads: RAYON_NUM_THREADS (set by compare_tokenizer.sh)."""
import argparse
import json
import os
import time

from transformers import BertTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("--vocab_file", required=True)
ap.add_argument("--cased", choices=["true", "false"], required=True)
ap.add_argument("--input", required=True)
ap.add_argument("--reps", type=int, default=3)
args = ap.parse_args()

tok = BertTokenizerFast(args.vocab_file, do_lower_case=args.cased == "false")
with open(args.input, encoding="utf-8") as f:
    lines = f.read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
best, tokens = 1e30, 0
for _ in range(args.reps):
    t0 = time.perf_counter()
    enc = tok(lines, add_special_tokens=False)["input_ids"]  # batch: Rust, parallel
    best = min(best, time.perf_counter() - t0)
    tokens = sum(len(e) for e in enc)
print(json.dumps({"rows": len(lines), "tokens": tokens, "seconds": round(best, 4),
                  "rows_per_s": round(len(lines) / best), "tokens_per_s": round(tokens / best),
                  "threads": int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))}))

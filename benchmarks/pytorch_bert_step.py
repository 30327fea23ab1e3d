#!/usr/bin/env python3
"""The PyTorch side of benchmarks/compare_pytorch.sh: the same BERT step as bert_bench.

Hugging Face BertForSequenceClassification (default SDPA attention), random weights, vocabulary
28,996, 5 labels, random token ids with a full attention mask. A training step is forward
(dropout on) + cross-entropy + backward + SGD update; inference is forward under
torch.no_grad(). bf16 uses torch.autocast (bf16 matmuls, fp32 master weights). Prints one
JSON line with the same keys as bert_bench where they apply.
"""
import argparse
import json
import resource
import statistics
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

FAMILIES = {"tiny": (128, 2, 512, 2), "mini": (256, 4, 1024, 4), "minilm": (384, 12, 1536, 12),
            "small": (512, 8, 2048, 4), "base": (768, 12, 3072, 12), "large": (1024, 16, 4096, 24)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="base", choices=FAMILIES)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq_len", type=int, default=128)
    ap.add_argument("--mode", default="train", choices=["train", "infer"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    h, heads, inter, layers = FAMILIES[a.model]
    cfg = BertConfig(vocab_size=28996, hidden_size=h, num_attention_heads=heads, intermediate_size=inter,
                     num_hidden_layers=layers, num_labels=5)
    model = BertForSequenceClassification(cfg)  # default attention (SDPA): PyTorch at its best
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 28996, (a.batch, a.seq_len), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 5, (a.batch,), generator=g)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.precision == "bf16" else \
        (lambda: torch.autocast("cpu", enabled=False))

    def step():
        if a.mode == "train":
            model.train()
            with ctx():
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.no_grad(), ctx():
                model(input_ids=ids, attention_mask=mask)

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    step_ms = statistics.median(times)
    print(json.dumps({"impl": "pytorch " + torch.__version__, "model": a.model, "precision": a.precision,
                      "mode": a.mode, "batch": a.batch, "seq_len": a.seq_len, "threads": torch.get_num_threads(),
                      "step_ms": round(step_ms, 1), "sentences_per_s": round(1e3 * a.batch / step_ms, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()

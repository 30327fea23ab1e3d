#!/usr/bin/env python3
"""The demo's fine-tuning recipe in PyTorch + Hugging Face transformers: the peer that
scripts/demo.sh's pretrained MiniLM run is timed against (needs torch and transformers;
nothing in ctdl needs this script).

Fine-tunes all-MiniLM-L6-v2 (scripts/fetch-minilm.sh's directory) as a
BertForSequenceClassification on the first 80% of the consensus rows and evaluates on the
rest, with the features of the original pipeline (docs/data.md: uncased, [CLS] + the left
context padded or cut to c-1 pieces + span + right context, cut to M-1, [SEP], [PAD];
spans not masked; segment ids 0), batch 32, torch.optim.AdamW with BERT's settings (weight
decay 0.01, none on biases and LayerNorm, eps 1e-6; unlike BERT's AdamWeightDecay, which ctdl
follows, it corrects Adam's bias), linear warmup over 10% of the steps then
linear decay to 0, gradient clipping at global norm 1.0, dropout 0.1, shuffled rows each
epoch. Prints the training time (the optimisation steps only: no data preparation, no
evaluation; wall and CPU seconds: on a shared machine the CPU time is the steadier figure),
eval_accuracy and the majority baseline, and one JSON line.

  python3 benchmarks/minilm_finetune_pytorch.py --model_dir DIR [--data_dir ../shared/data/consensus-example]
      [--max_seq_length 64] [--batch_size 32] [--learning_rate 1e-4] [--epochs 10]
      [--precision fp32|bf16] [--threads N] [--seed 42]
"""
import argparse
import json
import os
import random
import sys
import time

import torch
import transformers


def span_features(tokenizer, left, span, right, m):
    """The original pipeline's span feature (docs/data.md)."""
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
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--data_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                       "consensus-example"))
    ap.add_argument("--max_seq_length", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--learning_rate", type=float, default=1e-4)
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--warmup_proportion", type=float, default=0.1)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    with open(os.path.join(args.data_dir, "labels.txt"), encoding="utf-8") as f:
        labels = [l.strip() for l in f if l.strip()]
    with open(os.path.join(args.data_dir, "dev.tsv"), "rb") as f:
        rows = [l.rstrip("\r").split("\t") for l in f.read().decode("utf-8").split("\n") if l.rstrip("\r")]
    n_train = len(rows) * 8 // 10  # the demo's split: the first 80% train, the rest evaluate
    # The directory as scripts/fetch-minilm.sh leaves it has tokenizer.json (its WordPiece
    # vocabulary, lower-casing) and no vocab.txt; a converted one may have vocab.txt.
    vocab_txt, tokenizer_json = (os.path.join(args.model_dir, f) for f in ("vocab.txt", "tokenizer.json"))
    if os.path.exists(vocab_txt):
        tokenizer = transformers.BertTokenizer(vocab_txt, do_lower_case=True)
    else:
        tokenizer = transformers.BertTokenizerFast(tokenizer_file=tokenizer_json, do_lower_case=True)

    def features(part):
        ids, mask = zip(*(span_features(tokenizer, r[-3], r[-2], r[-1], args.max_seq_length) for r in part))
        return (torch.tensor(ids), torch.tensor(mask), torch.tensor([labels.index(r[-4]) for r in part]))

    train, evaluation = features(rows[:n_train]), features(rows[n_train:])
    majority = max(labels, key=lambda l: sum(r[-4] == l for r in rows[:n_train]))
    baseline = sum(r[-4] == majority for r in rows[n_train:]) / (len(rows) - n_train)

    model = transformers.BertForSequenceClassification.from_pretrained(args.model_dir, num_labels=len(labels))
    no_decay = lambda name: name.endswith("bias") or "LayerNorm" in name
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=1e-6)
    steps_per_epoch = (n_train + args.batch_size - 1) // args.batch_size
    total_steps = int(steps_per_epoch * args.epochs)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(total_steps * args.warmup_proportion),
                                                             total_steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    model.train()
    step, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while step < total_steps:
        order = torch.randperm(n_train)
        for b in range(steps_per_epoch):
            if step == total_steps:
                break
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            with autocast:
                out = model(input_ids=train[0][idx], attention_mask=train[1][idx], labels=train[2][idx])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 25 == 0 or step == total_steps:
                print(f"step {step}/{total_steps} loss {out.loss.item():.4f} {time.perf_counter() - start:.1f}s",
                      file=sys.stderr, flush=True)
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    model.eval()
    correct = 0
    with torch.no_grad(), autocast:
        for b in range(0, len(evaluation[2]), 32):
            logits = model(input_ids=evaluation[0][b:b + 32], attention_mask=evaluation[1][b:b + 32]).logits
            correct += (logits.argmax(-1) == evaluation[2][b:b + 32]).sum().item()
    accuracy = correct / len(evaluation[2])
    print(f"training: {total_steps} steps of {args.batch_size} in {train_seconds:.1f} s ({train_cpu_seconds:.1f} s of CPU; {args.threads} threads, "
          f"{args.precision}); eval_accuracy = {accuracy:.4f}; majority_baseline = {baseline:.4f}")
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "transformers": transformers.__version__,
                      "precision": args.precision, "threads": args.threads, "epochs": args.epochs,
                      "learning_rate": args.learning_rate, "steps": total_steps, "train_seconds": round(train_seconds, 1),
                      "train_cpu_seconds": round(train_cpu_seconds, 1),
                      "eval_accuracy": accuracy, "majority_baseline": baseline}))


if __name__ == "__main__":
    main()

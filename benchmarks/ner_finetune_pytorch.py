#!/usr/bin/env python3
"""The NER recipe of `ner_span_classifier --task_name=ner` in PyTorch + Hugging Face
transformers: the peer that benchmarks/compare_ner_finetune.sh runs against it (needs torch
and transformers; nothing in ctdl needs this script).

Fine-tunes a BERT directory (scripts/fetch-minilm.sh's all-MiniLM-L6-v2 by default) as a
BertForTokenClassification on <data_dir>/train.tsv (CoNLL: a word and its label a line,
first and last fields; a blank line between sentences) and predicts <data_dir>/devel.tsv,
with ctdl's features (docs/data.md, "Token (NER) data": each word's pieces, the first one
labelled, the rest -100; a sentence of more than M-2 pieces cut at word boundaries into
several features; a word of more than M-2 pieces keeps its first M-2; a word with no pieces
becomes [UNK]), labels sorted, batch 32 of features, torch.optim.AdamW with BERT's settings
(weight decay 0.01, none on biases and LayerNorm, eps 1e-6; unlike BERT's AdamWeightDecay,
which ctdl follows, it corrects Adam's bias), linear warmup over 10% of the steps then linear
decay to 0, clipping at global norm 1.0, dropout 0.1, shuffled features each epoch (a last
short batch dropped, as ctdl does). Each batch is cut to its longest feature rounded up to
a multiple of 8 (as ctdl's default and Hugging Face's DataCollatorForTokenClassification
with pad_to_multiple_of=8 pad), or left max_seq_length wide with --pad_to_max_length (as
ctdl's flag of that name). With --group_by_length the training batches come from Hugging
Face's own get_length_grouped_indices (its Trainer's group_by_length: shuffled runs of up to
50 batches, each sorted by length), as ctdl's --group_by_length. Prediction batches
devel.tsv's features in order of decreasing length, as ctdl does (each batch then as wide
as its longest feature), unless --pad_to_max_length. Writes <out>/NER_result_conll.txt (word gold predicted,
a blank line after each sentence: conlleval's input) and prints the training time and one
JSON line.

  python3 benchmarks/ner_finetune_pytorch.py --model_dir DIR --data_dir DIR --out DIR
      [--max_seq_length 128] [--batch_size 32] [--learning_rate 5e-5] [--epochs 1]
      [--precision fp32|bf16] [--threads N] [--seed 42] [--lower_case] [--pad_to_max_length]
      [--group_by_length]
"""
import argparse
import json
import os
import random
import sys
import time

import torch
import transformers
import transformers.trainer_pt_utils


def read_conll(path):
    """Sentences of (word, label), as ctdl's ConllReader reads them."""
    sentences, current = [], []
    with open(path, "rb") as f:
        for raw in f.read().decode("utf-8").split("\n"):
            fields = raw.rstrip("\r").split()
            if not fields or fields[0] == "-DOCSTART-":
                if current:
                    sentences.append(current)
                current = []
                continue
            current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def features(tokenizer, sentences, labels, m):
    """ctdl's token features: (ids, label ids, sentence index) per feature."""
    cls, sep, pad, unk = (tokenizer.convert_tokens_to_ids(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"))
    room, out = m - 2, []
    for k, sentence in enumerate(sentences):
        ids, tags = [], []
        for word, label in sentence:
            pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word)) or [unk]
            pieces = pieces[:room]
            if len(ids) + len(pieces) > room:
                out.append((ids, tags, k))
                ids, tags = [], []
            ids += pieces
            tags += [labels.index(label)] + [-100] * (len(pieces) - 1)
        out.append((ids, tags, k))
    padded = []
    for ids, tags, k in out:
        ids, tags = [cls] + ids + [sep], [-100] + tags + [-100]
        padded.append((ids + [pad] * (m - len(ids)), tags + [-100] * (m - len(tags)), k))
    return padded


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max_seq_length", type=int, default=128)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--learning_rate", type=float, default=5e-5)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--warmup_proportion", type=float, default=0.1)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lower_case", action="store_true")
    ap.add_argument("--pad_to_max_length", action="store_true")
    ap.add_argument("--group_by_length", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    train_sentences = read_conll(os.path.join(args.data_dir, "train.tsv"))
    devel_sentences = read_conll(os.path.join(args.data_dir, "devel.tsv"))
    labels = sorted({label for s in train_sentences for _, label in s})
    vocab_txt, tokenizer_json = (os.path.join(args.model_dir, f) for f in ("vocab.txt", "tokenizer.json"))
    if os.path.exists(vocab_txt):
        tokenizer = transformers.BertTokenizer(vocab_txt, do_lower_case=args.lower_case)
    else:
        tokenizer = transformers.BertTokenizerFast(tokenizer_file=tokenizer_json, do_lower_case=args.lower_case)

    def tensors(feats):
        return (torch.tensor([f[0] for f in feats]), torch.tensor([f[1] for f in feats]))

    train_feats = features(tokenizer, train_sentences, labels, args.max_seq_length)
    devel_feats = features(tokenizer, devel_sentences, labels, args.max_seq_length)
    train_ids, train_tags = tensors(train_feats)
    devel_ids, devel_tags = tensors(devel_feats)

    model = transformers.BertForTokenClassification.from_pretrained(args.model_dir, num_labels=len(labels))
    no_decay = lambda name: name.endswith("bias") or "LayerNorm" in name
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=1e-6)
    n = len(train_feats)
    steps_per_epoch = n // args.batch_size  # a last short batch dropped, as ctdl's training does
    total_steps = int(n / args.batch_size * args.epochs)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(total_steps * args.warmup_proportion),
                                                             total_steps)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    pad = tokenizer.convert_tokens_to_ids("[PAD]")

    def trimmed(ids, tags):
        """The batch as wide as its longest feature (rounded up to 8), unless --pad_to_max_length."""
        if args.pad_to_max_length:
            return ids, tags
        width = int((ids != pad).long().cumsum(1).argmax(1).max()) + 1  # one past the last non-[PAD]
        width = min(ids.shape[1], (width + 7) // 8 * 8)
        return ids[:, :width].contiguous(), tags[:, :width].contiguous()

    # Each feature's length: one past its last non-[PAD] (what the trimmed batches cut at).
    length_of = lambda ids: (int((ids != pad).long().cumsum(1).argmax(1).max()) + 1) if ids.numel() else 0
    train_lengths = [length_of(train_ids[i:i + 1]) for i in range(n)]
    model.train()
    step, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while step < total_steps:
        if args.group_by_length:
            order = torch.tensor(transformers.trainer_pt_utils.get_length_grouped_indices(train_lengths, args.batch_size))
        else:
            order = torch.randperm(n)
        for b in range(steps_per_epoch):
            if step == total_steps:
                break
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            ids, tags = trimmed(train_ids[idx], train_tags[idx])
            with autocast:
                out = model(input_ids=ids, attention_mask=(ids != pad).long(), labels=tags)
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

    # Each word's prediction at its first piece, sentences put back together.
    model.eval()
    predicted = [[] for _ in devel_sentences]
    predict_start = time.perf_counter()
    with torch.no_grad(), autocast:
        # In order of decreasing length (ties in file order), so that trimmed batches hold
        # little padding; each feature's words go back to its sentence in file order.
        rows = list(range(len(devel_feats)))
        if not args.pad_to_max_length:
            lengths = [length_of(devel_ids[i:i + 1]) for i in rows]
            rows.sort(key=lambda i: -lengths[i])
        words_of = [[] for _ in devel_feats]
        for b in range(0, len(rows), 64):
            idx = torch.tensor(rows[b:b + 64])
            ids, tags = trimmed(devel_ids[idx], devel_tags[idx])
            logits = model(input_ids=ids, attention_mask=(ids != pad).long()).logits
            best = logits.argmax(-1)
            for i in range(ids.shape[0]):
                scored = tags[i] != -100
                words_of[rows[b + i]] = [labels[j] for j in best[i][scored].tolist()]
        for f, words in zip(devel_feats, words_of):  # features in file order: a sentence's in turn
            predicted[f[2]] += words
    predict_seconds = time.perf_counter() - predict_start
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "NER_result_conll.txt"), "w", encoding="utf-8") as f:
        for sentence, guesses in zip(devel_sentences, predicted):
            assert len(sentence) == len(guesses)
            for (word, gold), guess in zip(sentence, guesses):
                f.write(f"{word} {gold} {guess}\n")
            f.write("\n")
    print(f"training: {total_steps} steps of {args.batch_size} features in {train_seconds:.1f} s "
          f"({train_cpu_seconds:.1f} s of CPU; {args.threads} threads, {args.precision})")
    print(f"prediction: {len(devel_feats)} features in {predict_seconds:.1f} s")
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "transformers": transformers.__version__,
                      "precision": args.precision, "threads": args.threads, "epochs": args.epochs,
                      "pad_to_max_length": args.pad_to_max_length, "group_by_length": args.group_by_length,
                      "learning_rate": args.learning_rate, "steps": total_steps, "train_features": n,
                      "train_seconds": round(train_seconds, 1), "train_cpu_seconds": round(train_cpu_seconds, 1),
                      "predict_seconds": round(predict_seconds, 1)}))


if __name__ == "__main__":
    main()

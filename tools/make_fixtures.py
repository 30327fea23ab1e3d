#!/usr/bin/env python3
"""Makes the Hugging Face parity fixtures under tests/fixtures/ (developer tool, not run by CI).

For each GELU form (hidden_act "gelu" = erf, "gelu_new" = tanh) and each head
(BertForSequenceClassification, BertForTokenClassification) it builds a tiny BERT with
random weights, runs a padded batch in eval mode (no dropout) in float64, and saves into
one safetensors file:
  - every parameter under its Hugging Face name (F64; values are float32-representable,
    so an fp32 run loads exactly the same weights),
  - the inputs: input_ids, token_type_ids, attention_mask, labels (I64; -100 = ignored),
  - expected.logits, expected.loss, and grad.<name> for every parameter (F64),
  - the config as JSON in the metadata ("config").

Usage (needs torch, transformers, safetensors from PyPI):
  python3 tools/make_fixtures.py [--out tests/fixtures]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

# A family small enough to commit (the test instantiates Family<32, 4, 64>).
CONFIG = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=16, type_vocab_size=2,
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
              layer_norm_eps=1e-12)
NUM_LABELS = 5


def make(head, act, seed):
    torch.manual_seed(seed)
    cfg = BertConfig(**CONFIG, hidden_act=act, num_labels=NUM_LABELS)
    cls = BertForSequenceClassification if head == "seq" else BertForTokenClassification
    model = cls(cfg, attn_implementation="eager") if "attn_implementation" in cls.__init__.__code__.co_varnames \
        else cls(cfg)
    model.config._attn_implementation = "eager"
    # Weights large enough that every part of the network matters, rounded to float32.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model = model.double().eval()

    batch, seq = 3, 7
    input_ids = torch.randint(1, CONFIG["vocab_size"], (batch, seq))
    lengths = [7, 5, 3]
    attention_mask = torch.zeros(batch, seq, dtype=torch.long)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
        input_ids[b, n:] = 0  # [PAD]
    token_type_ids = torch.zeros(batch, seq, dtype=torch.long)
    token_type_ids[:, 4:] = 1
    if head == "seq":
        labels = torch.tensor([4, 0, 2])
    else:
        labels = torch.randint(0, NUM_LABELS, (batch, seq))
        labels[attention_mask == 0] = -100
        labels[0, 2] = -100  # a non-first word piece
    out = model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()

    tensors = {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}
    tensors.update({"grad." + name: p.grad.detach().clone().contiguous() for name, p in model.named_parameters()})
    tensors.update({
        "input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
        "labels": labels, "expected.logits": out.logits.detach().contiguous(),
        "expected.loss": out.loss.detach().reshape(()).contiguous(),
    })
    meta = {"config": json.dumps({**CONFIG, "hidden_act": act}), "num_labels": str(NUM_LABELS),
            "torch": torch.__version__, "made_by": "tools/make_fixtures.py"}
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i, (head, act) in enumerate([(h, a) for h in ("seq", "tok") for a in ("gelu", "gelu_new")]):
        tensors, meta = make(head, act, seed=100 + i)
        path = os.path.join(args.out, f"bert_{head}_{act}.safetensors")
        save_file(tensors, path, metadata=meta)
        print(f"wrote {path}: loss {tensors['expected.loss'].item():.6f}")


if __name__ == "__main__":
    main()

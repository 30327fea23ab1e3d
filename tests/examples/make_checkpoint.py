#!/usr/bin/env python3
"""Writes a small BERT classifier checkpoint (model.safetensors) for bad_inputs_test.sh,
with Python's standard library only (no torch): every weight 0, every LayerNorm weight 1,
so that a checkpoint that loads gives finite logits. Options bend it into the defects the
loader must refuse.

usage: make_checkpoint.py OUT.safetensors --vocab N [--hidden 128 --intermediate 512
       --positions 64 --layers 1 --rows 5 --width H --bias_rows R --prefix bert.
       --extra NAME:D1xD2 ... --nested_metadata DEPTH --overlap]
"""
import argparse
import json
import struct


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--positions", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--rows", type=int, default=5, help="classifier rows (0: no classifier)")
    p.add_argument("--width", type=int, help="classifier width (default: hidden)")
    p.add_argument("--bias_rows", type=int, help="classifier bias length (default: rows)")
    p.add_argument("--prefix", default="bert.", help="the encoder's name prefix ('' for a bare BertModel)")
    p.add_argument("--extra", action="append", default=[], help="NAME:D1xD2 another tensor (zeros)")
    p.add_argument("--nested_metadata", type=int, default=0, help="nest __metadata__ this deep")
    p.add_argument("--overlap", action="store_true", help="the last tensor's bytes overlap the one before")
    a = p.parse_args()
    H, I = a.hidden, a.intermediate
    shapes = {
        "embeddings.word_embeddings.weight": [a.vocab, H],
        "embeddings.position_embeddings.weight": [a.positions, H],
        "embeddings.token_type_embeddings.weight": [2, H],
        "embeddings.LayerNorm.weight": [H],
        "embeddings.LayerNorm.bias": [H],
        "pooler.dense.weight": [H, H],
        "pooler.dense.bias": [H],
    }
    for i in range(a.layers):
        l = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            shapes[l + f"attention.self.{m}.weight"] = [H, H]
            shapes[l + f"attention.self.{m}.bias"] = [H]
        shapes[l + "attention.output.dense.weight"] = [H, H]
        shapes[l + "attention.output.dense.bias"] = [H]
        shapes[l + "attention.output.LayerNorm.weight"] = [H]
        shapes[l + "attention.output.LayerNorm.bias"] = [H]
        shapes[l + "intermediate.dense.weight"] = [I, H]
        shapes[l + "intermediate.dense.bias"] = [I]
        shapes[l + "output.dense.weight"] = [H, I]
        shapes[l + "output.dense.bias"] = [H]
        shapes[l + "output.LayerNorm.weight"] = [H]
        shapes[l + "output.LayerNorm.bias"] = [H]
    shapes = {a.prefix + k: v for k, v in shapes.items()}
    if a.rows:
        shapes["classifier.weight"] = [a.rows, a.width or H]
        shapes["classifier.bias"] = [a.bias_rows if a.bias_rows is not None else a.rows]
    for e in a.extra:
        name, dims = e.split(":")
        shapes[name] = [int(d) for d in dims.split("x")]

    header, blobs, offset = {}, [], 0
    for name in sorted(shapes):
        n = 1
        for d in shapes[name]:
            n *= d
        value = 1.0 if name.endswith("LayerNorm.weight") else 0.0
        blob = struct.pack(f"<{n}f", *([value] * n))
        header[name] = {"dtype": "F32", "shape": shapes[name], "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if a.overlap:  # the last tensor starts 4 bytes early; the data is 4 bytes shorter
        last = sorted(shapes)[-1]
        b, e = header[last]["data_offsets"]
        header[last]["data_offsets"] = [b - 4, e - 4]
        blobs[-1] = blobs[-1][:-4]
    text = json.dumps(header, separators=(",", ":"))
    if a.nested_metadata:
        text = '{"__metadata__":' + '{"a":' * a.nested_metadata + '"x"' + "}" * a.nested_metadata + "," + text[1:]
    text = text.encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


if __name__ == "__main__":
    main()

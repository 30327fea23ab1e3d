#!/usr/bin/env python3
"""Writes tests/fixtures/conlleval/: tag sequences in conlleval's input format
("word gold predicted" lines, sentences separated by empty lines) and, for each, the
report of the CoNLL-2000 script conlleval.pl (version 2004-01-26, default options) run on
it. metrics/test_conlleval checks that ctdl's ConllEvaluator prints the same report.

    tools/make_conlleval_fixture.py /path/to/conlleval.pl [out_dir]

conlleval.pl is not part of ctdl (it is the CoNLL shared task's script, as BioBERT's
repository ships it); give its path. The words are placeholders: only tags matter.
"""
import os
import random
import subprocess
import sys


def perturb(gold, rng, tags, rate):
    """A prediction: each tag replaced by a random one with probability `rate`."""
    return [t if rng.random() >= rate else rng.choice(tags) for t in gold]


def untyped_bio(rng, sentences):
    """BC5CDR-style: bare B, I, O; entities of 1-4 words."""
    out = []
    for _ in range(sentences):
        s, n = [], rng.randint(1, 30)
        while len(s) < n:
            if rng.random() < 0.15:
                s += ["B"] + ["I"] * rng.randint(0, 3)
            else:
                s.append("O")
        out.append(s[:n])
    return out


def typed_iob2(rng, sentences, types):
    out = []
    for _ in range(sentences):
        s, n = [], rng.randint(1, 30)
        while len(s) < n:
            if rng.random() < 0.2:
                t = rng.choice(types)
                s += ["B-" + t] + ["I-" + t] * rng.randint(0, 3)
            else:
                s.append("O")
        out.append(s[:n])
    return out


def write_case(out_dir, name, pairs, conlleval, boundary_lines=None):
    """pairs: sentences of (gold, predicted); boundary_lines: the separator to use."""
    lines = []
    for k, sentence in enumerate(pairs):
        for i, (g, p) in enumerate(sentence):
            lines.append(f"w{k}_{i} {g} {p}")
        lines.append(boundary_lines[k % len(boundary_lines)] if boundary_lines else "")
    text = "\n".join(lines) + ("\n" if lines else "")
    path = os.path.join(out_dir, name + ".txt")
    with open(path, "w") as f:
        f.write(text)
    report = subprocess.run(["perl", conlleval], input=text.encode(), capture_output=True, check=True).stdout
    with open(os.path.join(out_dir, name + ".expected"), "wb") as f:
        f.write(report)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    conlleval = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                                 "conlleval")
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(20261128)

    gold = untyped_bio(rng, 300)
    write_case(out_dir, "untyped_bio", [list(zip(s, perturb(s, rng, ["B", "I", "O"], 0.08))) for s in gold], conlleval)

    types = ["Chemical", "Disease", "gene-or-protein", "0"]
    tags = ["O"] + [p + "-" + t for p in "BI" for t in types]
    gold = typed_iob2(rng, 300, types)
    write_case(out_dir, "typed_iob2", [list(zip(s, perturb(s, rng, tags, 0.1))) for s in gold], conlleval)

    # Every tag the script knows, and some it does not, in random sequences: IOB1, IOE,
    # brackets, ".", S of IOBES, bare B/I/E, empty types ("B-"), hyphenated types.
    wild = ["O", "B-A", "I-A", "E-A", "B-B", "I-B", "E-B", "[-A", "]-A", "[-B", ".", "S-A", "B", "I", "E", "B-",
            "I-x-y", "B-x-y", "O-A"]
    pairs = []
    for _ in range(400):
        n = rng.randint(1, 12)
        pairs.append([(rng.choice(wild), rng.choice(wild)) for _ in range(n)])
    write_case(out_dir, "every_tag", pairs, conlleval, boundary_lines=["", "-X- O O", ""])

    # A chunk still open at the end of the input; one sentence; no sentence boundary after it.
    write_case(out_dir, "open_at_end", [[("B-X", "B-X"), ("I-X", "I-X")]], conlleval)
    with open(os.path.join(out_dir, "open_at_end.txt")) as f:
        text = f.read().rstrip("\n") + "\n"
    with open(os.path.join(out_dir, "open_at_end.txt"), "w") as f:
        f.write(text)
    report = subprocess.run(["perl", conlleval], input=text.encode(), capture_output=True, check=True).stdout
    with open(os.path.join(out_dir, "open_at_end.expected"), "wb") as f:
        f.write(report)

    write_case(out_dir, "empty", [], conlleval)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Makes the test fixtures of ctdl (developer tool; CI runs only `tokenizer-shared`).

  bert              Hugging Face parity fixtures under tests/fixtures/ (needs torch,
                    transformers, safetensors from PyPI). For each GELU form (hidden_act
                    "gelu" = erf, "gelu_new" = tanh) and each head (BertForSequence-
                    Classification, BertForTokenClassification) it builds a tiny BERT with
                    random weights, runs a padded batch in eval mode (no dropout) in float64,
                    and saves into one safetensors file every parameter under its Hugging Face
                    name (F64; values are float32-representable), the inputs (input_ids,
                    token_type_ids, attention_mask, labels; I64, -100 = ignored),
                    expected.logits, expected.loss, grad.<name> for every parameter, and the
                    config as JSON in the metadata ("config").
  optim             tests/fixtures/optim_steps.safetensors: four steps of AdamW, LAMB and
                    SGD with momentum (needs torch).
  tokenizer         tests/fixtures/tokenizer_goldens.json: the tokens tokenization.py gives
                    for hand-written tricky text under both rule sets (see below), cased and
                    uncased, with the committed tiny vocabulary and (when --vocab_dir has
                    them) the BERT cased/uncased vocabularies; keys "<rules>.<what>". Reports
                    where Hugging Face's slow BertTokenizer (if installed) differs from the
                    original rules.
  tokenizer-shared  goldens for the shared data written into the build tree (JSON lines),
                    for both rule sets: the ids of every consensus dev.tsv field and BC5CDR
                    sentence, and of the texts that separate the rule sets (corpus
                    "separating") (<corpus>.<rules>.<casing>.jsonl), and the span features of every
                    consensus row (consensus_dev.<rules>.features.M<m>[.MASK].jsonl; cased
                    vocabulary; M = 128, 64 with replace_span [MASK], 16), built from the
                    rules written out here independently of the C++ code. Needs only the
                    Python standard library and pip (to fetch the reference code).

The reference tokenizers (RULES) are both made from Google's tokenization.py itself, from
the bert-tensorflow wheel on PyPI (fetched with pip into --cache); its tensorflow/absl/six
imports are stubbed, as it only uses them to open files and read a flag.
  google    the file as it is: Google's first BERT release (words over 200 code points
            become [UNK]; control = categories Cc and Cf).
  original  the tokenization.py that the original pipeline (run_ner_consensus.py) ships,
            which differs from Google's in exactly two rules, patched into Google's text
            by ORIGINAL_PATCHES (each replacement must match exactly once, or the tool
            stops): max_input_chars_per_word defaults to 100, and _is_control counts every
            category starting with "C" (Cc, Cf, Co, Cn, Cs), as Hugging Face does. Both keep
            tab, newline and carriage return out of control (they are whitespace). It runs
            with Unicode 9.0's categories, as the original did on Python 3.6
            (tools/unicode9.py: a character assigned since is Cn, so dropped); Google's
            with this Python's.

Usage:
  python3 tools/make_fixtures.py bert [--out tests/fixtures]
  python3 tools/make_fixtures.py optim
  python3 tools/make_fixtures.py tokenizer [--vocab_dir ../shared/data/vocab]
  python3 tools/make_fixtures.py tokenizer-shared --data ../shared/data --out build/tests/goldens
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import types
import unicodedata

import unicode9  # tools/unicode9.py, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

# A family small enough to commit (the test instantiates Family<32, 4, 64>).
CONFIG = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=16, type_vocab_size=2,
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
              layer_norm_eps=1e-12)
NUM_LABELS = 5


def make(head, act, seed):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification
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


def make_bert(args):
    from safetensors.torch import save_file
    os.makedirs(args.out, exist_ok=True)
    for i, (head, act) in enumerate([(h, a) for h in ("seq", "tok") for a in ("gelu", "gelu_new")]):
        tensors, meta = make(head, act, seed=100 + i)
        path = os.path.join(args.out, f"bert_{head}_{act}.safetensors")
        save_file(tensors, path, metadata=meta)
        print(f"wrote {path}: loss {tensors['expected.loss'].item():.6f}")


# ---- optimizer fixtures -----------------------------------------------------------------

def make_optim(args):
    """tests/fixtures/optim_steps.safetensors: 4 steps of AdamW (BERT's), LAMB (NVIDIA's)
    and SGD with momentum on a weight (decayed) and a bias (not decayed), in float64.
    SGD is torch.optim.SGD itself; AdamW and LAMB are their published update rules
    written in torch (PyTorch's own AdamW has bias correction, BERT's has not)."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(7)
    d = torch.float64
    init = {"weight": (0.5 * torch.randn(4, 3)).float().to(d), "bias": (0.1 * torch.randn(3)).float().to(d)}
    decay = {"weight": 0.01, "bias": 0.0}
    steps = 4
    grads = [{k: (torch.randn_like(v) * s).float().to(d) for k, v in init.items()} for s in (1.0, 0.1, 3.0, 0.01)]
    lrs = [1e-2, 2e-2, 5e-3, 1e-2]
    out = {"init." + k: v.clone() for k, v in init.items()}
    out["lr"] = torch.tensor(lrs, dtype=d)
    for t in range(steps):
        for k in init:
            out[f"grad.{t}.{k}"] = grads[t][k].clone()

    b1, b2, eps = 0.9, 0.999, 1e-6
    w = {k: v.clone() for k, v in init.items()}; m = {k: torch.zeros_like(v) for k, v in w.items()}; v2 = {k: torch.zeros_like(x) for k, x in w.items()}
    for t in range(steps):
        for k in w:
            g = grads[t][k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            w[k] = w[k] - lrs[t] * (m[k] / (v2[k].sqrt() + eps) + decay[k] * w[k])
            out[f"adamw.{t}.{k}"] = w[k].clone()

    w = {k: v.clone() for k, v in init.items()}; m = {k: torch.zeros_like(v) for k, v in w.items()}; v2 = {k: torch.zeros_like(x) for k, x in w.items()}
    for t in range(steps):
        for k in w:
            g = grads[t][k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            u = (m[k] / (1 - b1 ** (t + 1))) / ((v2[k] / (1 - b2 ** (t + 1))).sqrt() + eps) + decay[k] * w[k]
            ratio = 1.0
            if decay[k] > 0 and w[k].norm() > 0 and u.norm() > 0:
                ratio = (w[k].norm() / u.norm()).item()
            w[k] = w[k] - lrs[t] * ratio * u
            out[f"lamb.{t}.{k}"] = w[k].clone()

    params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
    sgd = torch.optim.SGD([{"params": [params["weight"]], "weight_decay": 0.01},
                           {"params": [params["bias"]], "weight_decay": 0.0}], lr=lrs[0], momentum=0.9)
    for t in range(steps):
        for group in sgd.param_groups:
            group["lr"] = lrs[t]
        for k, p in params.items():
            p.grad = grads[t][k].clone()
        sgd.step()
        for k, p in params.items():
            out[f"sgd.{t}.{k}"] = p.detach().clone()
    path = os.path.join(args.out, "optim_steps.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"made_by": "tools/make_fixtures.py optim",
                                                                          "torch": torch.__version__})
    print(f"wrote {path}")


# ---- tokenizer goldens ------------------------------------------------------------------

REFERENCE_WHEEL = "bert-tensorflow==1.0.4"

# The rule sets, in the order of the goldens; "original" is ctdl's default.
RULES = ("original", "google")

# Google's tokenization.py -> the original pipeline's: (Google's text, the original's text).
ORIGINAL_PATCHES = [
    # WordpieceTokenizer: a word over 100 code points (not 200) becomes [UNK].
    ('def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):',
     'def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=100):'),
    # _is_control: every "C*" category (not only Cc and Cf); the \t \n \r exception above
    # it stays.
    ('  cat = unicodedata.category(char)\n  if cat in ("Cc", "Cf"):\n    return True',
     '  cat = unicodedata.category(char)\n  if cat.startswith("C"):\n    return True'),
]


# What the original's Python 3.6 did differently from this Python, in the one call of
# tokenization.py that is not a unicodedata function: str.lower(), whose final-sigma rule
# reads the Cased and Case_Ignorable properties, here 9.0's (unicode9.lower_string).
PYTHON36_PATCHES = [
    ("        token = token.lower()\n", "        token = _lower_python36(token)\n"),
]


def reference_tokenizations(cache):
    """{rules: tokenization module} for RULES: Google's file, and the original's (Google's
    with ORIGINAL_PATCHES applied, reading Unicode 9.0's categories)."""
    google = google_tokenization(cache)
    source = google.__loader__.get_source(google.__name__)  # read from inside the wheel
    for theirs, ours in ORIGINAL_PATCHES + PYTHON36_PATCHES:
        if source.count(theirs) != 1:
            raise RuntimeError(f"{REFERENCE_WHEEL} tokenization.py: expected one {theirs!r}, found "
                               f"{source.count(theirs)}; the original-rules patch no longer applies")
        source = source.replace(theirs, ours)
    original = types.ModuleType("bert_tokenization_original")
    original.__file__ = google.__file__ + " (original pipeline's rules)"
    with _stubbed_imports():
        exec(compile(source, original.__file__, "exec"), original.__dict__)
    # Python 3.6's unicodedata, for the two calls tokenization.py makes: category() from
    # Unicode 9.0's tables; normalize("NFD") from this Python (canonical decompositions
    # of characters that 9.0 has are stable; the others are dropped before); and its
    # str.lower() (PYTHON36_PATCHES): 9.0's mappings and final-sigma properties.
    ucd = unicode9.Database(cache)
    original.unicodedata = types.SimpleNamespace(category=lambda ch: ucd.category(ord(ch)),
                                                 normalize=unicodedata.normalize, unidata_version=unicode9.VERSION)
    original._lower_python36 = ucd.lower_string
    return {"original": original, "google": google}


def google_tokenization(cache):
    """Imports tokenization.py from the bert-tensorflow wheel (fetched once into cache)."""
    os.makedirs(cache, exist_ok=True)
    wheels = [f for f in os.listdir(cache) if f.startswith("bert_tensorflow-1.0.4") and f.endswith(".whl")]
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", cache,
                        REFERENCE_WHEEL], check=True)
        wheels = [f for f in os.listdir(cache) if f.startswith("bert_tensorflow-1.0.4") and f.endswith(".whl")]
    sys.path.insert(0, os.path.join(cache, wheels[0]))  # a wheel is a zip: importable as is
    with _stubbed_imports():
        from bert import tokenization
    return tokenization


@contextlib.contextmanager
def _stubbed_imports():
    """tokenization.py imports tensorflow (for tf.gfile.GFile), absl.flags (one flag,
    preserve_unused_tokens, default False) and six: stand-ins for exactly those uses, in
    place of the real modules while it loads (so that a caller that has TensorFlow, such as
    tools/make_tf_fixture.py, can load it twice without defining its flag twice)."""
    tf = types.ModuleType("tensorflow.compat.v1")
    tf.gfile = types.SimpleNamespace(GFile=lambda path, mode: open(path, mode, encoding="utf-8"))
    flags = types.ModuleType("absl.flags")
    flags.DEFINE_bool = lambda *a, **k: None
    flags.FLAGS = types.SimpleNamespace(preserve_unused_tokens=False)
    absl = types.ModuleType("absl")
    absl.flags = flags
    six = types.ModuleType("six")
    six.PY2, six.PY3 = False, True
    stubs = {"tensorflow": types.ModuleType("tensorflow"), "tensorflow.compat": types.ModuleType("tensorflow.compat"),
             "tensorflow.compat.v1": tf, "absl": absl, "absl.flags": flags, "six": six}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


# Hand-written text that exercises every rule of the basic tokenizer and WordPiece.
TRICKY = [
    "Hello, World! unaffable",
    "",
    "   \t\n  ",
    "Café déjà vu — naïve façade, Ångström ÅNGSTRÖM",
    "e\u0301 o\u0308 a\u030a\u0323 n\u0303o \u0301alone Ω\u0342",
    "ΟΔΟΣ Σίσυφος ΣΊΣΥΦΟΣ. Σ ΣΣ ΑΣ'Β aΣ ΑΣ1 ΌΣΟΣ» «ΣΑΣ»",
    "İstanbul İ DİYARBAKIR ǅemal ǈ STRASSE Straße ẞ",
    "中文字符测试abc日本語のテキスト 한국어 텍스트 豈更 𠀀𪜀",
    "I ❤️ NLP 🤖🧬 👩\u200d🔬 👍🏽",
    "tab\there\nnewline\rcr\x0bvt\x0cff\x00nul\x7fdel\x85nel\ufffdrepl\x1cfs\x1fus",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj\u00adsoft",
    "nbsp\u00a0thin\u2009ideo\u3000line\u2028para\u2029sep\u1680ogham\u202fnnbsp\u180emvs",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " " + "d" * 200 + " " + "e" * 201 + " " + "é" * 150,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "ＡＢＣ１２３！？（ｔｅｓｔ） ｶﾀｶﾅ ﬁne ﬀ ㍿",
    "$100 ^caret `tick ~tilde «quotes» „de“ ¿qué? ¡sí! 3.14 1,000 e.g. U.S.A. don't",
    "—–‐ dashes § ¶ † ‡ • … ‰ ′ ″ ‹ › © ® ™ ° ± × ÷ µ ½ ² €",
    "IL-2Rα-chain; TNF-α/β; Ca2+ [3H]thymidine 5'-UTR β-D-glucopyranoside N,N'-dimethyl",
    "Привет мир ЁЖИК; مرحبا بالعالم; שָׁלוֹם; नमस्ते दुनिया; สวัสดีชาวโลก",
    "private\ue000use unassigned\u0378x \U0001d400\U0001d401 Ⅻ ⅻ Ⓐ ⓐ ª º",
    "[CLS] [SEP] [UNK] [MASK] [PAD] ##s ##",
    "Naloxone reverses the antihypertensive effect of clonidine.",
]

# Texts that separate the rule sets (the shared data has none): words of 100/101 code
# points (ASCII and two-byte), private use (Co: U+E000, U+F8FF, U+F0000) and unassigned
# (Cn: U+0378, U+0530, U+E0080, noncharacters U+FDD0, U+FFFF) characters -- dropped by the
# original's rules, kept by Google's. Cs (surrogates) cannot be written in well-formed
# UTF-8, so no text here holds one. The Cn code points are unassigned in every Unicode
# version Python or utf8proc may use. The next text holds characters assigned after
# Unicode 9.0 (U+9FD6, U+1F92A, U+0860: 10.0; U+1E030: 15.0, which this Python (14.0)
# and utf8proc (15.0) both keep under Google's rules) and characters whose category changed
# since 9.0: U+166D Po -> So, U+111C9 Po -> Mn, U+1734 Mn -> Mc, U+A9BD Mc -> Mn (the marks
# matter to uncased models, which strip Mn). Part of TRICKY, and of the shared goldens as
# the corpus "separating".
SEPARATING = [
    "a" * 100 + " " + "a" * 101,
    "é" * 100 + " " + "é" * 101 + " Naloxone " + "b" * 101 + ".",
    "ab\ue000cd ef\u0378gh \U000f0000 x\uffffy \uf8ff \u0530 \ufdd0 tag\U000e0080end",
    "Ca2\ue000+ IL-\u03782 \ue000 \u0378",
    "\u9fd5\u9fd6 smile\U0001f92a x\u0860y \U0001e030mod chi\u166dsign sa\U000111c9rada pa\u1734mud ja\ua9bdva",
    # A capital sigma's final form when lower-casing (uncased) depends on its neighbours'
    # Cased and Case_Ignorable properties, which changed since 9.0 for U+055F (case-
    # ignorable since 11.0) and Georgian U+10D0 (cased since 11.0).
    "\u0391\u03a3\u055f\u0391 \u039f\u03a3\u10d0 \u0391\u03a3",
]
TRICKY += SEPARATING


def make_tokenizer(args):
    toks = reference_tokenizations(args.cache)
    vocabs = {"tiny": os.path.join(FIXTURES, "tiny_vocab.txt")}
    for casing in ("cased", "uncased"):
        path = os.path.join(args.vocab_dir, f"bert-base-{casing}-vocab.txt") if args.vocab_dir else None
        if path and os.path.exists(path):
            vocabs[f"bert_{casing}"] = path
        else:
            print(f"note: no BERT {casing} vocabulary in --vocab_dir; its goldens are left out")
    hf = None
    try:
        import transformers
        hf = transformers.BertTokenizer
        print(f"comparing with Hugging Face transformers {transformers.__version__} BertTokenizer")
    except ImportError:
        print("note: transformers is not installed; no comparison with Hugging Face")

    cases = []
    separating = 0
    for text in TRICKY:
        case = {"text": text}
        for rules, tok in toks.items():
            for lower in (False, True):
                casing = "uncased" if lower else "cased"
                case[f"{rules}.basic_{casing}"] = tok.BasicTokenizer(do_lower_case=lower).tokenize(text)
                for name, path in vocabs.items():
                    if name.startswith("bert_") and name != f"bert_{casing}":
                        continue
                    full = tok.FullTokenizer(path, do_lower_case=lower)
                    key = f"{rules}.{name}_{casing}" if name == "tiny" else f"{rules}.{name}"
                    case[key] = full.tokenize(text)
                    if hf is not None and rules == "original":
                        theirs = hf(path, do_lower_case=lower).tokenize(text)
                        if theirs != case[key]:
                            print(f"Hugging Face differs ({key}) on {text[:40]!r}:\n  original {case[key][:12]}\n  hf       {theirs[:12]}")
        separating += any(v != case["google." + k.split(".", 1)[1]] for k, v in case.items() if k.startswith("original."))
        cases.append(case)
    out = {"made_by": "tools/make_fixtures.py tokenizer",
           "reference": {"original": f"the original pipeline's tokenization.py: Google's ({REFERENCE_WHEEL}) "
                                     "with ORIGINAL_PATCHES (100 code points; control = every C* category; "
                                     f"Unicode {unicode9.VERSION}'s categories, tools/unicode9.py)",
                         "google": f"Google BERT tokenization.py ({REFERENCE_WHEEL}): 200 code points; control = Cc, Cf"},
           "python_unicode_version": unicodedata.unidata_version,
           "cases": cases}
    path = os.path.join(FIXTURES, "tokenizer_goldens.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(cases)} texts ({separating} tokenized differently by the two rule sets), "
          f"vocabularies {sorted(vocabs)}")


def shared_texts(data):
    """The texts of the shared data: consensus dev.tsv fields and BC5CDR sentences."""
    texts = {}
    path = os.path.join(data, "consensus-example", "dev.tsv")
    if os.path.exists(path):
        rows = []
        with open(path, "rb") as f:
            for line in f.read().decode("utf-8").split("\n"):
                line = line.rstrip("\r")
                if line:
                    rows.extend(line.split("\t")[-3:])  # left context, span, right context
        texts["consensus_dev"] = rows
    for split in ("train", "devel"):
        path = os.path.join(data, "bc5cdr-chem", f"{split}.tsv")
        if not os.path.exists(path):
            continue
        sentences, words = [], []
        with open(path, "rb") as f:
            for line in f.read().decode("utf-8").split("\n"):
                line = line.rstrip("\r")
                if line.strip():
                    words.append(line.split()[0])
                elif words:
                    sentences.append(" ".join(words))
                    words = []
        if words:
            sentences.append(" ".join(words))
        texts[f"bc5cdr_{split}"] = sentences
    return texts


def span_features(full, left, span, right, max_seq_length, replace_span=None):
    """The original pipeline's span feature, written out from its rules (docs/data.md)."""
    c = max_seq_length // 2
    left_tokens = full.tokenize(left)
    if len(left_tokens) >= c - 1:
        left_tokens = left_tokens[len(left_tokens) - (c - 1):]
    else:
        left_tokens = ["[PAD]"] * (c - 1 - len(left_tokens)) + left_tokens
    tokens = ["[CLS]"] + left_tokens
    tokens += [replace_span] if replace_span else full.tokenize(span)
    tokens += full.tokenize(right)
    if len(tokens) >= max_seq_length - 1:
        tokens = tokens[:max_seq_length - 1]
    tokens.append("[SEP]")
    tokens += ["[PAD]"] * (max_seq_length - len(tokens))
    return full.convert_tokens_to_ids(tokens), [0 if t == "[PAD]" else 1 for t in tokens]


# (max_seq_length, replace_span) of the span-feature goldens: the pipeline's usual 128,
# a replaced span, and a length so short that most rows are cut.
SPAN_FEATURE_CONFIGS = [(128, None), (64, "[MASK]"), (16, None)]


def make_span_features(full, data, out, rules):
    path = os.path.join(data, "consensus-example", "dev.tsv")
    labels_path = os.path.join(data, "consensus-example", "labels.txt")
    if not os.path.exists(path) or not os.path.exists(labels_path):
        return
    with open(labels_path, encoding="utf-8") as f:
        labels = sorted(l.strip() for l in f if l.strip())
    with open(path, "rb") as f:
        rows = [l.rstrip("\r").split("\t") for l in f.read().decode("utf-8").split("\n") if l.rstrip("\r")]
    for m, replace in SPAN_FEATURE_CONFIGS:
        name = os.path.join(out, f"consensus_dev.{rules}.features.M{m}{'.' + replace.strip('[]') if replace else ''}.jsonl")
        with open(name + ".tmp", "w", encoding="utf-8") as f:
            for n, cols in enumerate(rows, 1):
                ids, mask = span_features(full, cols[-3], cols[-2], cols[-1], m, replace)
                f.write(json.dumps({"line": n, "input_ids": ids, "input_mask": mask, "segment_ids": [0] * m,
                                    "label_id": labels.index(cols[-4])}) + "\n")
        os.replace(name + ".tmp", name)
        print(f"wrote {name}: {len(rows)} rows")


def make_tokenizer_shared(args):
    texts = shared_texts(args.data)
    if not texts:
        print(f"tokenizer-shared: no shared data under {args.data}; nothing to do")
        return
    try:
        toks = reference_tokenizations(args.cache)
    except Exception as e:  # no network, no pip: the test then skips and says why
        print(f"tokenizer-shared: cannot get the reference tokenizer ({e}); no goldens made")
        return
    texts["separating"] = SEPARATING
    os.makedirs(args.out, exist_ok=True)
    for rules, tok in toks.items():
        for casing in ("cased", "uncased"):
            full = tok.FullTokenizer(os.path.join(args.data, "vocab", f"bert-base-{casing}-vocab.txt"),
                                     do_lower_case=casing == "uncased")
            for name, items in texts.items():
                path = os.path.join(args.out, f"{name}.{rules}.{casing}.jsonl")
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    for text in items:
                        ids = full.convert_tokens_to_ids(full.tokenize(text))
                        f.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=True) + "\n")
                os.replace(path + ".tmp", path)
                print(f"wrote {path}: {len(items)} texts")
            if casing == "cased":  # BioBERT's vocabulary
                make_span_features(full, args.data, args.out, rules)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("bert")
    p.add_argument("--out", default=FIXTURES)
    p.set_defaults(run=make_bert)
    p = sub.add_parser("optim")
    p.add_argument("--out", default=FIXTURES)
    p.set_defaults(run=make_optim)
    cache_default = os.path.join(os.path.expanduser("~"), ".cache", "ctdl-fixtures")
    p = sub.add_parser("tokenizer")
    p.add_argument("--vocab_dir", default=os.path.join(HERE, "..", "..", "shared", "data", "vocab"))
    p.add_argument("--cache", default=cache_default)
    p.set_defaults(run=make_tokenizer)
    p = sub.add_parser("tokenizer-shared")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=cache_default)
    p.set_defaults(run=make_tokenizer_shared)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

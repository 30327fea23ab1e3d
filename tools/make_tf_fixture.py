#!/usr/bin/env python3
"""Makes tests/fixtures/tf_checkpoint/: a TensorFlow 1.x checkpoint of a tiny BERT with
Google's variable names, and TensorFlow's logits for it (developer tool; needs
`pip install tensorflow-cpu`; neither ctdl nor its tests need TensorFlow).

The graph is built in TF2's tf.compat.v1 graph mode with the math of Google's
modeling.py (the original pipeline's): post-LayerNorm encoder (epsilon 1e-12), the tanh
GELU 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), attention scores plus
(1 - mask) * -10000, pooler tanh(dense(first token)), and run_ner_consensus.py's head:
logits = pooled @ output_weights^T + output_bias with output_weights [L+1, H] (the
original's extra class). Beside the model variables it holds what a real training
checkpoint holds: Adam slots <var>/adam_m and <var>/adam_v (optimization.py's names)
and global_step (int64). Saved with tf.compat.v1.train.Saver (the tensor bundle V2).

Files written (into --out):
  model.ckpt-7.index, model.ckpt-7.data-00000-of-00001, checkpoint   the checkpoint
  bert_config.json    Google's keys; hidden_act "gelu" (which modeling.py computes as tanh)
  expected.json       {"batches": [{"input_ids", "token_type_ids", "input_mask",
                       "logits"}...], "num_labels": L, "tensors": {name: {"dtype", "shape"}}}
  dtypes.ckpt.*, dtypes.json   one small variable per dtype (float64, float16, bfloat16,
                       int32, int64, a float32 scalar) and the values TensorFlow saved

The shapes (hidden 32, 4 heads, intermediate 64, 2 layers, vocabulary 100, 64
positions) keep the fixture small (< 500 KB with the Adam slots); the C++ test compiles
that shape family itself.
"""
import argparse
import json
import math
import os

import numpy as np

import tensorflow as tf

tf1 = tf.compat.v1

HIDDEN, HEADS, INTERMEDIATE, LAYERS = 32, 4, 64, 2
VOCAB, POSITIONS, TYPES = 100, 64, 2
LABELS = 4  # the classifier has LABELS + 1 rows (the original pipeline's phantom class)


def gelu(x):
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))


def layer_norm(x, name, rng):
    # tf.contrib.layers.layer_norm's variables (gamma, beta) and epsilon 1e-12, over the last axis.
    with tf1.variable_scope(name):
        gamma = tf1.get_variable("gamma", initializer=(1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
        beta = tf1.get_variable("beta", initializer=(0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + 1e-12) * gamma + beta


def dense(x, n_in, n_out, name, rng, scale=0.2):
    # tf.layers.dense's variables: kernel [in, out], bias [out].
    with tf1.variable_scope(name):
        kernel = tf1.get_variable("kernel", initializer=(scale * rng.standard_normal((n_in, n_out))).astype(np.float32))
        bias = tf1.get_variable("bias", initializer=(0.1 * rng.standard_normal(n_out)).astype(np.float32))
    return tf.matmul(x, kernel) + bias


def encoder(input_ids, token_type_ids, input_mask, rng, vocab=VOCAB):
    """modeling.py's BertModel: the sequence output [B * S, H] and the pooled output [B, H]."""
    batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
    with tf1.variable_scope("bert"):
        with tf1.variable_scope("embeddings"):
            word = tf1.get_variable("word_embeddings", initializer=(0.5 * rng.standard_normal((vocab, HIDDEN))).astype(np.float32))
            types = tf1.get_variable("token_type_embeddings", initializer=(0.5 * rng.standard_normal((TYPES, HIDDEN))).astype(np.float32))
            pos = tf1.get_variable("position_embeddings", initializer=(0.5 * rng.standard_normal((POSITIONS, HIDDEN))).astype(np.float32))
            x = tf.gather(word, input_ids) + tf.gather(types, token_type_ids) + pos[None, :seq, :]
            x = layer_norm(x, "LayerNorm", rng)
        x = tf.reshape(x, [-1, HIDDEN])
        adder = (1.0 - tf.cast(input_mask, tf.float32))[:, None, None, :] * -10000.0  # B x 1 x 1 x S
        d = HIDDEN // HEADS
        with tf1.variable_scope("encoder"):
            for i in range(LAYERS):
                with tf1.variable_scope("layer_%d" % i):
                    with tf1.variable_scope("attention"):
                        with tf1.variable_scope("self"):
                            def heads(t):
                                return tf.transpose(tf.reshape(t, [batch, seq, HEADS, d]), [0, 2, 1, 3])
                            q = heads(dense(x, HIDDEN, HIDDEN, "query", rng))
                            k = heads(dense(x, HIDDEN, HIDDEN, "key", rng))
                            v = heads(dense(x, HIDDEN, HIDDEN, "value", rng))
                            scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(d)) + adder
                            ctx = tf.matmul(tf.nn.softmax(scores), v)
                            ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [-1, HIDDEN])
                        with tf1.variable_scope("output"):
                            a = layer_norm(dense(ctx, HIDDEN, HIDDEN, "dense", rng) + x, "LayerNorm", rng)
                    with tf1.variable_scope("intermediate"):
                        h = gelu(dense(a, HIDDEN, INTERMEDIATE, "dense", rng))
                    with tf1.variable_scope("output"):
                        x = layer_norm(dense(h, INTERMEDIATE, HIDDEN, "dense", rng) + a, "LayerNorm", rng)
        first = tf.reshape(x, [batch, seq, HIDDEN])[:, 0, :]
        with tf1.variable_scope("pooler"):
            pooled = tf.tanh(dense(first, HIDDEN, HIDDEN, "dense", rng))
    return x, pooled


def build(input_ids, token_type_ids, input_mask, rng):
    _, pooled = encoder(input_ids, token_type_ids, input_mask, rng)
    # run_ner_consensus.py's create_model: output_weights [num_labels, H] (already [out, in]).
    output_weights = tf1.get_variable("output_weights", initializer=(0.5 * rng.standard_normal((LABELS + 1, HIDDEN))).astype(np.float32))
    output_bias = tf1.get_variable("output_bias", initializer=(0.1 * rng.standard_normal(LABELS + 1)).astype(np.float32))
    return tf.matmul(pooled, output_weights, transpose_b=True) + output_bias


def add_adam_slots(model_vars, rng):
    """optimization.py's AdamWeightDecayOptimizer slots <var>/adam_m and <var>/adam_v, drawn."""
    for var in model_vars:
        shape = var.shape.as_list()
        tf1.get_variable(var.op.name + "/adam_m", initializer=(0.01 * rng.standard_normal(shape)).astype(np.float32))
        tf1.get_variable(var.op.name + "/adam_v", initializer=(1e-4 * rng.random(shape)).astype(np.float32))


def write_checkpoint_files(out, step, vocab):
    """TensorFlow's `checkpoint` file (paths relative to its directory, as a moved checkpoint
    has them) and bert_config.json with Google's keys."""
    with open(os.path.join(out, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-%d"\nall_model_checkpoint_paths: "model.ckpt-%d"\n' % (step, step))
    config = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
              "max_position_embeddings": POSITIONS, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
              "type_vocab_size": TYPES, "vocab_size": vocab}
    with open(os.path.join(out, "bert_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def batches(rng):
    out = []
    for b, s in ((2, 8), (3, 16), (1, 64)):
        ids = rng.integers(0, VOCAB, size=(b, s)).astype(np.int32)
        ids[:, 0] = 2  # a [CLS]-like first token
        types = np.zeros((b, s), np.int32)
        mask = np.ones((b, s), np.int32)
        for r in range(b):
            real = s if r == 0 else max(2, s - 3 * r)  # later rows padded
            types[r, real // 2:real] = 1
            mask[r, real:] = 0
            ids[r, real:] = 0
        out.append((ids, types, mask))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fixtures = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    ap.add_argument("--out", default=os.path.join(fixtures, "tf_checkpoint"))
    ap.add_argument("--ner_out", default=os.path.join(fixtures, "tf_ner_checkpoint"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20261127)
    tf1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        ids_ph = tf1.placeholder(tf.int32, [None, None])
        types_ph = tf1.placeholder(tf.int32, [None, None])
        mask_ph = tf1.placeholder(tf.int32, [None, None])
        logits = build(ids_ph, types_ph, mask_ph, rng)
        add_adam_slots(tf1.global_variables(), rng)
        global_step = tf1.train.get_or_create_global_step()
        assign_step = tf1.assign(global_step, 7)
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(assign_step)
            saver.save(sess, os.path.join(args.out, "model.ckpt"), global_step=7, write_meta_graph=False)
            expected = {"batches": [], "num_labels": LABELS, "tensors": {}}
            for ids, types, mask in batches(rng):
                out = sess.run(logits, {ids_ph: ids, types_ph: types, mask_ph: mask})
                expected["batches"].append({"input_ids": ids.tolist(), "token_type_ids": types.tolist(),
                                            "input_mask": mask.tolist(), "logits": out.astype(float).tolist()})
            for var in tf1.global_variables():
                expected["tensors"][var.op.name] = {"dtype": var.dtype.base_dtype.name, "shape": var.shape.as_list()}
    write_checkpoint_files(args.out, 7, VOCAB)
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, sort_keys=True)
        f.write("\n")
    write_dtypes(args.out)
    print("wrote", args.out, "with TensorFlow", tf.__version__)
    make_ner(args.ner_out)


# ---------------------------------------------------------------------------------------
# tf_ner_checkpoint: the token classifier of the TensorFlow run_ner.py of NVIDIA
# (TensorFlow/LanguageModeling/BERT) and of BioBERT, fine-tuned-checkpoint shaped.

NER_LABELS = ["B", "I", "O", "X", "[CLS]", "[SEP]"]  # the BC5CDR processor's get_labels; ids from 1
NER_SEQ = 40  # --max_seq_length of the test that reads the fixture

# The test file's sentences, from words of tests/fixtures/tiny_vocab.txt (cased): words of
# one piece, of several (a word's later pieces are the script's "X"), split at punctuation,
# unknown ([UNK]), and one sentence of more than 30 words (the script's _read_data cuts it).
NER_SENTENCES = [
    "Naloxone reverses the antihypertensive effect of clonidine .",
    "TNF , IL2 and Ca of thymidine",
    "hello world",
    "unaffable café xyz déjà naïve",
    "anti-TNF effect of α and β",
    "the effect of clonidine on H 2 and 3 .",
    "World Hello , the 🤖🧬 of a b c d e",
    "R",
    " ".join(["the", "effect", "of", "TNF", "a", "b", "Ca", "c", "d", "e"] * 3 + ["clonidine", "reverses", "H", "."]),
    "thymidine",
    "IL2 reverses TNF ; the effect of Naloxone / clonidine",
    "a b , c . d",
]


def read_data_pieces(words, labels):
    """The TensorFlow run_ner.py's _read_data: a sentence of more than 30 words cut after the
    last "O" among its first 30 (after its first word when none is), as that code does it."""
    pieces = []
    while len(words) > 30:
        tmplabel = labels[:30]
        for _ in range(30):
            popped = tmplabel.pop()
            if popped == "O":
                break
        n = len(tmplabel) + 1
        pieces.append((words[:n], labels[:n]))
        words, labels = words[n:], labels[n:]
    if words:
        pieces.append((words, labels))
    return pieces


def convert_single_example(words, labels, tokenizer):
    """The script's convert_single_example: a word's first piece gets its label, later pieces
    "X"; [CLS] and [SEP] their own classes; padded to NER_SEQ with id 0 (class 0)."""
    label_map = {label: i for i, label in enumerate(NER_LABELS, 1)}
    tokens, token_labels = [], []
    for word, label in zip(words, labels):
        pieces = tokenizer.tokenize(word)
        tokens.extend(pieces)
        token_labels.extend([label] + ["X"] * (len(pieces) - 1))
    if len(tokens) >= NER_SEQ - 1:
        raise SystemExit("a sentence of %d pieces: the fixture keeps every word within M - 2" % len(tokens))
    ntokens = ["[CLS]"] + tokens + ["[SEP]"]
    label_ids = [label_map["[CLS]"]] + [label_map[t] for t in token_labels] + [label_map["[SEP]"]]
    input_ids = tokenizer.convert_tokens_to_ids(ntokens)
    mask = [1] * len(input_ids)
    pad = NER_SEQ - len(input_ids)
    return input_ids + [0] * pad, mask + [0] * pad, label_ids + [0] * pad


def result_to_pair(words, gold, pred_ids):
    """The script's result_to_pair: each position's argmax in order, padding (0), [CLS] and X
    passed over, up to the first [SEP]; cut to the words, or filled with "O"."""
    id2label = {i: label for i, label in enumerate(NER_LABELS, 1)}
    pred_labels = []
    for i in pred_ids:
        if i == 0:
            continue
        curr_label = id2label[i]
        if curr_label == "[CLS]":
            continue
        elif curr_label == "[SEP]":
            break
        elif curr_label == "X":
            continue
        pred_labels.append(curr_label)
    pred_labels = pred_labels[:len(words)]
    pred_labels += ["O"] * (len(words) - len(pred_labels))
    return "".join("%s %s %s\n" % t for t in zip(words, gold, pred_labels))


def make_ner(out):
    """tf_ner_checkpoint: the model of the TensorFlow run_ner.py (create_model: the encoder's
    sequence output times output_weights [7, H] plus output_bias, for B, I, O, X, [CLS],
    [SEP] and the padding class 0) saved as that script's training saves it, with NVIDIA's
    optimizer state (Adam moments, gradient accumulators, the fp16 loss scale, the step)
    (model.ckpt-3.*, checkpoint, bert_config.json), the test file it predicts (test.tsv),
    the features and TensorFlow's logits at every position (expected.json: input_ids,
    token_type_ids (all 0), input_mask, logits [features, NER_SEQ, 7]), and what that script writes
    for it (NER_result_conll.txt: the words, the gold labels, and the predictions read by
    result_to_pair from those logits)."""
    # The script's own tokenizer: tokenization.py under the original pipeline's rules, with
    # the Unicode 9.0 categories of the Python 3.6 it ran on (tools/make_fixtures.py; so
    # 🧬, assigned in Unicode 11.0, is dropped as the script dropped it).
    import make_fixtures

    vocab_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tiny_vocab.txt")
    cache = os.path.join(os.path.expanduser("~"), ".cache", "ctdl-fixtures")
    tokenizer = make_fixtures.reference_tokenizations(cache)["original"].FullTokenizer(vocab_file, do_lower_case=False)
    vocab = len(tokenizer.vocab)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261129)
    # Gold labels: B starts an entity, I continues it (drawn; the model's predictions are its own).
    sentences = []
    for text in NER_SENTENCES:
        words = text.split(" ")
        gold = [str(rng.choice(["B", "I", "O", "O"])) for _ in words]
        sentences.append((words, gold))
    examples = [p for words, gold in sentences for p in read_data_pieces(words, gold)]
    features = [convert_single_example(w, g, tokenizer) for w, g in examples]
    ids = np.array([f[0] for f in features], np.int32)
    mask = np.array([f[1] for f in features], np.int32)
    graph = tf.Graph()
    with graph.as_default():
        ids_ph = tf1.placeholder(tf.int32, [None, None])
        mask_ph = tf1.placeholder(tf.int32, [None, None])
        sequence, _ = encoder(ids_ph, tf.zeros_like(ids_ph), mask_ph, rng, vocab)
        rows = len(NER_LABELS) + 1
        output_weights = tf1.get_variable("output_weights", initializer=(1.0 * rng.standard_normal((rows, HIDDEN))).astype(np.float32))
        output_bias = tf1.get_variable("output_bias", initializer=(0.05 * rng.standard_normal(rows)).astype(np.float32))
        logits = tf.reshape(tf.nn.bias_add(tf.matmul(sequence, output_weights, transpose_b=True), output_bias),
                            [-1, NER_SEQ, rows])
        model_vars = tf1.global_variables()
        add_adam_slots(model_vars, rng)
        # NVIDIA's optimization.py with --num_accumulation_steps > 1 and fp16: the gradient
        # accumulators, their step and finiteness flag, and the dynamic loss scale.
        for var in model_vars:
            tf1.get_variable(var.op.name + "/accum", shape=var.shape.as_list(), initializer=tf1.zeros_initializer(), trainable=False)
        tf1.get_variable("local_step", shape=[], dtype=tf.int32, initializer=tf1.zeros_initializer(), trainable=False)
        tf1.get_variable("batch_finite", shape=[], dtype=tf.bool, initializer=tf1.ones_initializer(), trainable=False)
        tf1.get_variable("current_loss_scale", initializer=np.float32(2.0 ** 15), trainable=False)
        tf1.get_variable("good_steps", shape=[], dtype=tf.int64, initializer=tf1.zeros_initializer(), trainable=False)
        global_step = tf1.train.get_or_create_global_step()
        assign_step = tf1.assign(global_step, 3)
        saver = tf1.train.Saver()
        bias_ph = tf1.placeholder(tf.float32, [rows])
        assign_bias = tf1.assign(output_bias, bias_ph)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(assign_step)
            # The tokens' encodings share a large common part, which a drawn head turns into
            # one class for all: the bias takes each class's mean logit over the real
            # positions away, so that every class is predicted somewhere.
            drawn = sess.run(logits, {ids_ph: ids, mask_ph: mask})
            # [SEP] ends the reading of a sentence: made rarer, so that most words are read.
            centred = sess.run(output_bias) - drawn[mask == 1].mean(axis=0)
            centred[rows - 1] -= 2.0
            sess.run(assign_bias, {bias_ph: centred})
            saver.save(sess, os.path.join(out, "model.ckpt"), global_step=3, write_meta_graph=False)
            values = sess.run(logits, {ids_ph: ids, mask_ph: mask})
    # Every position is read (result_to_pair reads padding's argmax too): each argmax must
    # stand clear of the runner-up, or another library's rounding could pick another class.
    top2 = np.sort(values, axis=-1)[..., -2:]
    margin = float((top2[..., 1] - top2[..., 0]).min())
    if margin < 1e-4:  # TensorFlow and ctdl agree within about 1e-5 in fp32 here
        raise SystemExit("an argmax within %g of the runner-up: change the seed" % margin)
    predicted = values.argmax(-1)
    counts = np.bincount(predicted[mask == 1], minlength=rows)
    write_checkpoint_files(out, 3, vocab)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"input_ids": ids.tolist(), "token_type_ids": np.zeros_like(ids).tolist(), "input_mask": mask.tolist(),
                   "logits": values.astype(float).tolist()}, f, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out, "test.tsv"), "w") as f:
        for words, gold in sentences:
            f.write("".join("%s\t%s\n" % t for t in zip(words, gold)) + "\n")
    # The script writes a blank line after each example (a cut sentence's pieces apart).
    with open(os.path.join(out, "NER_result_conll.txt"), "w") as f:
        for (words, gold), p in zip(examples, predicted):
            f.write(result_to_pair(words, gold, p.tolist()) + "\n")
    print("wrote", out, "(%d examples; predicted classes at real positions %s; least argmax margin %.3g)"
          % (len(examples), counts.tolist(), margin))


def write_dtypes(out):
    """dtypes.ckpt: one small variable per dtype the reader converts (float64, float16,
    bfloat16, int32, int64, float32 scalar), values in dtypes.json (as float64)."""
    values = {"f64": (np.array([[1.5, -2.25e-300], [3.0, 1e300]]), tf.float64),
              "f16": (np.array([0.5, -65504.0, 6e-8]), tf.float16),
              "bf16": (np.array([1.0, -3.140625, 1e38]), tf.bfloat16),
              "i32": (np.array([[-2147483648, 7, 2147483647]]), tf.int32),
              "i64": (np.array([-(2 ** 62), 5]), tf.int64),
              "scalar": (np.array(2.5), tf.float32)}
    graph = tf.Graph()
    expected = {}
    with graph.as_default():
        for name, (value, dtype) in values.items():
            var = tf1.get_variable(name, initializer=tf.cast(tf.constant(value), dtype))
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            saver.save(sess, os.path.join(out, "dtypes.ckpt"), write_meta_graph=False, write_state=False)
            for var in tf1.global_variables():
                stored = sess.run(var)  # what was saved, after the dtype's rounding
                expected[var.op.name] = {"dtype": var.dtype.base_dtype.name, "shape": var.shape.as_list(),
                                         "values": np.asarray(stored).astype(np.float64).ravel().tolist()}
    with open(os.path.join(out, "dtypes.json"), "w") as f:
        json.dump(expected, f, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()

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


def build(input_ids, token_type_ids, input_mask, rng):
    batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
    with tf1.variable_scope("bert"):
        with tf1.variable_scope("embeddings"):
            word = tf1.get_variable("word_embeddings", initializer=(0.5 * rng.standard_normal((VOCAB, HIDDEN))).astype(np.float32))
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
    # run_ner_consensus.py's create_model: output_weights [num_labels, H] (already [out, in]).
    output_weights = tf1.get_variable("output_weights", initializer=(0.5 * rng.standard_normal((LABELS + 1, HIDDEN))).astype(np.float32))
    output_bias = tf1.get_variable("output_bias", initializer=(0.1 * rng.standard_normal(LABELS + 1)).astype(np.float32))
    return tf.matmul(pooled, output_weights, transpose_b=True) + output_bias


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
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tf_checkpoint"))
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
        model_vars = tf1.global_variables()
        for var in model_vars:  # optimization.py's AdamWeightDecayOptimizer slot names
            name = var.op.name
            shape = var.shape.as_list()
            tf1.get_variable(name + "/adam_m", initializer=(0.01 * rng.standard_normal(shape)).astype(np.float32))
            tf1.get_variable(name + "/adam_v", initializer=(1e-4 * rng.random(shape)).astype(np.float32))
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
    # The checkpoint file's paths relative to its directory, as a moved checkpoint has them.
    with open(os.path.join(args.out, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-7"\nall_model_checkpoint_paths: "model.ckpt-7"\n')
    config = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTERMEDIATE,
              "max_position_embeddings": POSITIONS, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
              "type_vocab_size": TYPES, "vocab_size": VOCAB}
    with open(os.path.join(args.out, "bert_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, sort_keys=True)
        f.write("\n")
    write_dtypes(args.out)
    print("wrote", args.out, "with TensorFlow", tf.__version__)


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

#!/usr/bin/env python3
"""Builds ferroserve's example model bundles.

Run from the repository root:

    .venv/bin/python examples/generate.py [--out examples/models]

Every bundle is written as OUT/NAME/1/{model.onnx,bundle.toml,sample.json},
plus a labels file for an output that has class labels (mlp's labels.txt).
The output is byte-for-byte stable across runs: all weights come from one
numpy generator with a fixed seed, models are built in a fixed order, and
nothing time- or host-dependent goes into any file. The committed files are
therefore reproducible, and a diff after regenerating means the script changed.

Each model is checked with onnx.checker and then run in onnxruntime (batch > 1)
before its bundle is written, so a bundle in the repository is known to load.
The server's tests rely on some behaviours verified here (see `multi_io`).

It also writes a few loose bundles into examples/bundles/NAME/ (not a served
repository: tests register them as new versions of a served model, see
build_extra_bundles), each with its own seeded generator so that the models in
examples/models stay byte-for-byte what they were.

Last come the python-backend bundles (score.py instead of model.onnx; see
PyBundle): iris (scikit-learn, trained here, stored as model.json) and
text_stats in examples/models, and faulty, faulty-init and reqs-{a,b,c} in
examples/bundles. They use no random generator of their own beyond fixed
seeds, and each script is imported and called in-process before it is done
with (without writing __pycache__ into the bundle).
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SEED = 20240611
# IR 8 is the oldest IR that opset 17 allows; onnxruntime 1.31 loads it and so
# does every older runtime a user might point ferroserve at.
IR_VERSION = 8
OPSET = 17
ML_OPSET = 3  # the ai.onnx.ml opset that ships with ai.onnx 17
PRODUCER = "ferroserve examples/generate.py"

# Open Inference Protocol datatype -> (ONNX element type, numpy dtype)
DTYPES: dict[str, tuple[int, object]] = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, object),
}


class Bundle:
    """Everything one bundle directory holds, before it is written."""

    def __init__(self, name, description, model, inputs, outputs, batching, instances, tags, sample, labels=None,
                 warmup=None):
        self.name = name
        self.description = description
        self.model = model
        self.inputs = inputs  # [(name, datatype, shape)]
        self.outputs = outputs
        self.batching = batching
        self.instances = instances
        self.tags = tags
        self.sample = sample  # {input name: numpy array with 2 rows}
        # {output name: (file name, [label of class 0, label of class 1, ...])}
        self.labels = labels or {}
        # (file name, [request: {input name: numpy array}]) for a top-level
        # `warmup = FILE` key: a JSON list of Open Inference Protocol requests.
        self.warmup = warmup
        self.backend = "onnx"  # or "opencl": the same ONNX file run by ferroserve's OpenCL kernels


def value_info(name: str, datatype: str, shape: list[int]):
    dims = ["batch" if d == -1 else d for d in shape]
    return helper.make_tensor_value_info(name, DTYPES[datatype][0], dims)


def make_model(graph, with_ml: bool = False):
    opsets = [helper.make_opsetid("", OPSET)]
    if with_ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER, producer_version="1")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def weights(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    # He-style scaling keeps activations in a sane range through the ReLUs, so
    # outputs are neither all zeros nor huge (the tests compare them).
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def session(model, quiet: bool = False) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if quiet:
        opts.log_severity_level = 4  # a run expected to fail should not print an error
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# mlp's 10 classes, named for the classification extension (line N labels
# class N: `"0.912345:3:three"`).
DIGIT_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def build_mlp(rng: np.random.Generator) -> Bundle:
    w1 = weights(rng, (64, 32), 64)
    b1 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    w2 = weights(rng, (32, 10), 32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], name="fc1"),
            helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
            helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="fc2"),
            helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        ],
        "mlp",
        [value_info("input", "FP32", [-1, 64])],
        [value_info("probabilities", "FP32", [-1, 10])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = make_model(graph)
    sample = {"input": np.round(rng.standard_normal((2, 64)), 4).astype(np.float32)}

    sess = session(model)
    (probs,) = sess.run(None, {"input": sample["input"]})
    assert probs.shape == (2, 10), probs.shape
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5), probs.sum(axis=1)
    # a batch of 5 exercises the dynamic batch dimension
    (probs5,) = sess.run(None, {"input": np.zeros((5, 64), np.float32)})
    assert probs5.shape == (5, 10)

    return Bundle(
        "mlp",
        "Small MLP classifier: 64 features -> 10 class probabilities",
        model,
        [("input", "FP32", [-1, 64])],
        [("probabilities", "FP32", [-1, 10])],
        dict(max_batch_size=32, max_queue_delay_us=0, preferred_batch_sizes=[8, 16, 32], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=1),
        {"task": "classification"},
        sample,
        labels={"probabilities": ("labels.txt", DIGIT_LABELS)},
    )


def build_multi_io(rng: np.random.Generator) -> Bundle:
    table = np.round(rng.standard_normal((8, 4)), 3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["x2"], name="double"),
            # Gather: [batch,1] indices into [8,4] -> [batch,1,4]; Squeeze -> [batch,4]
            helper.make_node("Gather", ["table", "index"], ["rows"], name="lookup", axis=0),
            helper.make_node("Squeeze", ["rows", "squeeze_axes"], ["rows_flat"], name="squeeze"),
            helper.make_node("Add", ["x2", "rows_flat"], ["y"], name="add_row"),
            helper.make_node("Add", ["index", "one"], ["index_plus_one"], name="increment"),
        ],
        "multi_io",
        [value_info("x", "FP32", [-1, 4]), value_info("index", "INT64", [-1, 1])],
        [value_info("y", "FP32", [-1, 4]), value_info("index_plus_one", "INT64", [-1, 1])],
        initializer=[
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([1], np.int64), "squeeze_axes"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
        ],
    )
    model = make_model(graph)
    sample = {
        "x": np.round(rng.standard_normal((2, 4)), 3).astype(np.float32),
        "index": np.array([[3], [7]], np.int64),
    }

    sess = session(model)
    y, plus_one = sess.run(None, sample)
    expected = sample["x"] * 2 + table[sample["index"][:, 0]]
    assert np.allclose(y, expected), (y, expected)
    assert (plus_one == sample["index"] + 1).all()
    # The server's tests send index 100 to provoke a backend error: ONNX Runtime's
    # Gather checks its indices at run time and fails the whole run with
    # "indices element out of data bounds, idx=100 must be within the inclusive
    # range [-8,7]". Keep the table at 8 rows or those tests lose their trigger.
    quiet = session(model, quiet=True)
    try:
        quiet.run(None, {"x": np.zeros((1, 4), np.float32), "index": np.array([[100]], np.int64)})
    except Exception as e:  # onnxruntime raises its own exception types
        assert "out of" in str(e) and "bounds" in str(e), str(e)
    else:
        raise AssertionError("multi_io: ONNX Runtime accepted index 100; the server tests need it to fail")

    return Bundle(
        "multi_io",
        "Two inputs and two outputs of different dtypes: y = 2x + table[index], index_plus_one = index + 1",
        model,
        [("x", "FP32", [-1, 4]), ("index", "INT64", [-1, 1])],
        [("y", "FP32", [-1, 4]), ("index_plus_one", "INT64", [-1, 1])],
        dict(max_batch_size=16, max_queue_delay_us=200, preferred_batch_sizes=[4, 8, 16], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=1),
        {"task": "testing", "note": "an index outside 0..7 makes the backend fail the batch"},
        sample,
    )


def conv_macs(h: int, w: int, c_in: int, c_out: int, k: int, stride: int) -> tuple[int, int, int]:
    """Multiply-accumulates of a padded ('same') convolution, and its output size."""
    oh, ow = (h + stride - 1) // stride, (w + stride - 1) // stride
    return oh * ow * c_out * c_in * k * k, oh, ow


def build_conv(rng: np.random.Generator) -> Bundle:
    layers = [(3, 16, 1), (16, 32, 2), (32, 32, 1)]  # (c_in, c_out, stride), all 3x3 pad 1
    nodes, inits = [], []
    prev, h, w, macs = "image", 32, 32, 0
    for i, (c_in, c_out, stride) in enumerate(layers, start=1):
        kw = weights(rng, (c_out, c_in, 3, 3), c_in * 9)
        kb = (rng.standard_normal(c_out) * 0.05).astype(np.float32)
        inits += [numpy_helper.from_array(kw, f"conv{i}_w"), numpy_helper.from_array(kb, f"conv{i}_b")]
        nodes.append(
            helper.make_node(
                "Conv", [prev, f"conv{i}_w", f"conv{i}_b"], [f"c{i}"], name=f"conv{i}",
                kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        m, h, w = conv_macs(h, w, c_in, c_out, 3, stride)
        macs += m + h * w * c_out  # + bias adds
        prev = f"r{i}"
    fc_w = weights(rng, (32, 10), 32)
    fc_b = (rng.standard_normal(10) * 0.05).astype(np.float32)
    inits += [numpy_helper.from_array(fc_w, "fc_w"), numpy_helper.from_array(fc_b, "fc_b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
    ]
    macs += 32 * 10 + 10
    graph = helper.make_graph(
        nodes, "conv",
        [value_info("image", "FP32", [-1, 3, 32, 32])],
        [value_info("logits", "FP32", [-1, 10])],
        initializer=inits,
    )
    model = make_model(graph)
    # MFLOP counts a multiply-accumulate as two operations (the usual convention).
    mflop_per_row = 2 * macs / 1e6
    sample = {"image": np.round(rng.random((2, 3, 32, 32)), 3).astype(np.float32)}

    sess = session(model)
    (logits,) = sess.run(None, sample)
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    assert not np.allclose(logits[0], logits[1]), "different images should give different logits"

    n_weights = sum(int(np.prod(t.dims)) for t in inits)
    print(f"conv: {mflop_per_row:.2f} MFLOP/row, {n_weights} weights ({n_weights * 4 / 1024:.1f} KiB)")
    return Bundle(
        "conv",
        f"Compute-heavy CNN: 3x32x32 image -> 10 logits (~{mflop_per_row:.1f} MFLOP per row)",
        model,
        [("image", "FP32", [-1, 3, 32, 32])],
        [("logits", "FP32", [-1, 10])],
        dict(max_batch_size=32, max_queue_delay_us=1000, preferred_batch_sizes=[16, 32], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=2),
        {"task": "classification", "mflop_per_row": f"{mflop_per_row:.2f}"},
        sample,
    )


LABELS = ["cat", "dog", "bird"]


def build_strings(rng: np.random.Generator) -> Bundle:
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder", ["text"], ["label_id"], name="encode", domain="ai.onnx.ml",
                keys_strings=LABELS, values_int64s=list(range(len(LABELS))), default_int64=-1,
            ),
            helper.make_node("Identity", ["text"], ["echo"], name="echo"),
        ],
        "strings",
        [value_info("text", "BYTES", [-1, 1])],
        [value_info("label_id", "INT64", [-1, 1]), value_info("echo", "BYTES", [-1, 1])],
    )
    model = make_model(graph, with_ml=True)
    sample = {"text": np.array([["dog"], ["fish"]], dtype=object)}

    sess = session(model)
    words = np.array([["cat"], ["dog"], ["bird"], ["fish"], [""]], dtype=object)
    ids, echo = sess.run(None, {"text": words})
    assert ids.tolist() == [[0], [1], [2], [-1], [-1]], ids
    assert echo.tolist() == words.tolist(), echo

    return Bundle(
        "strings",
        "BYTES in and out: maps a word to its label id (cat 0, dog 1, bird 2, else -1) and echoes it",
        model,
        [("text", "BYTES", [-1, 1])],
        [("label_id", "INT64", [-1, 1]), ("echo", "BYTES", [-1, 1])],
        dict(max_batch_size=64, max_queue_delay_us=200, preferred_batch_sizes=[], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=1),
        {"task": "lookup"},
        sample,
    )


def build_dtypes(rng: np.random.Generator) -> Bundle:
    # ONNX Runtime's Identity kernel accepts every tensor type in the protocol
    # (checked below), so no Cast-to-self stand-ins are needed.
    ins, outs, nodes = [], [], []
    for datatype in DTYPES:
        suffix = "bytes" if datatype == "BYTES" else datatype.lower()
        i, o = f"in_{suffix}", f"out_{suffix}"
        ins.append((i, datatype, [-1, 2]))
        outs.append((o, datatype, [-1, 2]))
        nodes.append(helper.make_node("Identity", [i], [o], name=f"identity_{suffix}"))
    graph = helper.make_graph(
        nodes, "dtypes",
        [value_info(*t) for t in ins],
        [value_info(*t) for t in outs],
    )
    model = make_model(graph)

    # Values chosen to catch byte-order, sign and width mistakes: each dtype's
    # extremes where it has them, and non-ASCII and empty strings for BYTES.
    values = {
        "BOOL": [[True, False], [False, True]],
        "UINT8": [[0, 255], [1, 128]],
        "UINT16": [[0, 65535], [1, 258]],
        "UINT32": [[0, 4294967295], [1, 16909060]],
        "UINT64": [[0, 2**64 - 1], [1, 2**40 + 3]],
        "INT8": [[-128, 127], [-1, 5]],
        "INT16": [[-32768, 32767], [-1, 258]],
        "INT32": [[-2147483648, 2147483647], [-1, 16909060]],
        "INT64": [[-(2**63), 2**63 - 1], [-1, 2**40 + 3]],
        "FP16": [[0.5, -2.0], [65504.0, 2.0**-14]],
        "FP32": [[1.5, -0.25], [3.0e38, 1.0e-38]],
        "FP64": [[1.5, -0.25], [1.0e300, 5.0e-324]],
        "BYTES": [["hello", ""], ["ünïcødé", "a b"]],
    }
    sample = {}
    for name, datatype, _ in ins:
        sample[name] = np.array(values[datatype], dtype=DTYPES[datatype][1])

    sess = session(model)
    results = sess.run([o for o, _, _ in outs], sample)
    for (name, datatype, _), out in zip(ins, results):
        want = sample[name]
        assert out.dtype == want.dtype, (datatype, out.dtype, want.dtype)
        assert out.tolist() == want.tolist(), (datatype, out, want)
    # 3 rows: the batch dimension is free for every input
    results3 = sess.run(None, {k: np.concatenate([v, v[:1]]) for k, v in sample.items()})
    assert all(r.shape == (3, 2) for r in results3)

    return Bundle(
        "dtypes",
        "One Identity per protocol datatype: every in_<type> comes back unchanged as out_<type>",
        model,
        ins,
        outs,
        dict(max_batch_size=8, max_queue_delay_us=100, preferred_batch_sizes=[], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=1),
        {"task": "testing"},
        sample,
    )


def build_seq_sum(rng: np.random.Generator) -> Bundle:
    # A free dim after the batch dim: requests of different lengths cannot be
    # stacked into one tensor, so the batcher must keep them in separate
    # batches (a mixed batch would fail or sum the wrong rows).
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["tokens", "axes"], ["total"], name="sum", keepdims=1),
        ],
        "seq_sum",
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "length"])],
        [value_info("total", "FP32", [-1, 1])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = make_model(graph)
    sample = {"tokens": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)}
    total = session(model).run(None, {"tokens": np.ones((3, 5), dtype=np.float32)})[0]
    assert total.tolist() == [[5.0], [5.0], [5.0]], total
    return Bundle(
        "seq_sum",
        "Sums each row of a variable-length sequence: [-1, -1] -> [-1, 1]",
        model,
        [("tokens", "FP32", [-1, -1])],
        [("total", "FP32", [-1, 1])],
        dict(max_batch_size=16, max_queue_delay_us=2000, preferred_batch_sizes=[], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=1),
        {"task": "reduction"},
        sample,
    )


# ---------------------------------------------------------------------------
# examples/bundles: loose bundles that tests register as new versions.

BUNDLES_SEED = 20250301  # mlp-v2; flaky uses BUNDLES_SEED + 1


def build_mlp_v2() -> Bundle:
    """mlp with other weights: registered as version 2 of "mlp" (hot swap)."""
    b = build_mlp(np.random.default_rng(BUNDLES_SEED))
    b.description = "Small MLP classifier: 64 features -> 10 class probabilities (version 2: other weights)"
    # Same input through v1 (rebuilt from the repository's seed) and v2 must
    # give clearly different outputs, or a test cannot tell which one served it.
    v1 = build_mlp(np.random.default_rng(SEED)).model
    x = np.random.default_rng(7).standard_normal((4, 64)).astype(np.float32)
    (p1,) = session(v1).run(None, {"input": x})
    (p2,) = session(b.model).run(None, {"input": x})
    diff = float(np.abs(p1 - p2).max())
    assert diff > 1e-3, diff
    print(f"mlp-v2: max |v2 - v1| = {diff:.4f} on a fixed 4x64 input")
    return b


FLAKY_THRESHOLD = 100.0  # a row with input[:, 0] above this fails the whole run


def build_flaky() -> Bundle:
    """An MLP that fails at run time (not at load) when some row has input[0] > 100.

    Same trick as multi_io: ONNX Runtime checks Gather indices when it runs.
    idx = Cast(input[:, 0:1] > 100) * 1000 is 0 for every ordinary row, and
    table[0] = 0 is added to the probabilities (so the node is not pruned and
    the output is unchanged); a row above the threshold makes idx 1000, out of
    the one-element table's bounds, and the run fails.
    """
    rng = np.random.default_rng(BUNDLES_SEED + 1)
    w1 = weights(rng, (64, 32), 64)
    b1 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    w2 = weights(rng, (32, 10), 32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], name="fc1"),
            helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
            helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="fc2"),
            helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
            # the trap: [batch, 1] indices, 0 or 1000
            helper.make_node("Slice", ["input", "first_col_start", "first_col_end", "first_col_axis"], ["x0"], name="first_col"),
            helper.make_node("Greater", ["x0", "threshold"], ["too_big"], name="too_big"),
            helper.make_node("Cast", ["too_big"], ["too_big_i64"], name="to_int", to=TensorProto.INT64),
            helper.make_node("Mul", ["too_big_i64", "out_of_range"], ["trap_index"], name="trap_index"),
            helper.make_node("Gather", ["zero_table", "trap_index"], ["trap"], name="trap", axis=0),
            helper.make_node("Add", ["probs", "trap"], ["probabilities"], name="add_trap"),
        ],
        "flaky",
        [value_info("input", "FP32", [-1, 64])],
        [value_info("probabilities", "FP32", [-1, 10])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
            numpy_helper.from_array(np.array([0], np.int64), "first_col_start"),
            numpy_helper.from_array(np.array([1], np.int64), "first_col_end"),
            numpy_helper.from_array(np.array([1], np.int64), "first_col_axis"),
            numpy_helper.from_array(np.array(FLAKY_THRESHOLD, np.float32), "threshold"),
            numpy_helper.from_array(np.array(1000, np.int64), "out_of_range"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero_table"),
        ],
    )
    model = make_model(graph)
    sample = {"input": np.round(rng.standard_normal((2, 64)), 4).astype(np.float32)}

    sess = session(model)
    quiet = session(model, quiet=True)

    def fails(x: np.ndarray) -> bool:
        try:
            quiet.run(None, {"input": x})
        except Exception as e:  # onnxruntime raises its own exception types
            assert "out of" in str(e) and "bounds" in str(e), str(e)
            return True
        return False

    # ordinary rows (|values| < 10, including 9.99 in column 0) always succeed
    normal = rng.uniform(-9.99, 9.99, (8, 64)).astype(np.float32)
    normal[0, 0], normal[1, 0] = 9.99, -9.99
    (probs,) = sess.run(None, {"input": normal})
    assert probs.shape == (8, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5), probs
    assert not fails(normal) and not fails(np.full((3, 64), 100.0, np.float32))  # 100 is not > 100
    # one bad row fails the whole batch, wherever it is; other columns do not matter
    bad = normal.copy()
    bad[5, 0] = 1000.0
    assert fails(bad) and fails(bad[5:6]) and fails(np.full((1, 64), 100.5, np.float32))
    big_elsewhere = normal.copy()
    big_elsewhere[:, 1:] = 1000.0
    assert not fails(big_elsewhere)
    print("flaky: a batch with a row whose input[0] > 100 fails at run time; rows with input[0] <= 100 succeed")

    small = np.full((2, 64), 0.1, np.float32)  # warm-up request: two rows of 0.1
    assert not fails(small)
    return Bundle(
        "flaky",
        "MLP (64 -> 10 probabilities) that fails the whole batch at run time when a row has input[0] > 100",
        model,
        [("input", "FP32", [-1, 64])],
        [("probabilities", "FP32", [-1, 10])],
        dict(max_batch_size=32, max_queue_delay_us=0, preferred_batch_sizes=[8, 16, 32], max_queue_size=1024, timeout_ms=10000),
        dict(count=1, device="cpu", intra_op_threads=1),
        {"task": "testing", "note": "a row with input[0] > 100 makes the backend fail the batch"},
        sample,
        warmup=("warmup.json", [{"input": small}]),
    )


def build_flaky_badwarmup(flaky: Bundle) -> Bundle:
    """flaky's model whose warm-up request trips it: warm-up fails at inference."""
    bad = np.full((2, 64), 0.1, np.float32)
    bad[1, 0] = 1000.0
    quiet = session(flaky.model, quiet=True)
    try:
        quiet.run(None, {"input": bad})
    except Exception as e:
        assert "out of" in str(e) and "bounds" in str(e), str(e)
    else:
        raise AssertionError("flaky-badwarmup: the warm-up request ran; it must fail")
    return Bundle(
        flaky.name,
        "flaky with a warm-up request that fails (its second row has input[0] = 1000)",
        flaky.model,
        flaky.inputs,
        flaky.outputs,
        flaky.batching,
        flaky.instances,
        flaky.tags,
        flaky.sample,
        labels=flaky.labels,
        warmup=("warmup.json", [{"input": bad}]),
    )


def build_extra_bundles() -> dict[str, Bundle]:
    """examples/bundles/DIR -> bundle, in writing order."""
    mlp_v2 = build_mlp_v2()
    flaky = build_flaky()
    return {
        "mlp-v2": mlp_v2,
        "flaky": flaky,
        "flaky-badwarmup": build_flaky_badwarmup(flaky),
    }


def build_opencl_bundle(onnx_bundle: Bundle) -> Bundle:
    """The same model, weights and signature, served by the OpenCL backend
    (`backend = "opencl"`, device opencl:0) under NAME_opencl, so one server
    can answer both and a test can compare them."""
    b = copy.copy(onnx_bundle)
    b.name = f"{onnx_bundle.name}_opencl"
    b.description = f"{onnx_bundle.description}, on OpenCL (opencl:0) with ferroserve's kernels"
    b.backend = "opencl"
    b.instances = dict(count=1, device="opencl:0")
    b.tags = dict(onnx_bundle.tags, backend="opencl")
    return b


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def bundle_toml(b: Bundle) -> str:
    lines = [
        f"name = {toml_value(b.name)}",
        f"description = {toml_value(b.description)}",
        f"backend = {toml_value(b.backend)}",
        'model = "model.onnx"',
    ]
    if b.warmup is not None:
        lines.append(f"warmup = {toml_value(b.warmup[0])}")
    for section, tensors in (("inputs", b.inputs), ("outputs", b.outputs)):
        for name, datatype, shape in tensors:
            lines += ["", f"[[{section}]]", f"name = {toml_value(name)}", f"datatype = {toml_value(datatype)}", f"shape = {toml_value(shape)}"]
            if section == "outputs" and name in b.labels:
                lines.append(f"labels = {toml_value(b.labels[name][0])}")
    for section, table in (("batching", b.batching), ("instances", b.instances), ("tags", b.tags)):
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def sample_json(b: Bundle) -> str:
    inputs = []
    for name, datatype, _ in b.inputs:
        arr = b.sample[name]
        assert arr.shape[0] == 2, (b.name, name, arr.shape)
        if datatype == "BYTES":
            data = [str(s) for s in arr.flatten().tolist()]
        elif datatype == "FP32":
            # numpy prints the shortest decimal that parses back to the same
            # float32 ("0.123", not "0.12300000339746475").
            data = [float(str(x)) for x in arr.flatten()]
        elif datatype in ("FP16", "FP64"):
            # exact: FP16 values are short decimals, FP64 is JSON's own width
            data = [float(x) for x in arr.flatten().tolist()]
        else:
            data = arr.flatten().tolist()
        inputs.append({"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data})
    return json.dumps({"inputs": inputs}, ensure_ascii=False) + "\n"


def check_sample(b: Bundle, path: Path) -> None:
    """The JSON a user curls must decode to exactly the arrays the model was checked with."""
    request = json.loads(path.read_text(encoding="utf-8"))
    feeds = {}
    for t in request["inputs"]:
        arr = np.array(t["data"], dtype=DTYPES[t["datatype"]][1]).reshape(t["shape"])
        assert arr.tolist() == b.sample[t["name"]].tolist(), (b.name, t["name"])
        feeds[t["name"]] = arr
    outputs = session(b.model).run(None, feeds)
    assert all(o.shape[0] == 2 for o in outputs), b.name


def warmup_json(b: Bundle) -> str:
    """The warm-up file: a JSON list of inference requests, in the sample's encoding."""
    requests = []
    for request in b.warmup[1]:
        inputs = []
        for name, datatype, _ in b.inputs:
            arr = request[name]
            assert datatype == "FP32", (b.name, name, datatype)  # all the warm-up files need so far
            data = [float(str(x)) for x in arr.flatten()]
            inputs.append({"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data})
        requests.append({"inputs": inputs})
    return json.dumps(requests) + "\n"


def write_bundle(out: Path, b: Bundle) -> None:
    write_bundle_dir(out / b.name / "1", b)


def write_bundle_dir(d: Path, b: Bundle) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "model.onnx").write_bytes(b.model.SerializeToString())
    toml_text = bundle_toml(b)
    parsed = tomllib.loads(toml_text)  # catches quoting mistakes before the server does
    assert parsed["name"] == b.name and len(parsed["inputs"]) == len(b.inputs)
    (d / "bundle.toml").write_text(toml_text, encoding="utf-8")
    (d / "sample.json").write_text(sample_json(b), encoding="utf-8")
    outputs = {name: shape for name, _, shape in b.outputs}
    for output, (file_name, labels) in b.labels.items():
        # one label per line, line N for class N: as many as the output has classes
        assert len(labels) == int(np.prod(outputs[output][1:])), (b.name, output, len(labels))
        assert all(label and "\n" not in label for label in labels), (b.name, output)
        (d / file_name).write_bytes(("\n".join(labels) + "\n").encode("utf-8"))
    check_sample(b, d / "sample.json")
    if b.warmup is not None:
        assert parsed["warmup"] == b.warmup[0], (b.name, parsed.get("warmup"))
        (d / b.warmup[0]).write_text(warmup_json(b), encoding="utf-8")
        decoded = json.loads((d / b.warmup[0]).read_text(encoding="utf-8"))
        assert isinstance(decoded, list) and len(decoded) == len(b.warmup[1]), b.name
        for req, want in zip(decoded, b.warmup[1]):
            for t in req["inputs"]:
                arr = np.array(t["data"], dtype=DTYPES[t["datatype"]][1]).reshape(t["shape"])
                assert arr.tolist() == want[t["name"]].tolist(), (b.name, t["name"])
    # Every declared input and output has a free batch dimension.
    model = onnx.load(str(d / "model.onnx"))
    for vi in list(model.graph.input) + list(model.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch", (b.name, vi.name)
    print(f"wrote {d}")


# ---------------------------------------------------------------------------
# python backend bundles: an entry script (score.py) instead of model.onnx.
#
# The server runs score.py in worker processes (`[instances] count`), with
# AZUREML_MODEL_DIR set to the bundle folder: init() once per process, then
# run() per call. style = "raw": run(raw_data: str) gets one request body and
# returns something JSON-serialisable (Azure ML's scoring-script contract);
# style = "tensor": run(inputs: dict[str, np.ndarray]) gets a whole batch and
# returns dict[str, np.ndarray] with as many rows. The scripts are plain text
# in this file, so they are byte-for-byte stable; the generator imports each
# one it writes and calls it in-process before it is done with it.

IRIS_RANDOM_STATE = 0  # lbfgs does not use it; set so that a solver change stays deterministic
IRIS_DECIMALS = 6  # model.json keeps coefficients rounded to this many decimals


class PyBundle:
    """A `backend = "python"` bundle: bundle.toml, score.py, sample.json and extra files."""

    def __init__(self, name, description, style, script, batching, instances, tags, sample, inputs=(), outputs=(),
                 files=None, requirements=None):
        self.name = name
        self.description = description
        self.style = style  # "raw" or "tensor"
        self.script = script  # score.py's text
        self.inputs = list(inputs)  # [(name, datatype, shape)], tensor style only
        self.outputs = list(outputs)
        self.batching = batching
        self.instances = instances
        self.tags = tags
        self.sample = sample  # sample.json's text
        self.files = dict(files or {})  # other files: {file name: text}
        self.requirements = requirements  # (file name, text) or None


def py_bundle_toml(b: PyBundle) -> str:
    lines = [
        f"name = {toml_value(b.name)}",
        f"description = {toml_value(b.description)}",
        'backend = "python"',
        'model = "score.py"',
        "",
        "[python]",
        f"style = {toml_value(b.style)}",
    ]
    if b.requirements is not None:
        lines.append(f"requirements = {toml_value(b.requirements[0])}")
    for section, tensors in (("inputs", b.inputs), ("outputs", b.outputs)):
        for name, datatype, shape in tensors:
            lines += ["", f"[[{section}]]", f"name = {toml_value(name)}", f"datatype = {toml_value(datatype)}", f"shape = {toml_value(shape)}"]
    for section, table in (("batching", b.batching), ("instances", b.instances), ("tags", b.tags)):
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def v2_request(inputs: list, sample: dict[str, np.ndarray]) -> str:
    """An Open Inference Protocol request for FP32 inputs, in sample_json's encoding."""
    tensors = []
    for name, datatype, _ in inputs:
        assert datatype == "FP32", (name, datatype)  # all the python examples need so far
        arr = sample[name]
        tensors.append({"name": name, "shape": list(arr.shape), "datatype": datatype,
                        "data": [float(str(x)) for x in arr.flatten()]})
    return json.dumps({"inputs": tensors}) + "\n"


def decode_v2_request(text: str) -> dict[str, np.ndarray]:
    return {t["name"]: np.array(t["data"], dtype=DTYPES[t["datatype"]][1]).reshape(t["shape"])
            for t in json.loads(text)["inputs"]}


class LoadedScript:
    """A bundle's score.py imported in this process, with AZUREML_MODEL_DIR set while it runs.

    The module is imported under a fresh name each time and no bytecode is
    written, so nothing (no __pycache__) appears in the bundle folder.
    """

    _count = 0

    def __init__(self, bundle_dir: Path):
        LoadedScript._count += 1
        self.dir = bundle_dir
        spec = importlib.util.spec_from_file_location(f"_ferroserve_score_{LoadedScript._count}", bundle_dir / "score.py")
        self.module = importlib.util.module_from_spec(spec)
        with self.env():
            spec.loader.exec_module(self.module)

    @contextlib.contextmanager
    def env(self):
        old_env = os.environ.get("AZUREML_MODEL_DIR")
        old_bytecode = sys.dont_write_bytecode
        os.environ["AZUREML_MODEL_DIR"] = str(self.dir)
        sys.dont_write_bytecode = True
        try:
            yield
        finally:
            sys.dont_write_bytecode = old_bytecode
            if old_env is None:
                del os.environ["AZUREML_MODEL_DIR"]
            else:
                os.environ["AZUREML_MODEL_DIR"] = old_env

    def init(self):
        with self.env():
            if hasattr(self.module, "init"):
                self.module.init()

    def run(self, arg):
        with self.env():
            return self.module.run(arg)


def raises(fn, exc_type, *needles: str) -> str:
    """Calls fn(); it must raise exc_type with every needle in its message. Returns the message."""
    try:
        fn()
    except exc_type as e:
        msg = str(e)
        assert all(n in msg for n in needles), (msg, needles)
        return msg
    raise AssertionError(f"expected {exc_type.__name__} containing {needles}")


IRIS_SCRIPT = '''\
"""iris: a scikit-learn LogisticRegression served without scikit-learn.

Raw style (Azure ML scoring-script contract): run() gets one request body,
{"data": [[sepal length, sepal width, petal length, petal width], ...]} (cm),
and returns {"predictions": [class index, ...], "labels": [class name, ...],
"probabilities": [[p(setosa), p(versicolor), p(virginica)], ...]}.

examples/generate.py trained the model with scikit-learn and stored its
fitted parameters in model.json; the prediction is rebuilt here with numpy:
softmax(X @ coef.T + intercept), as LogisticRegression.predict_proba does.
"""

import json
import math
import os

import numpy as np

N_FEATURES = 4
_model = None


def init():
    global _model
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")
    with open(path, encoding="utf-8") as f:
        m = json.load(f)
    coef = np.array(m["coef"], dtype=np.float64)
    intercept = np.array(m["intercept"], dtype=np.float64)
    if coef.shape != (len(m["labels"]), N_FEATURES) or intercept.shape != (len(m["labels"]),):
        raise RuntimeError(f"{path}: coef {coef.shape} / intercept {intercept.shape} do not match {len(m['labels'])} classes")
    _model = {"coef": coef, "intercept": intercept, "labels": list(m["labels"])}


def _short(value, limit=80):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rows(raw_data):
    if isinstance(raw_data, (bytes, bytearray)):
        try:
            raw_data = raw_data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"request body is not UTF-8: {e}") from None
    if not isinstance(raw_data, str):
        raise ValueError(f"request body: expected a JSON string, got {type(raw_data).__name__}")
    try:
        body = json.loads(raw_data)
    except json.JSONDecodeError as e:
        raise ValueError(f"request body is not JSON: {e}") from None
    if not isinstance(body, dict) or "data" not in body:
        raise ValueError(f'data: missing; expected {{"data": [[{N_FEATURES} numbers], ...]}}, got {_short(body)}')
    data = body["data"]
    if not isinstance(data, list):
        raise ValueError(f"data: expected a list of rows of {N_FEATURES} numbers, got {_short(data)}")
    for i, row in enumerate(data):
        ok = (
            isinstance(row, list)
            and len(row) == N_FEATURES
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)
        )
        if not ok:
            raise ValueError(
                f"data[{i}]: expected a row of {N_FEATURES} finite numbers "
                f"(sepal length, sepal width, petal length, petal width), got {_short(row)}"
            )
    return np.array(data, dtype=np.float64).reshape(len(data), N_FEATURES)


def run(raw_data):
    if _model is None:
        init()
    x = _rows(raw_data)
    logits = x @ _model["coef"].T + _model["intercept"]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    classes = p.argmax(axis=1)
    return {
        "predictions": [int(c) for c in classes],
        "labels": [_model["labels"][c] for c in classes],
        "probabilities": [[float(v) for v in row] for row in p],
    }
'''


def build_iris() -> tuple[PyBundle, callable]:
    """scikit-learn LogisticRegression on iris; model.json holds coef/intercept/labels."""
    import sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()  # ships with scikit-learn: no download
    x, y = iris.data, iris.target
    # A tight tolerance converges to the optimum itself rather than to wherever
    # the solver's path stops, so the rounded coefficients do not depend on
    # floating-point details of the machine that runs the generator.
    clf = LogisticRegression(max_iter=10000, tol=1e-10, random_state=IRIS_RANDOM_STATE).fit(x, y)
    assert clf.classes_.tolist() == [0, 1, 2], clf.classes_
    labels = [str(n) for n in iris.target_names]
    model = {
        "format": "ferroserve iris logistic regression v1: p = softmax(x @ coef.T + intercept)",
        "trained_with": f"scikit-learn {sklearn.__version__} LogisticRegression(max_iter=10000, tol=1e-10) on sklearn.datasets.load_iris",
        "features": [str(n) for n in iris.feature_names],
        "labels": labels,
        "coef": [[round(float(v), IRIS_DECIMALS) for v in row] for row in clf.coef_],
        "intercept": [round(float(v), IRIS_DECIMALS) for v in clf.intercept_],
    }
    sample_rows = x[[0, 50, 100]]  # one flower of each class
    assert [clf.predict(sample_rows).tolist()] == [[0, 1, 2]]
    sample = json.dumps({"data": [[float(v) for v in row] for row in sample_rows]}) + "\n"

    def check(d: Path) -> None:
        s = LoadedScript(d)
        s.init()
        out = s.run((d / "sample.json").read_text(encoding="utf-8"))
        assert out["predictions"] == [0, 1, 2] and out["labels"] == labels, out
        # every training row: the same class as sklearn's own predict, probabilities within rounding
        full = s.run(json.dumps({"data": x.tolist()}))
        assert full["predictions"] == clf.predict(x).tolist(), "score.py disagrees with sklearn's predict"
        diff = float(np.abs(np.array(full["probabilities"]) - clf.predict_proba(x)).max())
        assert diff < 1e-4, diff
        assert json.loads(json.dumps(full)) == full  # JSON-serialisable as is
        assert s.run(b'{"data": []}') == {"predictions": [], "labels": [], "probabilities": []}
        raises(lambda: s.run('{"rows": [[1, 2, 3, 4]]}'), ValueError, "data: missing")
        raises(lambda: s.run('{"data": 5}'), ValueError, "data: expected a list of rows of 4 numbers, got 5")
        raises(lambda: s.run('{"data": [[1, 2, 3, 4], [1, 2]]}'), ValueError, "data[1]: expected a row of 4", "[1, 2]")
        raises(lambda: s.run('{"data": [[1, 2, "x", 4]]}'), ValueError, "data[0]")
        raises(lambda: s.run("not json"), ValueError, "not JSON")
        acc = float((np.array(full["predictions"]) == y).mean())
        print(f"iris: score.py matches sklearn predict on all {len(y)} rows (training accuracy {acc:.3f}, max |dp| {diff:.1e})")

    b = PyBundle(
        "iris",
        "scikit-learn LogisticRegression on the iris flowers, scored with numpy: {\"data\": [[4 measurements in cm], ...]} -> predictions, labels, probabilities",
        "raw",
        IRIS_SCRIPT,
        dict(max_batch_size=8, max_queue_delay_us=0, max_queue_size=256, timeout_ms=10000),
        dict(count=2, device="cpu"),
        {"task": "classification", "framework": "scikit-learn"},
        sample,
        files={"model.json": json.dumps(model, indent=2) + "\n"},
    )
    return b, check


TEXT_STATS_N = 16
STD_FLOOR = 1e-6

# The numpy core shared by text_stats and the faulty bundles, so that the
# faulty ones behave exactly like text_stats on ordinary rows.
TEXT_STATS_CORE = '''\
N_VALUES = 16
STD_FLOOR = 1e-6


def _values(inputs):
    if "values" not in inputs:
        raise ValueError(f"values: missing input (got {sorted(inputs)})")
    values = np.asarray(inputs["values"])
    if values.ndim != 2 or values.shape[1] != N_VALUES:
        raise ValueError(f"values: expected shape [N, {N_VALUES}], got {list(values.shape)}")
    return values


def _stats(values):
    """Row-wise standardisation and summary, computed in float64, returned as float32."""
    x = values.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    normalized = (x - mean) / np.maximum(std, STD_FLOOR)
    summary = np.concatenate([mean, std, x.max(axis=1, keepdims=True)], axis=1)
    return {"normalized": normalized.astype(np.float32), "summary": summary.astype(np.float32)}
'''

TEXT_STATS_SCRIPT = '''\
"""text_stats: numpy pre/post-processing as a tensor-style python model.

run() gets a whole batch (rows of several requests stacked on dim 0):
  values     FP32 [N, 16]
and returns, row by row,
  normalized FP32 [N, 16]  (x - mean) / max(std, 1e-6)
  summary    FP32 [N, 3]   [mean, std, max]   (std: population, ddof 0)
"""

import numpy as np

''' + TEXT_STATS_CORE + '''

def init():
    pass  # nothing to load: the constants above are the whole model


def run(inputs):
    return _stats(_values(inputs))
'''

FAULTY_SCRIPT = '''\
"""faulty: text_stats (same signature, same outputs) with three triggers, for tests.

A batch in which some row has values[:, 0] equal to
  777: the worker process exits at once (os._exit(3));
  888: run() never returns (sleeps forever; the manifest's timeout_ms is 2000);
  666: run() raises ValueError("row I: values[0] = 666 is the forbidden value"),
       I being the first such row's index within the batch.
Checked in that order, so a batch holding 777 exits whatever else it holds.
Any other batch is computed exactly as text_stats computes it.
"""

import os
import time

import numpy as np

''' + TEXT_STATS_CORE + '''

EXIT_VALUE = 777
HANG_VALUE = 888
RAISE_VALUE = 666


def init():
    pass


def run(inputs):
    values = _values(inputs)
    first = values[:, 0]
    if (first == EXIT_VALUE).any():
        os._exit(3)
    if (first == HANG_VALUE).any():
        while True:
            time.sleep(3600)
    if (first == RAISE_VALUE).any():
        row = int(np.flatnonzero(first == RAISE_VALUE)[0])
        raise ValueError(f"row {row}: values[0] = {RAISE_VALUE} is the forbidden value")
    return _stats(values)
'''

FAULTY_INIT_SCRIPT = '''\
"""faulty_init: text_stats whose init() always fails, so no worker ever becomes ready."""

import numpy as np

''' + TEXT_STATS_CORE + '''

def init():
    raise RuntimeError("init failed on purpose: model file missing")


def run(inputs):
    return _stats(_values(inputs))
'''

TEXT_STATS_IO = (
    [("values", "FP32", [-1, TEXT_STATS_N])],
    [("normalized", "FP32", [-1, TEXT_STATS_N]), ("summary", "FP32", [-1, 3])],
)


def text_stats_expected(values: np.ndarray) -> dict[str, np.ndarray]:
    x = values.astype(np.float64)
    mean, std = x.mean(axis=1), x.std(axis=1)
    normalized = (x - mean[:, None]) / np.maximum(std, STD_FLOOR)[:, None]
    return {"normalized": normalized.astype(np.float32),
            "summary": np.stack([mean, std, x.max(axis=1)], axis=1).astype(np.float32)}


def text_stats_sample() -> dict[str, np.ndarray]:
    return {"values": np.array([np.arange(1, 17), [0.5] * 8 + [-0.5] * 8], dtype=np.float32)}


def check_text_stats_like(s: LoadedScript, d: Path, name: str) -> None:
    """run() on the sample and on a random batch (with a constant row) equals text_stats_expected."""
    sample = decode_v2_request((d / "sample.json").read_text(encoding="utf-8"))
    assert sample["values"].tolist() == text_stats_sample()["values"].tolist()
    batch = np.round(np.random.default_rng(11).normal(3.0, 2.0, (7, TEXT_STATS_N)), 3).astype(np.float32)
    batch[3] = 2.5  # std 0: the floor keeps normalized at 0 instead of NaN
    for x in (sample["values"], batch, batch[:1]):
        out = s.run({"values": x})
        want = text_stats_expected(x)
        assert sorted(out) == ["normalized", "summary"], (name, sorted(out))
        for k in want:
            assert out[k].dtype == np.float32 and out[k].shape == want[k].shape, (name, k, out[k].dtype, out[k].shape)
            assert np.array_equal(out[k], want[k]), (name, k)
    assert np.array_equal(s.run({"values": batch})["normalized"][3], np.zeros(TEXT_STATS_N, np.float32))
    raises(lambda: s.run({"values": np.zeros((2, 15), np.float32)}), ValueError, "values: expected shape [N, 16], got [2, 15]")
    raises(lambda: s.run({"x": np.zeros((2, 16), np.float32)}), ValueError, "values: missing")


def build_text_stats() -> tuple[PyBundle, callable]:
    ins, outs = TEXT_STATS_IO
    sample = text_stats_sample()
    want = text_stats_expected(sample["values"])
    assert want["summary"].tolist() == [[8.5, float(np.float32(np.sqrt(21.25))), 16.0], [0.0, 0.5, 0.5]], want["summary"]

    def check(d: Path) -> None:
        s = LoadedScript(d)
        s.init()
        check_text_stats_like(s, d, "text_stats")
        print("text_stats: run() equals the numpy reference on the sample and a random batch")

    b = PyBundle(
        "text_stats",
        "numpy pre/post-processing (python backend, tensor style): values [-1,16] -> row-standardised values and [mean, std, max] per row",
        "tensor",
        TEXT_STATS_SCRIPT,
        dict(max_batch_size=32, max_queue_delay_us=200, max_queue_size=256, timeout_ms=10000),
        dict(count=2, device="cpu"),
        {"task": "preprocessing"},
        v2_request(ins, sample),
        inputs=ins,
        outputs=outs,
    )
    return b, check


def build_faulty() -> tuple[PyBundle, callable]:
    ins, outs = TEXT_STATS_IO

    def check(d: Path) -> None:
        s = LoadedScript(d)
        s.init()
        check_text_stats_like(s, d, "faulty")
        normal = text_stats_sample()["values"]
        bad = np.concatenate([normal, normal])
        bad[2, 0] = 666
        raises(lambda: s.run({"values": bad}), ValueError, "row 2: values[0] = 666 is the forbidden value")
        raises(lambda: s.run({"values": bad[2:3]}), ValueError, "row 0: values[0] = 666 is the forbidden value")
        ok = normal.copy()
        ok[:, 1] = 666  # only column 0 matters
        s.run({"values": ok})

        # 888: the hang loop is entered (time.sleep stubbed out to break it)
        class Hung(Exception):
            pass

        def fake_sleep(seconds):
            assert seconds >= 60, seconds
            raise Hung()

        real_time = s.module.time
        s.module.time = type("FakeTime", (), {"sleep": staticmethod(fake_sleep)})
        try:
            hang = normal.copy()
            hang[1, 0] = 888
            raises(lambda: s.run({"values": hang}), Hung)
        finally:
            s.module.time = real_time

        # 777: the process exits with status 3 (in a child process, of course)
        code = (
            "import importlib.util, numpy as np\n"
            f"spec = importlib.util.spec_from_file_location('score', {str(d / 'score.py')!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.init()\n"
            "x = np.zeros((2, 16), np.float32); x[1, 0] = 777\n"
            "m.run({'values': x})\n"
            "raise SystemExit(0)\n"
        )
        rc = subprocess.run([sys.executable, "-B", "-c", code], env={"AZUREML_MODEL_DIR": str(d), "PATH": ""},
                            timeout=60).returncode
        assert rc == 3, rc
        print("faulty: text_stats on ordinary rows; values[0] = 666 raises, 777 exits with status 3, 888 hangs")

    b = PyBundle(
        "faulty",
        "text_stats that fails on purpose (tests): a row with values[0] = 666 raises ValueError, 777 kills the worker (exit 3), 888 hangs",
        "tensor",
        FAULTY_SCRIPT,
        dict(max_batch_size=8, max_queue_delay_us=0, max_queue_size=256, timeout_ms=2000),
        dict(count=2, device="cpu"),
        {"task": "testing", "note": "values[0]: 666 raises, 777 exits the worker, 888 hangs past timeout_ms"},
        v2_request(ins, text_stats_sample()),
        inputs=ins,
        outputs=outs,
    )
    return b, check


def build_faulty_init() -> tuple[PyBundle, callable]:
    ins, outs = TEXT_STATS_IO

    def check(d: Path) -> None:
        s = LoadedScript(d)
        raises(s.init, RuntimeError, "init failed on purpose: model file missing")
        check_text_stats_like(s, d, "faulty_init")  # run() itself is text_stats
        print("faulty_init: init() raises RuntimeError")

    b = PyBundle(
        "faulty_init",
        "text_stats whose init() raises RuntimeError in every worker (tests: a version that never loads)",
        "tensor",
        FAULTY_INIT_SCRIPT,
        dict(max_batch_size=8, max_queue_delay_us=0, max_queue_size=256, timeout_ms=2000),
        dict(count=2, device="cpu"),
        {"task": "testing", "note": "init() always raises"},
        v2_request(ins, text_stats_sample()),
        inputs=ins,
        outputs=outs,
    )
    return b, check


SIX_PIN = "six==1.17.0"  # also pinned in requirements-dev.txt, so pip's cache has it after set-up

REQS_SCRIPT = '''\
"""reqs: reports which interpreter environment runs it (raw style).

Its requirements.txt pins six, so the server installs it into a venv keyed by
the file's hash; run() ignores the request body and returns
{"six": six.__version__, "prefix": sys.prefix, "pid": os.getpid()}.
Bundles whose requirements.txt are byte-identical share one venv (one prefix).
"""

import os
import sys

import six


def init():
    pass


def run(raw_data):
    return {"six": six.__version__, "prefix": sys.prefix, "pid": os.getpid()}
'''

REQS_AB = "# reqs-a and reqs-b: this file is byte-for-byte the same in both bundles (one venv)\n" + SIX_PIN + "\n"
REQS_C = ("# reqs-c: the same package as reqs-a and reqs-b, but this file differs from theirs\n"
          "# (this second comment line), so its hash and therefore its venv differ too\n" + SIX_PIN + "\n")


def build_reqs(name: str, requirements: str) -> tuple[PyBundle, callable]:
    def check(d: Path) -> None:
        import six  # requirements-dev.txt pins it: the bundles' own requirement
        s = LoadedScript(d)
        s.init()
        out = s.run((d / "sample.json").read_text(encoding="utf-8"))
        assert out == {"six": six.__version__, "prefix": sys.prefix, "pid": os.getpid()}, out
        assert out["six"] == SIX_PIN.split("==")[1], (out, SIX_PIN)
        assert json.loads(json.dumps(out)) == out

    b = PyBundle(
        name,
        f"raw-style script with a requirements.txt ({SIX_PIN}): returns the six version and the venv (sys.prefix) it runs in",
        "raw",
        REQS_SCRIPT,
        dict(max_batch_size=8, max_queue_delay_us=0, max_queue_size=256, timeout_ms=10000),
        dict(count=1, device="cpu"),
        {"task": "testing"},
        json.dumps({"data": []}) + "\n",
        requirements=("requirements.txt", requirements),
    )
    return b, check


NUMPY_MLP_SCRIPT = '''\
"""A 3-layer MLP in numpy (tensor style): the kind of run() whose cost is
the model, not the call. Weights come from a fixed seed in init(), so the
bundle carries no weight files."""
import numpy as np

W = []


def init():
    rng = np.random.default_rng(20251129)
    sizes = [256, 1024, 1024, 10]
    W.clear()
    for a, b in zip(sizes, sizes[1:]):
        W.append(((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), np.zeros(b, np.float32)))


def run(inputs):
    x = inputs["features"]
    if x.ndim != 2 or x.shape[1] != 256:
        raise ValueError(f"features: expected shape [N, 256], got {list(x.shape)}")
    h = x
    for i, (w, b) in enumerate(W):
        h = h @ w + b
        if i < len(W) - 1:
            np.maximum(h, 0, out=h)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return {"probabilities": (e / e.sum(axis=1, keepdims=True)).astype(np.float32)}
'''


def build_numpy_mlp() -> tuple[PyBundle, callable]:
    ins = [("features", "FP32", [-1, 256])]
    outs = [("probabilities", "FP32", [-1, 10])]
    sample = {"features": (np.arange(2 * 256, dtype=np.float32).reshape(2, 256) % 7) / 7}

    def check(d: Path) -> None:
        s = LoadedScript(d)
        s.init()
        out = s.run({"features": sample["features"]})["probabilities"]
        assert out.shape == (2, 10) and out.dtype == np.float32, out.shape
        assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5), out.sum(axis=1)
        print("numpy-mlp: run() gives probabilities of the right shape")

    b = PyBundle(
        "numpy_mlp",
        "a 3-layer MLP (256 -> 1024 -> 1024 -> 10) in numpy (python backend, tensor style): a run() that costs milliseconds per batch, for the benchmark",
        "tensor",
        NUMPY_MLP_SCRIPT,
        dict(max_batch_size=32, max_queue_delay_us=500, max_queue_size=1024, timeout_ms=10000),
        dict(count=2, device="cpu"),
        {"task": "benchmark"},
        v2_request(ins, sample),
        inputs=ins,
        outputs=outs,
    )
    return b, check


def build_python_models() -> list[tuple[PyBundle, callable]]:
    """examples/models/NAME/1 python bundles, in writing order."""
    return [build_iris(), build_text_stats()]


def build_python_bundles() -> dict[str, tuple[PyBundle, callable]]:
    """examples/bundles/DIR python bundles, in writing order."""
    return {
        "faulty": build_faulty(),
        "faulty-init": build_faulty_init(),
        "reqs-a": build_reqs("reqs_a", REQS_AB),
        "reqs-b": build_reqs("reqs_b", REQS_AB),
        "reqs-c": build_reqs("reqs_c", REQS_C),
        "numpy-mlp": build_numpy_mlp(),
    }


def write_py_bundle_dir(d: Path, b: PyBundle, check) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    toml_text = py_bundle_toml(b)
    parsed = tomllib.loads(toml_text)  # catches quoting mistakes before the server does
    assert parsed["name"] == b.name and parsed["backend"] == "python" and parsed["python"]["style"] == b.style
    if b.style == "raw":
        assert not b.inputs and not b.outputs, b.name  # the server declares raw's BYTES "raw" -> "result"
    else:
        assert b.style == "tensor" and len(parsed["inputs"]) == len(b.inputs) >= 1 and len(parsed["outputs"]) == len(b.outputs) >= 1
        assert all(shape[0] == -1 for _, _, shape in b.inputs + b.outputs), b.name
    compile(b.script, str(d / "score.py"), "exec")  # a syntax error fails here, not in a worker
    (d / "bundle.toml").write_text(toml_text, encoding="utf-8")
    (d / "score.py").write_text(b.script, encoding="utf-8")
    (d / "sample.json").write_text(b.sample, encoding="utf-8")
    for file_name, text in b.files.items():
        (d / file_name).write_text(text, encoding="utf-8")
    if b.requirements is not None:
        (d / b.requirements[0]).write_text(b.requirements[1], encoding="utf-8")
    check(d)
    stray = sorted(p.name for p in d.iterdir())
    want = sorted(["bundle.toml", "score.py", "sample.json", *b.files, *([b.requirements[0]] if b.requirements else [])])
    assert stray == want, (b.name, stray, want)  # e.g. no __pycache__ from the check
    print(f"wrote {d}")


BUNDLES_README = """\
# Extra bundles (not served by default)

Single bundles, one per folder (`bundle.toml`, `model.onnx` or `score.py`, `sample.json`, ...), outside the
served repository `examples/models`. The tests register them as new versions of a model that
`examples/models` serves, or as models of their own (the python ones); nothing loads them unless a test (or you) registers them.

| folder | manifest name | what it is for |
|---|---|---|
| `mlp-v2` | `mlp` | version 2 of `mlp`: same signature, settings and `labels.txt`, other weights, so its outputs clearly differ from version 1 for the same input (hot swap) |
| `flaky` | `flaky` | an MLP with `mlp`'s signature that fails the whole batch at run time (ONNX Runtime Gather out of bounds) when any row has `input[0] > 100`; rows with small values always succeed. Has a `warmup.json` (one request, two rows of 0.1) that succeeds. For rollouts that roll back against a deployment erroring on some inputs |
| `flaky-badwarmup` | `flaky` | a later version of `flaky`: the same `model.onnx`, but its `warmup.json` request has a row with `input[0] = 1000`, so warm-up fails at inference (failed warm-up) |
| `faulty` | `faulty` | python backend, tensor style, `text_stats`'s signature (`values` FP32 [-1,16] -> `normalized` [-1,16], `summary` [-1,3]) and results, except for a batch with a row whose `values[0]` is 666 (`run()` raises `ValueError("row I: values[0] = 666 is the forbidden value")`), 777 (the worker process exits with status 3) or 888 (`run()` sleeps forever; `timeout_ms = 2000`). Two workers, batches of up to 8 rows |
| `faulty-init` | `faulty_init` | the same, but `init()` raises `RuntimeError("init failed on purpose: model file missing")` in every worker, so it never loads |
| `reqs-a`, `reqs-b` | `reqs_a`, `reqs_b` | python backend, raw style, with byte-identical `requirements.txt` (`six==1.17.0`): `run()` returns `{"six": version, "prefix": sys.prefix, "pid": pid}`, so a test sees that both run in one venv |
| `reqs-c` | `reqs_c` | the same `score.py` with a `requirements.txt` that differs (one more comment line): its own venv |
| `mlp-opencl` | `mlp_opencl` | `mlp`'s model file, signature, batching and labels with `backend = "opencl"` on `opencl:0` (one instance): served next to `mlp`, its answers must equal ONNX Runtime's |
| `conv-opencl` | `conv_opencl` | the same for `conv` (convolutions through `im2col` + the tiled GEMM kernel) |
| `numpy-mlp` | `numpy_mlp` | python backend, tensor style: a 3-layer MLP (256 -> 1024 -> 1024 -> 10) in numpy with seeded weights, a `run()` that costs milliseconds per batch (the Python benchmark's second tensor case) |

Generated by `examples/generate.py` (`--bundles-out DIR` to write them elsewhere); do not edit by hand.
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "models",
                        help="repository folder to write bundles into (default: examples/models)")
    parser.add_argument("--bundles-out", type=Path, default=Path(__file__).resolve().parent / "bundles",
                        help="folder for the loose bundles tests register as new versions (default: examples/bundles)")
    args = parser.parse_args(argv)

    # One generator, consumed in a fixed order: adding a model at the end keeps
    # the earlier models' weights unchanged.
    rng = np.random.default_rng(SEED)
    builders = [build_mlp, build_multi_io, build_conv, build_strings, build_dtypes, build_seq_sum]
    built = {}
    for build in builders:
        b = build(rng)
        built[b.name] = b
        write_bundle(args.out, b)

    extra = build_extra_bundles()
    extra["mlp-opencl"] = build_opencl_bundle(built["mlp"])
    extra["conv-opencl"] = build_opencl_bundle(built["conv"])
    for dir_name, b in extra.items():
        write_bundle_dir(args.bundles_out / dir_name, b)
    flaky_dir, bad_dir = args.bundles_out / "flaky", args.bundles_out / "flaky-badwarmup"
    assert (flaky_dir / "model.onnx").read_bytes() == (bad_dir / "model.onnx").read_bytes()

    # python backend bundles: no rng, so the ONNX bundles above are unaffected
    for b, check in build_python_models():
        write_py_bundle_dir(args.out / b.name / "1", b, check)
    for dir_name, (b, check) in build_python_bundles().items():
        write_py_bundle_dir(args.bundles_out / dir_name, b, check)
    reqs = {n: (args.bundles_out / n / "requirements.txt").read_bytes() for n in ("reqs-a", "reqs-b", "reqs-c")}
    assert reqs["reqs-a"] == reqs["reqs-b"] != reqs["reqs-c"], "reqs-a/b must share a requirements file, reqs-c must not"
    assert (args.bundles_out / "reqs-a" / "score.py").read_bytes() == (args.bundles_out / "reqs-c" / "score.py").read_bytes()
    (args.bundles_out / "README.md").write_text(BUNDLES_README, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

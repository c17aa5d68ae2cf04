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
"""

from __future__ import annotations

import argparse
import json
import shutil
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
        'backend = "onnx"',
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


BUNDLES_README = """\
# Extra bundles (not served by default)

Single bundles, one per folder (`bundle.toml`, `model.onnx`, `sample.json`, ...), outside the
served repository `examples/models`. The tests register them as new versions of a model that
`examples/models` serves; nothing loads them unless a test (or you) registers them.

| folder | manifest name | what it is for |
|---|---|---|
| `mlp-v2` | `mlp` | version 2 of `mlp`: same signature, settings and `labels.txt`, other weights, so its outputs clearly differ from version 1 for the same input (hot swap) |
| `flaky` | `flaky` | an MLP with `mlp`'s signature that fails the whole batch at run time (ONNX Runtime Gather out of bounds) when any row has `input[0] > 100`; rows with small values always succeed. Has a `warmup.json` (one request, two rows of 0.1) that succeeds. For rollouts that roll back against a deployment erroring on some inputs |
| `flaky-badwarmup` | `flaky` | a later version of `flaky`: the same `model.onnx`, but its `warmup.json` request has a row with `input[0] = 1000`, so warm-up fails at inference (failed warm-up) |

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
    for build in builders:
        write_bundle(args.out, build(rng))

    extra = build_extra_bundles()
    for dir_name, b in extra.items():
        write_bundle_dir(args.bundles_out / dir_name, b)
    flaky_dir, bad_dir = args.bundles_out / "flaky", args.bundles_out / "flaky-badwarmup"
    assert (flaky_dir / "model.onnx").read_bytes() == (bad_dir / "model.onnx").read_bytes()
    (args.bundles_out / "README.md").write_text(BUNDLES_README, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Writes the ONNX project's node test cases that touch the OpenCL backend's
operators as plain files the Rust harness can read without protobuf or numpy.

    .venv/bin/python tests/opencl/write_node_cases.py OUT_DIR

For every case whose model has a node of one of OPS (expanded variants
included: their other operators exercise the "unsupported operator" refusal):

    OUT_DIR/<case>/model.onnx
    OUT_DIR/<case>/case.json   {"name", "ops", "opset_import", "rtol", "atol",
                                "data_sets": [{"inputs": [...], "outputs": [...]}]}
    OUT_DIR/<case>/ds<i>_in<j>.bin, ds<i>_out<j>.bin

Each tensor entry is {"name", "datatype" (KServe v2 name), "shape", "file"};
the file holds the raw little-endian row-major bytes (BYTES: each element a
u32 little-endian length, then its UTF-8 bytes). Input names are the graph's
non-initializer inputs in order, output names the graph outputs in order.

Cases with a sequence, optional or map input or output, or an element type the
protocol cannot carry (bfloat16, float8, int4, ...) are skipped and counted.
Cases the installed onnx fails to generate are printed, skipped and counted.

The output is deterministic and the directory is rebuilt from scratch on every
run (it is swapped in whole, so a reader never sees half of it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx.backend.test.case.base as case_base
import onnx.backend.test.case.node as case_node
from onnx import numpy_helper

OPS = [
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid",
    "Tanh", "Softmax", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
    "BatchNormalization", "Flatten", "Reshape", "Transpose", "Concat", "Identity",
    "Constant", "Exp", "Log", "Sqrt", "Erf",
]  # fmt: skip

# numpy dtype -> Open Inference Protocol (KServe v2) datatype name.
DATATYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}

MARKER = ".onnx-node-cases"

# Export functions that raised while the test cases were generated:
# "<Class>.<export function>: <error>".
GENERATION_ERRORS: list[str] = []


class Skip(Exception):
    """A case the files cannot represent; the message is the reason's kind."""


def _tolerant_exporter_init(cls, name, bases, dct):
    # Same as onnx's _Exporter.__init__, except that one failing export
    # function costs only its own cases, not the rest of its module.
    for key, value in dct.items():
        if key.startswith("export"):
            if not isinstance(value, staticmethod):
                raise ValueError("Only staticmethods could be named as export.*")
            export = getattr(cls, key)
            case_base.Snippets[name].append(case_base.process_snippet(name, key, export))
            np.random.seed(seed=0)
            try:
                export()
            except Exception as e:  # noqa: BLE001 - any failure skips that export
                GENERATION_ERRORS.append(f"{name}.{key}: {type(e).__name__}: {e}")
    type.__init__(cls, name, bases, dct)


def _tolerant_import_recursive(package) -> None:
    import importlib
    import pkgutil

    for _loader, name, ispkg in pkgutil.iter_modules(package.__path__):
        module_name = f"{package.__name__}.{name}"
        if not onnx.ONNX_ML and module_name.startswith("onnx.backend.test.case.node.ai_onnx_ml"):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001
            GENERATION_ERRORS.append(f"{module_name}: {type(e).__name__}: {e}")
            continue
        if ispkg:
            _tolerant_import_recursive(module)


def collect_cases():
    case_base._Exporter.__init__ = _tolerant_exporter_init
    case_node.import_recursive = _tolerant_import_recursive
    return case_node.collect_testcases(None)


def all_nodes(graph: onnx.GraphProto):
    """Every node of the graph, subgraphs (If/Loop/Scan bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_nodes(g)


def tensor_file(value, name: str, value_info: onnx.ValueInfoProto, file: str, out: Path):
    if not value_info.type.HasField("tensor_type"):
        raise Skip(f"non-tensor ({value_info.type.WhichOneof('value')})")
    if isinstance(value, (list, dict)) or value is None:
        raise Skip("non-tensor value")
    if isinstance(value, onnx.TensorProto):
        value = numpy_helper.to_array(value)
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "S", "O"):
        datatype = "BYTES"
        buf = bytearray()
        for item in arr.reshape(-1):
            b = item if isinstance(item, bytes) else str(item).encode("utf-8")
            buf += len(b).to_bytes(4, "little") + b
        data = bytes(buf)
    else:
        datatype = DATATYPES.get(arr.dtype)
        if datatype is None:
            raise Skip(f"dtype {arr.dtype}")
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    (out / file).write_bytes(data)
    return {"name": name, "datatype": datatype, "shape": [int(d) for d in arr.shape], "file": file}


def write_case(case, out: Path) -> dict:
    graph = case.model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializers]
    outputs = list(graph.output)
    out.mkdir()
    data_sets = []
    for i, (ins, outs) in enumerate(case.data_sets):
        ins, outs = list(ins), list(outs)
        if len(ins) != len(inputs) or len(outs) != len(outputs):
            raise Skip("data set does not match the graph's inputs/outputs")
        data_sets.append(
            {
                "inputs": [
                    tensor_file(v, vi.name, vi, f"ds{i}_in{j}.bin", out)
                    for j, (v, vi) in enumerate(zip(ins, inputs))
                ],
                "outputs": [
                    tensor_file(v, vi.name, vi, f"ds{i}_out{j}.bin", out)
                    for j, (v, vi) in enumerate(zip(outs, outputs))
                ],
            }
        )
    (out / "model.onnx").write_bytes(case.model.SerializeToString(deterministic=True))
    meta = {
        "name": case.name,
        "ops": [n.op_type for n in graph.node],
        "opset_import": {o.domain or "ai.onnx": o.version for o in case.model.opset_import},
        "rtol": case.rtol,
        "atol": case.atol,
        "data_sets": data_sets,
    }
    (out / "case.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


class ExtraCase:
    """A case of ours, in the shape of onnx's TestCase: expected outputs come
    from ONNX Runtime. They cover what the ONNX node cases leave out: grouped,
    depthwise and dilated convolutions (with output channels that are not a
    multiple of the kernel's 4-channel blocks), GEMMs larger than one 64x64
    tile, pre-13 Softmax, and the fusions the planner does (Conv/Gemm + Relu)."""

    def __init__(self, name, model, inputs):
        import onnxruntime as ort

        self.name = name
        self.model = model
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = sess.run(None, inputs)
        self.data_sets = [(list(inputs.values()), outputs)]
        self.rtol = 1e-4
        self.atol = 1e-5


def extra_cases() -> list[ExtraCase]:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(20261129)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def model(nodes, inputs, outputs, inits=(), opset=17):
        graph = helper.make_graph(
            nodes, "extra",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            initializer=[numpy_helper.from_array(a, n) for n, a in inits],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)

    cases = []
    for name, c, m, group, dil, pads, stride in [
        ("grouped", 4, 6, 2, 1, [1, 0, 1, 2], 1),
        ("depthwise", 8, 8, 8, 1, [1, 1, 1, 1], 1),
        ("dilated", 3, 5, 1, 2, [2, 2, 2, 2], 1),
        ("strided_grouped_dilated", 6, 9, 3, 2, [0, 1, 2, 0], 2),
    ]:
        w = f32(m, c // group, 3, 3)
        b = f32(m)
        x = f32(2, c, 9, 11)
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, dilations=[dil, dil],
                                  pads=pads, strides=[stride, stride], kernel_shape=[3, 3])]
        cases.append(ExtraCase(f"ferroserve_conv_{name}", model(nodes, [("x", x.shape)], ["y"], [("w", w), ("b", b)]),
                               {"x": x}))
    # Conv + Relu and Gemm + Relu are fused into one launch each.
    w, b = f32(7, 3, 3, 3), f32(7)
    fw, fb = f32(7 * 5 * 5, 70), f32(70)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["g"]),
        helper.make_node("Relu", ["g"], ["h"]),
        helper.make_node("Softmax", ["h"], ["y"], axis=1),
    ]
    x = f32(3, 3, 11, 11)
    cases.append(ExtraCase("ferroserve_fused_conv_gemm_relu",
                           model(nodes, [("x", x.shape)], ["y"], [("w", w), ("b", b), ("fw", fw), ("fb", fb)]), {"x": x}))
    # A GEMM spanning several 64x64 tiles with ragged edges, both operands transposed.
    a, bb, cc = f32(33, 70), f32(130, 33), f32(130)
    nodes = [helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)]
    cases.append(ExtraCase("ferroserve_gemm_multi_tile", model(nodes, [("a", a.shape)], ["y"], [("b", bb), ("c", cc)]),
                           {"a": a}))
    # Batched MatMul with broadcast batch dimensions.
    a, bb = f32(2, 1, 65, 17), f32(3, 17, 66)
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    cases.append(ExtraCase("ferroserve_matmul_broadcast_batches",
                           model(nodes, [("a", a.shape), ("b", bb.shape)], ["y"]), {"a": a, "b": bb}))
    # Softmax before opset 13 flattens to 2-D at the axis.
    x = f32(2, 3, 4)
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    cases.append(ExtraCase("ferroserve_softmax_opset11_coerced", model(nodes, [("x", x.shape)], ["y"], opset=11),
                           {"x": x}))
    # Reshape by an initializer, Transpose, Concat with a constant, BatchNorm.
    x = f32(2, 12)
    k = f32(2, 3, 2, 2)
    sc, bi, mu, var = f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.5
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "sc", "bi", "mu", "var"], ["n"], epsilon=1e-3),
        helper.make_node("Transpose", ["n"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Concat", ["t", "k2"], ["y"], axis=1),
    ]
    inits = [("shape", np.array([2, 3, 2, 2], dtype=np.int64)), ("sc", sc), ("bi", bi), ("mu", mu), ("var", var),
             ("k2", k.transpose(0, 2, 3, 1).copy())]
    graph_model = model(nodes, [("x", x.shape)], ["y"])
    graph_model.graph.initializer.extend([numpy_helper.from_array(a, n) for n, a in inits])
    cases.append(ExtraCase("ferroserve_reshape_batchnorm_transpose_concat", graph_model, {"x": x}))
    return cases


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    dest = Path(argv[1]).resolve()
    if dest.exists() and any(dest.iterdir()) and not (dest / MARKER).exists():
        print(f"error: {dest} is not empty and was not written by this script", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / MARKER).write_text("written by tests/opencl/write_node_cases.py\n")

    wanted = set(OPS)
    cases = sorted(collect_cases(), key=lambda c: c.name) + extra_cases()
    per_op: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    written = 0
    seen = set()
    for case in cases:
        if case.name in seen:
            skipped["duplicate name"] += 1
            continue
        seen.add(case.name)
        if not any(n.op_type in wanted for n in all_nodes(case.model.graph)):
            continue
        out = staging / case.name
        try:
            meta = write_case(case, out)
        except Skip as s:
            shutil.rmtree(out, ignore_errors=True)
            skipped[str(s)] += 1
            continue
        except Exception as e:  # noqa: BLE001 - one bad case must not stop the rest
            shutil.rmtree(out, ignore_errors=True)
            GENERATION_ERRORS.append(f"{case.name}: {type(e).__name__}: {e}")
            traceback.print_exc()
            continue
        written += 1
        for op in sorted(set(meta["ops"]) & wanted):
            per_op[op] += 1

    old = None
    if dest.exists():
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    staging.rename(dest)
    if old is not None:
        shutil.rmtree(old)

    print(f"onnx {onnx.__version__}: {len(cases)} node test cases, {written} written to {dest}")
    for op in OPS:
        print(f"  {op:20} {per_op[op]}")
    for why, n in sorted(skipped.items()):
        print(f"  skipped ({why}): {n}")
    if GENERATION_ERRORS:
        print(f"  could not generate: {len(GENERATION_ERRORS)}")
        for e in GENERATION_ERRORS:
            print(f"    {e}")
    return 0


if __name__ == "__main__":
    import warnings

    # The exporters' own numpy overflow/divide warnings are expected noise.
    warnings.simplefilter("ignore", RuntimeWarning)
    sys.exit(main(sys.argv))

"""The classification extension through Triton's HTTP client.

`InferRequestedOutput(name, class_count=K)` asks for the top K classes of an
output instead of its values: a BYTES tensor [rows, K] of "score:index:label"
strings (score as C's "%f", label from the bundle's labels file). Every
answer is compared with numpy's top K of ONNX Runtime's output, computed
in-process on the same inputs; every refused request is a 400 naming the
output, and the server then still answers a good request.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tritonclient.http as httpclient

import ferro

MLP_LABELS = ferro.EXAMPLES / "mlp" / "1" / "labels.txt"
SCORE_RE = re.compile(r"^-?\d+\.\d{6}$")  # std::to_string(float): printf("%f")


def _labels() -> list[str]:
    assert MLP_LABELS.is_file(), f"{MLP_LABELS} missing: run `.venv/bin/python examples/generate.py`"
    return MLP_LABELS.read_text(encoding="utf-8").splitlines()


def _strings(arr: np.ndarray) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)]


def _expected(values: np.ndarray, k: int, labels: list[str] | None) -> list[list[tuple[float, int, str | None]]]:
    """Top k of each row, highest first, ties by index: (value, index, label)."""
    rows = values.reshape(values.shape[0], -1)
    out = []
    for row in rows:
        order = np.argsort(-row.astype(np.float64), kind="stable")[: min(k, row.size)]
        out.append([(float(row[i]), int(i), labels[i] if labels else None) for i in order])
    return out


def _check(got: list[str], want: list[tuple[float, int, str | None]], what: str):
    assert len(got) == len(want), f"{what}: {got} vs {want}"
    for s, (value, index, label) in zip(got, want):
        parts = s.split(":")
        assert len(parts) == (3 if label is not None else 2), f"{what}: {s!r}"
        assert SCORE_RE.match(parts[0]), f"{what}: score {parts[0]!r} is not printf %f"
        assert int(parts[1]) == index, f"{what}: {got} vs {want}"
        if label is not None:
            assert parts[2] == label, f"{what}: {s!r}, expected label {label!r}"
        # the same model in the same runtime: equal to the printed precision
        assert abs(float(parts[0]) - value) <= 1e-6, f"{what}: {s!r} vs {value!r}"


def _inputs(feeds: dict[str, np.ndarray], model: str, binary: bool):
    ref = ferro.model_ref(model)
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    return inputs


def _mlp_feeds(seed: int, rows: int) -> dict[str, np.ndarray]:
    feeds = ferro.random_inputs(np.random.default_rng(seed), "mlp", rows)
    probs = ferro.model_ref("mlp").run(feeds)["probabilities"]
    # Guard the exact index comparison: no near-tie inside the top 4.
    top = -np.sort(-probs, axis=1)[:, :4]
    assert (np.diff(-top, axis=1) > 1e-5).all(), f"seed {seed} gives near-ties; pick another"
    return feeds


def test_server_lists_the_extension(triton):
    assert "classification" in triton.get_server_metadata()["extensions"]


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_mlp_top3_matches_numpy(triton, binary, rows):
    feeds = _mlp_feeds(31 + rows + 2 * int(binary), rows)
    want = ferro.model_ref("mlp").run(feeds)["probabilities"]
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = triton.infer("mlp", _inputs(feeds, "mlp", binary), outputs=[out])
    o = result.get_output("probabilities")
    assert o["datatype"] == "BYTES" and o["shape"] == [rows, 3], o
    if binary:
        assert "binary_data_size" in o.get("parameters", {}) and "data" not in o, o
    else:
        assert "data" in o and all(isinstance(s, str) for s in o["data"]), o
    got = _strings(result.as_numpy("probabilities"))
    expected = _expected(want, 3, _labels())
    for r in range(rows):
        _check(got[3 * r: 3 * r + 3], expected[r], f"row {r}")


def test_class_count_above_the_classes_is_clamped(triton):
    feeds = _mlp_feeds(5, 2)
    want = ferro.model_ref("mlp").run(feeds)["probabilities"]
    out = httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=25)
    result = triton.infer("mlp", _inputs(feeds, "mlp", True), outputs=[out])
    assert result.get_output("probabilities")["shape"] == [2, 10]
    got = _strings(result.as_numpy("probabilities"))
    expected = _expected(want, 25, _labels())
    for r in range(2):
        _check(got[10 * r: 10 * r + 10], expected[r], f"row {r}")


def test_classified_and_raw_outputs_side_by_side(triton):
    """multi_io has no labels: "score:index". Its INT64 output is classified
    in its own type; the FP32 output stays raw."""
    feeds = ferro.random_inputs(np.random.default_rng(8), "multi_io", 3)
    want = ferro.model_ref("multi_io").run(feeds)
    outputs = [
        httpclient.InferRequestedOutput("y", binary_data=False),
        httpclient.InferRequestedOutput("index_plus_one", binary_data=False, class_count=1),
    ]
    result = triton.infer("multi_io", _inputs(feeds, "multi_io", False), outputs=outputs)
    ferro.assert_tensor("FP32", result.as_numpy("y"), want["y"], "multi_io.y")
    o = result.get_output("index_plus_one")
    assert o["datatype"] == "BYTES" and o["shape"] == [3, 1], o
    got = _strings(result.as_numpy("index_plus_one"))
    assert got == [f"{int(v)}:0" for v in want["index_plus_one"][:, 0]], got


def test_unbatched_model_ranks_the_whole_tensor(start_server, make_repo):
    repo = make_repo({"mlp": {"max_batch_size": 0, "preferred_batch_sizes": []}})
    srv = start_server(repo)
    feeds = _mlp_feeds(77, 2)
    want = ferro.model_ref("mlp").run(feeds)["probabilities"]
    doc = {
        "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                    "data": [float(x) for x in feeds["input"].reshape(-1)]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 4}}],
    }
    resp = ferro.post_json(srv.addr, ferro.infer_path("mlp"), doc)
    assert resp.status == 200, resp.body[:500]
    (o,) = resp.json()["outputs"]
    assert o["datatype"] == "BYTES" and o["shape"] == [4], o
    # no batch dim: the 20 values of both rows are the classes, indexes 0..19
    labels = _labels()
    flat = want.reshape(1, -1)
    expected = [(v, i, labels[i] if i < len(labels) else None) for v, i, _ in _expected(flat, 4, None)[0]]
    _check(o["data"], expected, "unbatched")


@pytest.mark.parametrize("bad", [0, -1, "x", 2.5, None], ids=["zero", "negative", "string", "float", "null"])
def test_bad_class_count_is_400(addr, bad):
    doc = {
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.25] * 64}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": bad}}],
    }
    resp = ferro.post_json(addr, ferro.infer_path("mlp"), doc)
    assert resp.status == 400, resp.body[:500]
    msg = resp.error_message()
    assert '"probabilities"' in msg and "positive integer" in msg, msg
    assert f"received {json.dumps(bad)}" in msg, msg
    ferro.check_good_request(addr, "mlp")


def test_classification_of_a_bytes_output_is_400(addr, triton):
    doc = {
        "inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["cat"]}],
        "outputs": [{"name": "echo", "parameters": {"classification": 1}}],
    }
    resp = ferro.post_json(addr, ferro.infer_path("strings"), doc)
    assert resp.status == 400, resp.body[:500]
    msg = resp.error_message()
    assert '"echo"' in msg and "BYTES" in msg and "numeric" in msg, msg
    ferro.check_good_request(addr, "strings")
    # the same through tritonclient
    from tritonclient.utils import InferenceServerException

    feeds = {"text": np.array([["dog"]], dtype=np.object_)}
    with pytest.raises(InferenceServerException, match="echo"):
        triton.infer("strings", _inputs(feeds, "strings", True),
                     outputs=[httpclient.InferRequestedOutput("echo", class_count=2)])
    ferro.check_good_request(addr, "mlp")

"""Open Inference Protocol conformance through Triton's own HTTP client.

Every example model is called with JSON tensors and with the binary tensor
data extension, in both directions, at batch sizes 1 and 3, and every output
is compared with ONNX Runtime run in-process on the same inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import ferro

MODELS = ferro.MODELS


def _infer(triton, model, feeds, binary, outputs=None, **kw):
    ref = ferro.model_ref(model)
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    names = outputs if outputs is not None else [o.name for o in ref.outputs]
    requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    return triton.infer(model, inputs, outputs=requested, **kw)


def _check_outputs(model, result, feeds, names=None):
    ref = ferro.model_ref(model)
    names = names or [o.name for o in ref.outputs]
    want = ref.run(feeds, names)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == names, response["outputs"]
    for o in response["outputs"]:
        sig = ref.output(o["name"])
        assert o["datatype"] == sig.datatype, o
        assert o["shape"] == list(want[o["name"]].shape), o
        ferro.assert_tensor(sig.datatype, result.as_numpy(o["name"]), want[o["name"]], f"{model}.{o['name']}")


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", MODELS)
def test_infer_matches_onnxruntime(triton, model, binary, rows):
    seed = 1000 * MODELS.index(model) + 10 * rows + int(binary)
    feeds = ferro.random_inputs(np.random.default_rng(seed), model, rows)
    result = _infer(triton, model, feeds, binary)
    response = result.get_response()
    assert response["model_name"] == model
    assert response["model_version"] == "1"
    for o in response["outputs"]:
        params = o.get("parameters") or {}
        if binary:
            assert "binary_data_size" in params and "data" not in o, o
        else:
            assert "binary_data_size" not in params and "data" in o, o
    _check_outputs(model, result, feeds)


@pytest.mark.parametrize("model", MODELS)
def test_binary_inputs_json_outputs_and_pinned_version(triton, model):
    """Mixed forms: binary inputs with JSON outputs, on /versions/1/infer."""
    feeds = ferro.random_inputs(np.random.default_rng(77), model, 2)
    ref = ferro.model_ref(model)
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr, binary_data=True)
        inputs.append(i)
    outputs = [httpclient.InferRequestedOutput(o.name, binary_data=False) for o in ref.outputs]
    result = triton.infer(model, inputs, model_version="1", outputs=outputs)
    assert result.get_response()["model_version"] == "1"
    _check_outputs(model, result, feeds)


@pytest.mark.parametrize("model", MODELS)
def test_default_outputs_are_binary(triton, model):
    """With no outputs listed tritonclient sets binary_data_output: every
    output comes back in binary form."""
    feeds = ferro.random_inputs(np.random.default_rng(5), model, 2)
    ref = ferro.model_ref(model)
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr, binary_data=False)
        inputs.append(i)
    result = triton.infer(model, inputs)
    for o in result.get_response()["outputs"]:
        assert "binary_data_size" in (o.get("parameters") or {}), o
    _check_outputs(model, result, feeds)


@pytest.mark.parametrize("model", MODELS)
def test_bundle_sample_json(addr, model):
    """The bundle's sample.json, posted as is (what the README's curl does);
    its values include each dtype's extremes."""
    doc = json.loads((ferro.EXAMPLES / model / "1" / "sample.json").read_text())
    resp = ferro.post_json(addr, ferro.infer_path(model), doc)
    assert resp.status == 200, resp.body[:500]
    assert resp.headers.get("content-type", "").startswith("application/json")
    ref = ferro.model_ref(model)
    feeds = {}
    for t in doc["inputs"]:
        dt = t["datatype"]
        feeds[t["name"]] = np.array(t["data"], dtype=ferro.NP_TYPES[dt]).reshape(t["shape"])
    want = ref.run(feeds)
    out = resp.json()
    assert out["model_name"] == model and out["model_version"] == "1"
    assert sorted(o["name"] for o in out["outputs"]) == sorted(want)
    for o in out["outputs"]:
        sig = ref.output(o["name"])
        got = np.array(o["data"], dtype=ferro.NP_TYPES[sig.datatype]).reshape(o["shape"])
        ferro.assert_tensor(sig.datatype, got, want[o["name"]], f"{model}.{o['name']}")


# ---------------------------------------------------------------- subsets, id, parameters


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(("model", "wanted"), [("multi_io", "index_plus_one"), ("multi_io", "y"), ("strings", "echo")])
def test_requested_output_subset(triton, model, wanted, binary):
    feeds = ferro.random_inputs(np.random.default_rng(11), model, 3)
    result = _infer(triton, model, feeds, binary, outputs=[wanted])
    assert [o["name"] for o in result.get_response()["outputs"]] == [wanted]
    _check_outputs(model, result, feeds, [wanted])
    others = [o.name for o in ferro.model_ref(model).outputs if o.name != wanted]
    for name in others:
        assert result.as_numpy(name) is None


def test_requested_outputs_mixed_forms(triton):
    """One output in JSON and the other in binary in the same response."""
    feeds = ferro.random_inputs(np.random.default_rng(12), "multi_io", 2)
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), ferro.model_ref("multi_io").input(name).datatype)
        i.set_data_from_numpy(arr, binary_data=False)
        inputs.append(i)
    outputs = [
        httpclient.InferRequestedOutput("index_plus_one", binary_data=True),
        httpclient.InferRequestedOutput("y", binary_data=False),
    ]
    result = triton.infer("multi_io", inputs, outputs=outputs)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "data" in by_name["y"] and "binary_data_size" in by_name["index_plus_one"]["parameters"]
    _check_outputs("multi_io", result, feeds, ["index_plus_one", "y"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_request_id_echoed(triton, binary):
    feeds = ferro.random_inputs(np.random.default_rng(13), "mlp", 1)
    result = _infer(triton, "mlp", feeds, binary, request_id="req-42/ünï")
    assert result.get_response()["id"] == "req-42/ünï"
    _check_outputs("mlp", result, feeds)


def test_no_id_without_request_id(triton):
    feeds = ferro.random_inputs(np.random.default_rng(14), "mlp", 1)
    result = _infer(triton, "mlp", feeds, False)
    assert result.get_response().get("id") in (None, "")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_custom_parameters_echoed(triton, binary):
    params = {"my_key": "my value", "count": 3, "flag": True, "ratio": 0.5}
    feeds = ferro.random_inputs(np.random.default_rng(15), "multi_io", 2)
    result = _infer(triton, "multi_io", feeds, binary, parameters=params, request_id="p1")
    response = result.get_response()
    echoed = response.get("parameters")
    assert isinstance(echoed, dict), response
    for k, v in params.items():
        assert echoed.get(k) == v, (k, echoed)
    assert response["id"] == "p1"
    _check_outputs("multi_io", result, feeds)


# ---------------------------------------------------------------- health and metadata


def test_server_live_ready_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "ferroserve"
    assert isinstance(meta.get("version"), str) and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_health_raw(addr):
    assert ferro.request(addr, "GET", "/v2/health/live").status == 200
    assert ferro.request(addr, "GET", "/v2/health/ready").status == 200
    resp = ferro.request(addr, "GET", "/v2")
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("model", MODELS)
def test_model_ready(triton, model):
    assert triton.is_model_ready(model)
    assert triton.is_model_ready(model, "1")
    assert not triton.is_model_ready(model, "7")


@pytest.mark.parametrize("version", ["", "1"], ids=["latest", "v1"])
@pytest.mark.parametrize("model", MODELS)
def test_model_metadata(triton, model, version):
    meta = triton.get_model_metadata(model, version)
    assert meta["name"] == model
    assert meta["versions"] == ["1"]
    assert isinstance(meta.get("platform"), str) and meta["platform"]
    manifest = ferro.bundle_manifest(model)
    ref = ferro.model_ref(model)
    for key, declared, sigs in (("inputs", manifest["inputs"], ref.inputs), ("outputs", manifest["outputs"], ref.outputs)):
        got = [(t["name"], t["datatype"], list(t["shape"])) for t in meta[key]]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in declared], (key, got)
        # and the bundle agrees with the model file itself
        assert sorted(got) == sorted((s.name, s.datatype, s.shape) for s in sigs), (key, got)


@pytest.mark.parametrize("model", MODELS)
def test_wrong_version_is_an_error(triton, model):
    with pytest.raises(InferenceServerException) as e:
        triton.get_model_metadata(model, "7")
    assert e.value.status() == "404", str(e.value)
    assert "7" in e.value.message()
    feeds = ferro.random_inputs(np.random.default_rng(16), model, 1)
    ref = ferro.model_ref(model)
    inputs = []
    for name, arr in feeds.items():
        i = httpclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr)
        inputs.append(i)
    with pytest.raises(InferenceServerException) as e:
        triton.infer(model, inputs, model_version="7")
    assert e.value.status() == "404", str(e.value)
    assert "7" in e.value.message()


def test_unknown_model_via_client(triton):
    assert not triton.is_model_ready("no_such_model")
    with pytest.raises(InferenceServerException) as e:
        triton.get_model_metadata("no_such_model")
    assert e.value.status() == "404" and "no_such_model" in e.value.message(), str(e.value)


# ---------------------------------------------------------------- metrics


def test_metrics(addr):
    before = ferro.scrape(addr)
    key = dict(model="mlp", version="1", outcome="success")
    n = 5
    for i in range(n):
        ferro.check_good_request(addr, "mlp", rows=1 + i % 3, seed=100 + i, binary=bool(i % 2))
    after = ferro.scrape(addr)
    assert after.value("ferroserve_requests_total", **key) - before.value("ferroserve_requests_total", **key) == n
    names = after.names()
    for name in (
        "ferroserve_requests_total",
        "ferroserve_batch_size_bucket",
        "ferroserve_batch_size_sum",
        "ferroserve_batch_size_count",
        "ferroserve_queue_depth",
        "ferroserve_inflight_requests",
        "process_resident_memory_bytes",
    ):
        assert name in names, f"{name} missing from /metrics; present: {sorted(names)}"
    rows = after.value("ferroserve_batch_size_sum", model="mlp", version="1") - before.value(
        "ferroserve_batch_size_sum", model="mlp", version="1"
    )
    assert rows == sum(1 + i % 3 for i in range(n)), rows
    assert after.get_value("ferroserve_queue_depth", model="mlp", version="1") == 0
    assert after.value("process_resident_memory_bytes") > 0


# ---------------------------------------------------------------- JSON forms


def test_json_nested_data(addr):
    """Tensor data may be nested row by row as well as flat."""
    x = np.random.default_rng(31).standard_normal((3, 64)).astype(np.float32)
    doc = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": x.tolist()}]}
    resp = ferro.post_json(addr, ferro.infer_path("mlp"), doc)
    assert resp.status == 200, resp.body[:300]
    out = resp.json()["outputs"][0]
    got = np.array(out["data"], np.float32).reshape(out["shape"])
    ferro.assert_tensor("FP32", got, ferro.model_ref("mlp").run({"input": x})["probabilities"], "mlp")


def test_binary_bytes_are_not_required_to_be_utf8(triton):
    """BYTES are bytes: non-UTF-8 elements round-trip exactly in binary form."""
    text = np.array([[b"\xff\xfe"], [b"dog"], [b"\x00\x01cat"]], dtype=np.object_)
    i = httpclient.InferInput("text", [3, 1], "BYTES")
    i.set_data_from_numpy(text, binary_data=True)
    outs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("label_id", "echo")]
    result = triton.infer("strings", [i], outputs=outs)
    assert result.as_numpy("echo").reshape(-1).tolist() == [b"\xff\xfe", b"dog", b"\x00\x01cat"]
    assert result.as_numpy("label_id").reshape(-1).tolist() == [-1, 1, -1]


def _lossless_or_refused(resp: ferro.Response, check):
    """A JSON answer must carry exactly the model's values; where JSON cannot
    (bytes that are not UTF-8, infinities), refusing with an error is fine,
    but a 200 with altered values is not."""
    if resp.status == 200:
        check(ferro.decode_infer(resp))
    else:
        assert resp.status in (400, 500), resp.status
        resp.error_message()


def test_json_output_of_non_utf8_bytes_is_lossless_or_refused(addr):
    raw = b"".join(len(x).to_bytes(4, "little") + x for x in (b"\xff\xfe", b"dog"))
    doc = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES",
                       "parameters": {"binary_data_size": len(raw)}}],
           "outputs": [{"name": "echo", "parameters": {"binary_data": False}}]}
    header = json.dumps(doc).encode()
    resp = ferro.request(addr, "POST", ferro.infer_path("strings"), header + raw,
                         {"Inference-Header-Content-Length": str(len(header))})

    def check(result):
        got = [ferro._as_bytes(x) for x in result.as_numpy("echo").reshape(-1)]
        assert got == [b"\xff\xfe", b"dog"], f"200 with altered BYTES: {got} ({resp.body[:300]!r})"

    _lossless_or_refused(resp, check)


def test_json_output_of_non_finite_floats_is_lossless_or_refused(addr):
    feeds = ferro.random_inputs(np.random.default_rng(32), "dtypes", 2)
    special = [[np.inf, -np.inf], [np.nan, 1.5]]
    names = []
    for dt in ("fp16", "fp32", "fp64"):
        feeds[f"in_{dt}"] = np.array(special, dtype=feeds[f"in_{dt}"].dtype)
        names.append(f"out_{dt}")
    body, headers = ferro.encode_infer(feeds, "dtypes", True, False, outputs=names)
    resp = ferro.request(addr, "POST", ferro.infer_path("dtypes"), body, headers)

    def check(result):
        for n in names:
            got = result.as_numpy(n)
            want = feeds["in_" + n[4:]]
            assert got is not None and got.dtype == want.dtype, (n, got)
            # assert_array_equal treats NaN == NaN and keeps the sign of infinities
            np.testing.assert_array_equal(got, want, err_msg=f"{n}: 200 with altered values ({resp.body[:300]!r})")

    _lossless_or_refused(resp, check)


@pytest.mark.parametrize("call", [
    lambda c: c.get_system_shared_memory_status(),
    lambda c: c.register_system_shared_memory("r0", "/ferro_shm", 64),
    lambda c: c.get_cuda_shared_memory_status(),
], ids=["system_status", "system_register", "cuda_status"])
def test_shared_memory_is_reported_unsupported(triton, call):
    """Shared-memory extensions are absent: 501 with a message that says so,
    and the server keeps serving."""
    with pytest.raises(InferenceServerException) as raised:
        call(triton)
    assert "not supported" in str(raised.value), str(raised.value)
    assert "systemsharedmemory" not in triton.get_server_metadata()["extensions"]
    assert triton.is_model_ready("mlp")

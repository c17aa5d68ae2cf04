"""Open Inference Protocol conformance over gRPC (`inference.GRPCInferenceService`).

Every example model is called through Triton's own gRPC client (which sends
every tensor in `raw_input_contents`) and with hand-built messages carrying
every input in its typed `contents` field, at batch sizes 1 and 3; every
output is compared with ONNX Runtime run in-process on the same inputs, with
the tolerances of the HTTP conformance test (FP16 and integers exact). Then
health and metadata, request ids, custom parameters, output subsets,
bidirectional streaming, and the shared-memory calls this server does not
implement (UNIMPLEMENTED, and the server keeps serving).
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

import ferro

MODELS = ferro.MODELS
# FP16 has no typed field: a model with an FP16 input can only be sent raw
TYPED_MODELS = [m for m in MODELS if all(s.datatype in ferro.TYPED_FIELDS for s in ferro.model_ref(m).inputs)]


def test_every_example_bundle_is_covered():
    on_disk = sorted(p.parent.parent.name for p in ferro.EXAMPLES.glob("*/1/bundle.toml"))
    assert sorted(MODELS + ferro.PYTHON_MODELS) == on_disk, (
        "ferro.MODELS (ONNX) and ferro.PYTHON_MODELS must list every bundle in examples/models"
    )
    assert "dtypes" not in TYPED_MODELS and len(TYPED_MODELS) == len(MODELS) - 1, TYPED_MODELS


# ---------------------------------------------------------------- inference: raw (tritonclient) and typed


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("model", MODELS)
def test_infer_raw_matches_onnxruntime(grpc_triton, model, rows):
    seed = 5000 + 1000 * MODELS.index(model) + rows
    feeds = ferro.random_inputs(np.random.default_rng(seed), model, rows)
    result = grpc_triton.infer(model, ferro.grpc_inputs(model, feeds))
    response = result.get_response()
    # tritonclient sent raw contents, and the answer is raw too
    assert all(not o.HasField("contents") for o in response.outputs), response.outputs
    ferro.check_grpc_outputs(model, response, feeds)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("model", TYPED_MODELS)
def test_infer_typed_contents_matches_onnxruntime(grpc_url, model, rows):
    seed = 6000 + 1000 * MODELS.index(model) + rows
    feeds = ferro.random_inputs(np.random.default_rng(seed), model, rows)
    request = ferro.infer_request(model, feeds, typed=True)
    assert not request.raw_input_contents
    with ferro.GrpcStub(grpc_url) as stub:
        response = stub.ModelInfer(request, timeout=60)
    ferro.check_grpc_outputs(model, response, feeds)


@pytest.mark.parametrize("rows", [1, 3])
def test_every_typed_field_round_trips(typed_dtypes, rows):
    """Every datatype that has a typed field (all but FP16), in its field,
    through an Identity each: bool_contents, int_contents (INT8/16/32),
    int64_contents, uint_contents (UINT8/16/32), uint64_contents,
    fp32_contents, fp64_contents, bytes_contents; the datatype's extremes
    included."""
    srv, repo = typed_dtypes
    model = ferro.TYPED_DTYPES
    feeds = ferro.random_inputs(np.random.default_rng(70 + rows), model, rows, repo)
    for name, arr in feeds.items():
        if arr.dtype.kind in "iu":  # both ends of the range, in the first row
            info = np.iinfo(arr.dtype)
            arr[0, 0], arr[0, 1] = info.min, info.max
    fields = set()
    request = ferro.infer_request(model, feeds, typed=True, repo=repo, request_id=f"typed-{rows}")
    for t in request.inputs:
        fields.update(f.name for f, _ in t.contents.ListFields())
    assert fields == set(ferro.TYPED_FIELDS.values()), fields
    with ferro.GrpcStub(srv.grpc_url) as stub:
        response = stub.ModelInfer(request, timeout=60)
    assert response.id == f"typed-{rows}"
    ferro.check_grpc_outputs(model, response, feeds, repo=repo)
    # and the same request raw gives the same answer
    with ferro.GrpcStub(srv.grpc_url) as stub:
        raw = stub.ModelInfer(ferro.infer_request(model, feeds, typed=False, repo=repo), timeout=60)
    ferro.check_grpc_outputs(model, raw, feeds, repo=repo)


def test_fp16_goes_raw(grpc_url):
    """FP16's special values (max, subnormal, -0, inf) bit-exact through raw contents."""
    feeds = ferro.random_inputs(np.random.default_rng(90), "dtypes", 3)
    feeds["in_fp16"] = np.array([[65504.0, -65504.0], [2.0**-24, -0.0], [np.inf, -np.inf]], np.float16)
    with ferro.GrpcStub(grpc_url) as stub:
        response = stub.ModelInfer(ferro.infer_request("dtypes", feeds, typed=False), timeout=60)
    ferro.check_grpc_outputs("dtypes", response, feeds)
    got = ferro.grpc_result(response).as_numpy("out_fp16")
    assert got.view(np.uint16).tolist() == feeds["in_fp16"].view(np.uint16).tolist()


@pytest.mark.parametrize("model", MODELS)
def test_pinned_version(grpc_triton, model):
    feeds = ferro.random_inputs(np.random.default_rng(77), model, 2)
    result = grpc_triton.infer(model, ferro.grpc_inputs(model, feeds), model_version="1")
    ferro.check_grpc_outputs(model, result.get_response(), feeds)


def test_async_infer_many_at_once(grpc_triton):
    """tritonclient's async_infer: concurrent unary calls on one channel,
    each answered with its own rows."""
    rng = np.random.default_rng(91)
    plan = []
    for i in range(24):
        model = ("mlp", "multi_io", "strings", "seq_sum")[i % 4]
        plan.append((model, ferro.random_inputs(rng, model, 1 + i % 3)))
    done = threading.Semaphore(0)
    answers: dict[int, tuple] = {}

    def callback(i, result, error):
        answers[i] = (result, error)
        done.release()

    for i, (model, feeds) in enumerate(plan):
        grpc_triton.async_infer(model, ferro.grpc_inputs(model, feeds),
                                lambda result, error, i=i: callback(i, result, error), request_id=f"a{i}")
    for _ in plan:
        assert done.acquire(timeout=60), f"only {len(answers)} of {len(plan)} answers"
    for i, (model, feeds) in enumerate(plan):
        result, error = answers[i]
        assert error is None, (i, error)
        assert result.get_response().id == f"a{i}"
        ferro.check_grpc_outputs(model, result.get_response(), feeds, what=f"a{i} ")


# ---------------------------------------------------------------- id, parameters, output subsets


def test_request_id_echoed(grpc_triton):
    feeds = ferro.random_inputs(np.random.default_rng(13), "mlp", 1)
    result = grpc_triton.infer("mlp", ferro.grpc_inputs("mlp", feeds), request_id="req-42/ünï")
    assert result.get_response().id == "req-42/ünï"
    ferro.check_grpc_outputs("mlp", result.get_response(), feeds)


def test_no_id_without_request_id(grpc_triton):
    feeds = ferro.random_inputs(np.random.default_rng(14), "mlp", 1)
    result = grpc_triton.infer("mlp", ferro.grpc_inputs("mlp", feeds))
    assert result.get_response().id == ""


def test_custom_parameters_echoed_with_their_types(grpc_triton):
    params = {"my_key": "my value ü", "count": -3, "big": 2**62, "flag": True, "off": False, "ratio": 0.5}
    feeds = ferro.random_inputs(np.random.default_rng(15), "multi_io", 2)
    result = grpc_triton.infer("multi_io", ferro.grpc_inputs("multi_io", feeds), parameters=params, request_id="p1")
    response = result.get_response()
    assert response.id == "p1"
    echoed = response.parameters
    want_kind = {str: "string_param", bool: "bool_param", int: "int64_param", float: "double_param"}
    for k, v in params.items():
        assert k in echoed, (k, dict(echoed))
        kind = echoed[k].WhichOneof("parameter_choice")
        assert kind == want_kind[type(v)], (k, kind, echoed[k])
        assert getattr(echoed[k], kind) == v, (k, echoed[k])
    ferro.check_grpc_outputs("multi_io", response, feeds)


@pytest.mark.parametrize(("model", "wanted"), [
    ("multi_io", ["index_plus_one"]), ("multi_io", ["y"]), ("multi_io", ["index_plus_one", "y"]),
    ("strings", ["echo"]), ("dtypes", ["out_fp16", "out_bytes", "out_bool"]),
])
def test_requested_output_subset(grpc_triton, model, wanted):
    feeds = ferro.random_inputs(np.random.default_rng(11), model, 3)
    result = grpc_triton.infer(model, ferro.grpc_inputs(model, feeds), outputs=ferro.grpc_outputs(wanted))
    # only those, in the order asked
    ferro.check_grpc_outputs(model, result.get_response(), feeds, wanted)
    for o in ferro.model_ref(model).outputs:
        if o.name not in wanted:
            assert result.as_numpy(o.name) is None


def test_requested_output_subset_typed_request(grpc_url):
    feeds = ferro.random_inputs(np.random.default_rng(12), "multi_io", 2)
    with ferro.GrpcStub(grpc_url) as stub:
        response = stub.ModelInfer(ferro.infer_request("multi_io", feeds, typed=True, outputs=["y"]), timeout=60)
    ferro.check_grpc_outputs("multi_io", response, feeds, ["y"])


# ---------------------------------------------------------------- health and metadata


def test_server_live_ready_and_metadata(grpc_triton, addr):
    assert grpc_triton.is_server_live() is True
    assert grpc_triton.is_server_ready() is True
    meta = grpc_triton.get_server_metadata()
    assert meta.name == "ferroserve"
    assert meta.version
    extensions = list(meta.extensions)
    # the same list as HTTP's /v2 ...
    assert sorted(extensions) == sorted(ferro.request(addr, "GET", "/v2").json()["extensions"])
    # ... which does not claim what the server answers UNIMPLEMENTED to
    assert not {"system_shared_memory", "cuda_shared_memory"} & set(extensions), extensions
    as_json = grpc_triton.get_server_metadata(as_json=True)
    assert as_json["name"] == "ferroserve"


@pytest.mark.parametrize("model", MODELS)
def test_model_ready(grpc_triton, model):
    assert grpc_triton.is_model_ready(model) is True
    assert grpc_triton.is_model_ready(model, "1") is True


@pytest.mark.parametrize(("model", "version"), [("no_such_model", ""), ("mlp", "7")], ids=["unknown_model", "unknown_version"])
def test_model_ready_of_unknown_model_or_version_is_false(grpc_triton, grpc_url, model, version):
    """Triton answers ModelReady for a model or version it does not serve
    with OK and ready=false (InferenceServer::ModelIsReady returns Success), so
    tritonclient's `is_model_ready` returns False; a Triton client written as
    `if not client.is_model_ready(...)` must work unchanged."""
    try:
        ready = grpc_triton.is_model_ready(model, version)
    except InferenceServerException as e:
        pytest.fail(f"ModelReady({model!r}, {version!r}) raised {ferro.grpc_code_name(e)}: {e.message()} "
                    "instead of answering ready=false")
    assert ready is False
    ferro.check_good_grpc_request(grpc_url)


@pytest.mark.parametrize("version", ["", "1"], ids=["latest", "v1"])
@pytest.mark.parametrize("model", MODELS)
def test_model_metadata(grpc_triton, model, version):
    meta = grpc_triton.get_model_metadata(model, version)
    assert meta.name == model
    assert list(meta.versions) == ["1"]
    assert meta.platform
    manifest = ferro.bundle_manifest(model)
    ref = ferro.model_ref(model)
    for key, declared, sigs in (("inputs", manifest["inputs"], ref.inputs), ("outputs", manifest["outputs"], ref.outputs)):
        got = [(t.name, t.datatype, list(t.shape)) for t in getattr(meta, key)]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in declared], (key, got)
        assert sorted(got) == sorted((s.name, s.datatype, s.shape) for s in sigs), (key, got)


@pytest.mark.parametrize(("model", "version", "needle"), [("no_such_model", "", "no_such_model"), ("mlp", "7", "7")])
def test_model_metadata_of_unknown_is_not_found(grpc_triton, model, version, needle):
    with pytest.raises(InferenceServerException) as e:
        grpc_triton.get_model_metadata(model, version)
    assert ferro.grpc_code_name(e.value) == "NOT_FOUND", str(e.value)
    assert needle in e.value.message()


# ---------------------------------------------------------------- streaming


class _StreamTally:
    def __init__(self):
        self.cond = threading.Condition()
        self.results: list = []
        self.errors: list[InferenceServerException] = []

    def callback(self, result, error):
        with self.cond:
            if error is not None:
                self.errors.append(error)
            else:
                self.results.append(result)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.results) + len(self.errors) >= n, timeout)


def _stream_plan(rng, n, prefix):
    plan = {}
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        feeds = ferro.random_inputs(rng, model, 1 + i % 3)
        plan[f"{prefix}{i}"] = (model, feeds)
    return plan


def test_stream_answers_every_request_and_survives_bad_ones(grpc_url):
    """Mixed models on one bidirectional stream, with bad requests in the
    middle: every good request gets its own correct answer (matched by id),
    each bad one an error naming its problem, and the stream goes on serving
    afterwards, including requests sent after the errors came back."""
    rng = np.random.default_rng(2025)
    client = ferro.grpc_client(grpc_url)
    tally = _StreamTally()
    try:
        client.start_stream(callback=tally.callback)
        first = _stream_plan(rng, 24, "s")
        sent = 0
        for i, (rid, (model, feeds)) in enumerate(first.items()):
            client.async_stream_infer(model, ferro.grpc_inputs(model, feeds), request_id=rid)
            sent += 1
            if i == 8:  # wrong dtype: fails validation
                bad = {"input": np.zeros((1, 64), np.float64)}
                inputs = [grpcclient.InferInput("input", [1, 64], "FP64")]
                inputs[0].set_data_from_numpy(bad["input"])
                client.async_stream_infer("mlp", inputs, request_id="bad-dtype")
                sent += 1
            if i == 12:  # unknown model
                client.async_stream_infer("no_such_model", ferro.grpc_inputs(model, feeds), request_id="bad-model")
                sent += 1
            if i == 16:  # fails inside ONNX Runtime
                feeds_bad = ferro.random_inputs(rng, "multi_io", 2)
                feeds_bad["index"][1, 0] = 100
                client.async_stream_infer("multi_io", ferro.grpc_inputs("multi_io", feeds_bad), request_id="bad-index")
                sent += 1
        assert tally.wait_for(sent), f"{len(tally.results)} answers + {len(tally.errors)} errors of {sent}"
        assert len(tally.errors) == 3, [e.message() for e in tally.errors]
        messages = sorted(e.message() for e in tally.errors)
        assert any('"input"' in m and "FP32" in m and "FP64" in m for m in messages), messages
        assert any("no_such_model" in m for m in messages), messages
        assert any("100" in m and "bounds" in m for m in messages), messages

        # the same stream, after the errors came back
        second = _stream_plan(rng, 12, "t")
        for rid, (model, feeds) in second.items():
            client.async_stream_infer(model, ferro.grpc_inputs(model, feeds), request_id=rid)
        assert tally.wait_for(sent + len(second)), f"{len(tally.results)} answers after the bad requests"
    finally:
        client.stop_stream()
        client.close()
    assert len(tally.errors) == 3
    plan = {**first, **second}
    got = {}
    for result in tally.results:
        response = result.get_response()
        assert response.id in plan and response.id not in got, response.id
        got[response.id] = response
    assert sorted(got) == sorted(plan)
    for rid, (model, feeds) in plan.items():
        ferro.check_grpc_outputs(model, got[rid], feeds, what=f"stream request {rid}: ")


def test_stream_typed_contents_and_params(grpc_url):
    """Hand-built (typed) messages on a raw stub stream, with parameters."""
    rng = np.random.default_rng(33)
    plan = []
    for i, model in enumerate(TYPED_MODELS * 2):
        feeds = ferro.random_inputs(rng, model, 1 + i % 3)
        req = ferro.infer_request(model, feeds, typed=True, request_id=f"ty{i}")
        req.parameters["n"].int64_param = i
        plan.append((model, feeds, req))
    with ferro.GrpcStub(grpc_url) as stub:
        responses = list(stub.ModelStreamInfer(iter([r for _, _, r in plan]), timeout=60))
    assert len(responses) == len(plan)
    by_id = {r.infer_response.id: r for r in responses}
    for i, (model, feeds, _) in enumerate(plan):
        r = by_id[f"ty{i}"]
        assert r.error_message == "", r.error_message
        assert r.infer_response.parameters["n"].int64_param == i
        ferro.check_grpc_outputs(model, r.infer_response, feeds)


def test_stream_error_answer_carries_the_request_id(grpc_url):
    """A failed request on a stream is answered with its error message AND
    an infer_response holding just its id, as Triton does ("repopulate the id
    so that client knows which request failed", ModelStreamInferHandler), so
    a client can tell which of its requests failed without relying on order."""
    rng = np.random.default_rng(34)
    good = {f"g{i}": ferro.random_inputs(rng, "mlp", 1) for i in range(3)}
    bad_index = ferro.random_inputs(rng, "multi_io", 1)
    bad_index["index"][0, 0] = 100
    requests = [
        ferro.infer_request("mlp", good["g0"], typed=True, request_id="g0"),
        ferro.infer_request("mlp", {"input": np.zeros((1, 63), np.float32)}, typed=True, request_id="bad-shape"),
        ferro.infer_request("multi_io", bad_index, typed=False, request_id="bad-index"),
        ferro.infer_request("mlp", good["g1"], typed=False, request_id="g1"),
        ferro.infer_request("nope", {"input": np.zeros((1, 64), np.float32)}, typed=False, request_id="bad-model",
                            datatypes={"input": "FP32"}),
        ferro.infer_request("mlp", good["g2"], typed=True, request_id="g2"),
    ]
    with ferro.GrpcStub(grpc_url) as stub:
        answers = list(stub.ModelStreamInfer(iter(requests), timeout=60))
    assert len(answers) == len(requests)
    errors = [a for a in answers if a.error_message]
    assert len(errors) == 3, [a.error_message for a in answers]
    for a in answers:
        if not a.error_message:
            ferro.check_grpc_outputs("mlp", a.infer_response, good[a.infer_response.id])
    failed_ids = sorted(a.infer_response.id for a in errors)
    assert failed_ids == ["bad-index", "bad-model", "bad-shape"], (
        f"error answers carry ids {failed_ids}; messages {[a.error_message for a in errors]}")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(grpc_triton, algorithm):
    """tritonclient's compression_algorithm= (Triton accepts gzip and deflate)."""
    feeds = ferro.random_inputs(np.random.default_rng(35), "mlp", 2)
    result = grpc_triton.infer("mlp", ferro.grpc_inputs("mlp", feeds), compression_algorithm=algorithm)
    ferro.check_grpc_outputs("mlp", result.get_response(), feeds)


# ---------------------------------------------------------------- shared memory: not supported


def _shm_calls(client):
    return {
        "get_system_shared_memory_status": lambda: client.get_system_shared_memory_status(),
        "register_system_shared_memory": lambda: client.register_system_shared_memory("r0", "/ferro_shm", 64),
        "unregister_system_shared_memory": lambda: client.unregister_system_shared_memory("r0"),
        "get_cuda_shared_memory_status": lambda: client.get_cuda_shared_memory_status(),
        "register_cuda_shared_memory": lambda: client.register_cuda_shared_memory("c0", b"\0" * 64, 0, 64),
        "unregister_cuda_shared_memory": lambda: client.unregister_cuda_shared_memory("c0"),
    }


@pytest.mark.parametrize("call", list(_shm_calls(None)))
def test_shared_memory_calls_are_unimplemented(grpc_triton, grpc_url, addr, call):
    with pytest.raises(InferenceServerException) as e:
        _shm_calls(grpc_triton)[call]()
    assert ferro.grpc_code_name(e.value) == "UNIMPLEMENTED", str(e.value)
    # the server keeps serving, on the same client and on both protocols
    assert grpc_triton.is_server_ready()
    ferro.check_good_grpc_request(grpc_url, "mlp")
    ferro.check_good_request(addr, "mlp")


def test_unknown_service_and_method_are_unimplemented(grpc_url):
    with grpc.insecure_channel(grpc_url) as channel:
        for method in ("/inference.GRPCInferenceService/NoSuchMethod", "/inference.NoSuchService/ModelInfer"):
            call = channel.unary_unary(method)
            with pytest.raises(grpc.RpcError) as e:
                call(b"", timeout=30)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, (method, e.value)
    ferro.check_good_grpc_request(grpc_url)


def test_http_and_grpc_agree(grpc_triton, addr):
    """The same request over both protocols gives the same answer (floats
    within the suite's tolerance: a reduction's summation order may depend on
    the input buffer's alignment, which differs between the two decoders)."""
    for model in MODELS:
        feeds = ferro.random_inputs(np.random.default_rng(55), model, 2)
        body, headers = ferro.encode_infer(feeds, model, True, True)
        http_result = ferro.decode_infer(ferro.request(addr, "POST", ferro.infer_path(model), body, headers))
        grpc_result = grpc_triton.infer(model, ferro.grpc_inputs(model, feeds))
        for o in ferro.model_ref(model).outputs:
            h, g = http_result.as_numpy(o.name), grpc_result.as_numpy(o.name)
            ferro.assert_tensor(o.datatype, g, h, f"{model}.{o.name} gRPC vs HTTP")


def test_typed_request_message_shape():
    """The helper builds what the protocol says: typed fields, no raw."""
    feeds = ferro.random_inputs(np.random.default_rng(1), "multi_io", 2)
    req = ferro.infer_request("multi_io", feeds, typed=True)
    assert isinstance(req, service_pb2.ModelInferRequest)
    assert [t.name for t in req.inputs] == ["x", "index"]
    assert list(req.inputs[0].contents.fp32_contents) == feeds["x"].reshape(-1).tolist()
    assert list(req.inputs[1].contents.int64_contents) == feeds["index"].reshape(-1).tolist()
    assert not req.raw_input_contents

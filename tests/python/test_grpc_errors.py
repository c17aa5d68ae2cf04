"""Every error path of the HTTP error suite (test_errors.py), over gRPC:
the status code that fits (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED, INTERNAL), a message naming the input, the expected and
the received value, and that the server then answers the next good request
correctly. Requests are built by hand (ferro.infer_request, or field by field
here) and sent through the generated stub, so malformed messages that
tritonclient would refuse to build reach the server."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

import ferro

F32_ROW = np.arange(64, dtype=np.float32).tobytes()  # one mlp row, 256 bytes


def _req(model="mlp", inputs=(), raw=None, version="", outputs=(), params=None):
    """A ModelInferRequest from plain parts: inputs are
    (name, datatype, shape, {typed field: values} or None)."""
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, contents in inputs:
        t = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if contents is not None:
            t.contents.SetInParent()  # present even when every list is empty
            for field_name, values in contents.items():
                getattr(t.contents, field_name).extend(values)
    for r in raw or []:
        req.raw_input_contents.append(r)
    for o in outputs:
        req.outputs.add(name=o)
    for k, v in (params or {}).items():
        p = req.parameters[k]
        if isinstance(v, bool):
            p.bool_param = v
        elif isinstance(v, int):
            p.int64_param = v
        elif isinstance(v, float):
            p.double_param = v
        else:
            p.string_param = v
    return req


def _mlp(rows=1, name="input", datatype="FP32", shape=None, n=None, field_name="fp32_contents"):
    n = rows * 64 if n is None else n
    values = [b"x"] * n if field_name == "bytes_contents" else [0.25] * n
    return (name, datatype, shape or [rows, 64], {field_name: values})


def _multi_io(rows=1):
    return [("x", "FP32", [rows, 4], {"fp32_contents": [0.5] * (4 * rows)}),
            ("index", "INT64", [rows, 1], {"int64_contents": [1] * rows})]


def _dtypes_all_typed_with_fp16_typed():
    """The dtypes model with every input typed, FP16 (which has no typed
    field) in fp32_contents."""
    feeds = ferro.random_inputs(np.random.default_rng(4), "dtypes", 1)
    inputs = []
    for s in ferro.model_ref("dtypes").inputs:
        field_name = ferro.TYPED_FIELDS.get(s.datatype, "fp32_contents")
        flat = feeds[s.name].reshape(-1)
        if s.datatype == "BYTES":
            values = [ferro._as_bytes(x) for x in flat]
        elif s.datatype in ("FP16", "FP32", "FP64"):
            values = [float(x) for x in flat]
        elif s.datatype == "BOOL":
            values = [bool(x) for x in flat]
        else:
            values = [int(x) for x in flat]
        inputs.append((s.name, s.datatype, [1, 2], {field_name: values}))
    return _req("dtypes", inputs)


def _strings_raw(payload: bytes, shape):
    return _req("strings", [("text", "BYTES", shape, None)], raw=[payload])


INVALID = "INVALID_ARGUMENT"

# (id, request, status code, substrings the message must hold)
CASES = [
    ("no_inputs", _req("mlp"), INVALID, ['"input"', "missing"]),
    ("wrong_input_name", _req("mlp", [_mlp(name="inputs")]), INVALID, ['"inputs"', '"input"']),
    ("extra_input", _req("mlp", [_mlp(), _mlp(name="bonus")]), INVALID, ["bonus"]),
    ("input_given_twice", _req("mlp", [_mlp(), _mlp()]), INVALID, ['"input"']),
    ("missing_input", _req("multi_io", _multi_io()[:1]), INVALID, ['"index"', "INT64"]),
    ("wrong_dtype_typed", _req("mlp", [_mlp(datatype="FP64", field_name="fp64_contents")]), INVALID,
     ['"input"', "FP32", "FP64"]),
    ("wrong_dtype_raw", _req("mlp", [("input", "INT32", [1, 64], None)], raw=[F32_ROW]), INVALID,
     ['"input"', "FP32", "INT32"]),
    ("unknown_datatype", _req("mlp", [("input", "FLOAT", [1, 64], None)], raw=[F32_ROW]), INVALID,
     ['"input"', "FLOAT"]),
    ("wrong_shape", _req("mlp", [_mlp(shape=[1, 63], n=63)]), INVALID, ['"input"', "64", "63"]),
    ("wrong_rank", _req("mlp", [_mlp(shape=[64], n=64)]), INVALID, ['"input"', "[-1, 64]", "[64]"]),
    ("zero_rows_raw", _req("mlp", [("input", "FP32", [0, 64], None)], raw=[b""]), INVALID, ['"input"', "0"]),
    ("zero_rows_typed", _req("mlp", [("input", "FP32", [0, 64], {})]), INVALID, ['"input"', "0"]),
    ("negative_dim", _req("mlp", [_mlp(shape=[-1, 64], n=64)]), INVALID, ['"input"', "-1"]),
    ("data_count_mismatch_typed", _req("mlp", [_mlp(rows=2, n=127)]), INVALID, ['"input"', "128", "127"]),
    ("data_count_too_many_typed", _req("mlp", [_mlp(rows=1, n=65)]), INVALID, ['"input"', "64", "65"]),
    ("contents_in_wrong_field", _req("mlp", [_mlp(field_name="fp64_contents")]), INVALID,
     ['"input"', "fp64_contents", "fp32_contents"]),
    ("bytes_for_numbers", _req("mlp", [_mlp(field_name="bytes_contents")]), INVALID,
     ['"input"', "bytes_contents", "FP32"]),
    ("rows_over_max_batch_size", _req("mlp", [("input", "FP32", [33, 64], None)], raw=[F32_ROW * 33]), INVALID,
     ['"input"', "32", "33"]),
    ("batch_dims_differ", _req("multi_io", [_multi_io(2)[0], _multi_io(3)[1]]), INVALID, ["2", "3"]),
    ("raw_entry_too_short", _req("mlp", [("input", "FP32", [1, 64], None)], raw=[F32_ROW[:252]]), INVALID,
     ['"input"', "256", "252"]),
    ("raw_entry_too_long", _req("mlp", [("input", "FP32", [1, 64], None)], raw=[F32_ROW + b"\0" * 8]), INVALID,
     ['"input"', "256", "264"]),
    ("raw_count_fewer_than_inputs",
     _req("multi_io", [("x", "FP32", [1, 4], None), ("index", "INT64", [1, 1], None)], raw=[b"\0" * 16]),
     INVALID, ["raw_input_contents", "1", "2"]),
    ("raw_count_more_than_inputs", _req("mlp", [("input", "FP32", [1, 64], None)], raw=[F32_ROW, F32_ROW]),
     INVALID, ["raw_input_contents", "2", "1"]),
    ("typed_and_raw", _req("mlp", [_mlp()], raw=[F32_ROW]), INVALID, ['"input"', "raw_input_contents"]),
    ("no_data_at_all", _req("mlp", [("input", "FP32", [1, 64], None)]), INVALID, ['"input"', "contents"]),
    ("fp16_in_typed_contents", _dtypes_all_typed_with_fp16_typed(), INVALID,
     ['"in_fp16"', "FP16", "raw_input_contents"]),
    ("bytes_element_truncated", _strings_raw((10).to_bytes(4, "little") + b"cat", [1, 1]), INVALID,
     ['"text"', "10", "3"]),
    ("bytes_element_count", _strings_raw((3).to_bytes(4, "little") + b"cat", [2, 1]), INVALID,
     ['"text"', "2", "1"]),
    ("unknown_output", _req("multi_io", _multi_io(), outputs=["z"]), INVALID, ['"z"', "y", "index_plus_one"]),
    ("bad_timeout_parameter_string", _req("mlp", [_mlp()], params={"timeout": "soon"}), INVALID,
     ["timeout", "soon"]),
    ("bad_timeout_parameter_negative", _req("mlp", [_mlp()], params={"timeout": -5}), INVALID,
     ["timeout", "-5"]),
    ("bad_timeout_parameter_double", _req("mlp", [_mlp()], params={"timeout": 1.5}), INVALID, ["timeout"]),
    ("unknown_model", _req("nope", [_mlp()]), "NOT_FOUND", ["nope"]),
    ("unknown_version", _req("mlp", [_mlp()], version="7"), "NOT_FOUND", ['"7"']),
]


def _call(url, request, timeout=60):
    with ferro.GrpcStub(url) as stub:
        return stub.ModelInfer(request, timeout=timeout)


def _expect_error(url, request, code: str, needles=()) -> str:
    with pytest.raises(grpc.RpcError) as e:
        _call(url, request)
    err = e.value
    assert err.code().name == code, f"expected {code}, got {err.code().name}: {err.details()!r}"
    msg = err.details() or ""
    assert msg, "an error status without a message"
    for n in needles:
        assert n.lower() in msg.lower(), f"error message lacks {n!r}: {msg!r}"
    return msg


@pytest.mark.parametrize(("request_msg", "code", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(grpc_url, request_msg, code, needles):
    _expect_error(grpc_url, request_msg, code, needles)
    model = request_msg.model_name
    ferro.check_good_grpc_request(grpc_url, model if model in ("multi_io", "strings", "dtypes") else "mlp")
    ferro.check_good_grpc_request(grpc_url, "mlp", typed=True)


@pytest.mark.parametrize(("model", "version", "dtype", "shape", "code", "needles"), [
    ("nope", "", "FP32", [1, 64], "NOT_FOUND", ["nope"]),
    ("mlp", "7", "FP32", [1, 64], "NOT_FOUND", ['"7"']),
    ("mlp", "", "FP64", [1, 64], INVALID, ['"input"', "FP32", "FP64"]),
    ("mlp", "", "FP32", [1, 63], INVALID, ['"input"', "64", "63"]),
    ("mlp", "", "FP32", [33, 64], INVALID, ['"input"', "32", "33"]),
], ids=["unknown_model", "unknown_version", "wrong_dtype", "wrong_shape", "rows_over_max_batch_size"])
def test_bad_request_through_tritonclient(grpc_triton, grpc_url, model, version, dtype, shape, code, needles):
    """Through tritonclient the failures surface as an
    InferenceServerException carrying the status code and the message."""
    import tritonclient.grpc as grpcclient

    i = grpcclient.InferInput("input", shape, dtype)
    i.set_data_from_numpy(np.zeros(shape, ferro.NP_TYPES[dtype]))
    with pytest.raises(InferenceServerException) as e:
        grpc_triton.infer(model, [i], model_version=version)
    assert ferro.grpc_code_name(e.value) == code, str(e.value)
    for n in needles:
        assert n.lower() in e.value.message().lower(), e.value.message()
    ferro.check_good_grpc_request(grpc_url)


@pytest.mark.parametrize(("datatype", "value"), [("UINT8", 300), ("UINT8", 256), ("UINT16", 70000),
                                                 ("INT8", 200), ("INT8", -129), ("INT16", -40000)])
def test_out_of_range_typed_int(typed_dtypes, datatype, value):
    """int_contents / uint_contents are 32-bit on the wire: a narrower
    datatype's element out of its range is refused, naming the input, the
    element, the value and the datatype (never silently truncated)."""
    srv, repo = typed_dtypes
    model = ferro.TYPED_DTYPES
    feeds = ferro.random_inputs(np.random.default_rng(3), model, 2, repo)
    name = f"in_{datatype.lower()}"
    request = ferro.infer_request(model, feeds, typed=True, repo=repo)
    target = next(t for t in request.inputs if t.name == name)
    values = getattr(target.contents, ferro.TYPED_FIELDS[datatype])
    values[3] = value
    msg = _expect_error(srv.grpc_url, request, INVALID, [f'"{name}"', str(value), datatype])
    assert "element 3" in msg, msg
    # the good request, typed, on the same server
    good = ferro.infer_request(model, feeds, typed=True, repo=repo)
    ferro.check_grpc_outputs(model, _call(srv.grpc_url, good), feeds, repo=repo)


def test_malformed_protobuf(grpc_url):
    """Bytes that are not a ModelInferRequest: an error status (tonic answers
    INTERNAL for a message it cannot decode, as grpc-go does), not a crash."""
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for garbage in (b"\xff\xff\xff\xff\xff", b"\x0a\x80\x80\x80\x80\x10abc", b"\x12\x05ab"):
            with pytest.raises(grpc.RpcError) as e:
                call(garbage, timeout=30)
            assert e.value.code().name in ("INTERNAL", INVALID), (garbage, e.value.code(), e.value.details())
            assert e.value.details()
    ferro.check_good_grpc_request(grpc_url)


# ---------------------------------------------------------------- message size limit


def test_message_over_limit_is_resource_exhausted(start_server, make_repo):
    srv = start_server(make_repo({"mlp": None}), "--max-grpc-message-bytes", "4096")
    big = ferro.infer_request("mlp", {"input": np.zeros((32, 64), np.float32)}, typed=False)
    assert big.ByteSize() > 4096
    msg = _expect_error(srv.grpc_url, big, "RESOURCE_EXHAUSTED")
    assert "4096" in msg, msg
    # under the limit it is served, and HTTP was never affected
    ferro.check_good_grpc_request(srv.grpc_url, "mlp", rows=1)
    ferro.check_good_request(srv.addr, "mlp", rows=32)


def test_stream_message_over_limit_ends_the_stream_with_resource_exhausted(start_server, make_repo):
    """A too-large message on a stream: the requests before it are answered,
    then the stream ends with RESOURCE_EXHAUSTED (counted), and the server
    serves the next stream."""
    srv = start_server(make_repo({"mlp": None}), "--max-grpc-message-bytes", "4096")
    rng = np.random.default_rng(41)
    small = [ferro.random_inputs(rng, "mlp", 1) for _ in range(3)]
    requests = [ferro.infer_request("mlp", f, typed=False, request_id=f"s{i}") for i, f in enumerate(small)]
    requests.append(ferro.infer_request("mlp", {"input": np.zeros((32, 64), np.float32)}, typed=False))
    before = ferro.scrape(srv.addr).value("ferroserve_rejected_requests_total", reason="grpc_message_too_large")
    answers = []
    with ferro.GrpcStub(srv.grpc_url) as stub:
        with pytest.raises(grpc.RpcError) as raised:
            for answer in stub.ModelStreamInfer(iter(requests), timeout=60):
                answers.append(answer)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value.details()
    assert [a.infer_response.id for a in answers] == ["s0", "s1", "s2"]
    for a, feeds in zip(answers, small):
        assert a.error_message == ""
        ferro.check_grpc_outputs("mlp", a.infer_response, feeds)
    after = ferro.scrape(srv.addr).value("ferroserve_rejected_requests_total", reason="grpc_message_too_large")
    assert after - before == 1
    ferro.check_good_grpc_request(srv.grpc_url, "mlp", rows=1)


# ---------------------------------------------------------------- full queue


def test_full_queue_is_resource_exhausted(start_server, make_repo):
    srv = start_server(make_repo({"conv": {
        "max_batch_size": 1, "preferred_batch_sizes": [], "max_queue_size": 1, "count": 1,
    }}))
    rng = np.random.default_rng(3)
    n = 24
    work = []
    for i in range(n):
        feeds = ferro.random_inputs(rng, "conv", 1)
        work.append((ferro.infer_request("conv", feeds, typed=False, request_id=f"q{i}"), feeds))

    answers = []  # (i, response or None, RpcError or None)
    rounds = 0
    with ferro.GrpcStub(srv.grpc_url) as stub:
        stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=30)  # connected before the burst
        while rounds < 10 and not any(err is not None for _, _, err in answers):
            rounds += 1
            futures = [stub.ModelInfer.future(req, timeout=120) for req, _ in work]
            for i, f in enumerate(futures):
                try:
                    answers.append((i, f.result(), None))
                except grpc.RpcError as e:
                    answers.append((i, None, e))
    codes = [err.code().name if err else "OK" for _, _, err in answers]
    print(f"{rounds} rounds: {codes.count('OK')} x OK, {codes.count('RESOURCE_EXHAUSTED')} x RESOURCE_EXHAUSTED")
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, [(c, e.details()) for (_, _, e), c in zip(answers, codes) if e]
    assert "RESOURCE_EXHAUSTED" in codes, f"no RESOURCE_EXHAUSTED in {rounds} bursts of {n} against a queue of 1"
    for i, response, err in answers:
        if err is not None:
            assert "queue" in err.details().lower(), err.details()
        else:
            assert response.id == f"q{i}"
            ferro.check_grpc_outputs("conv", response, work[i][1], what=f"q{i} ")
    m = ferro.scrape(srv.addr)
    assert m.value("ferroserve_requests_total", model="conv", version="1", outcome="success") == codes.count("OK")
    ferro.check_good_grpc_request(srv.grpc_url, "conv", rows=1)
    ferro.check_good_request(srv.addr, "conv", rows=1)


# ---------------------------------------------------------------- timeouts


class _Background:
    """Continuous conv load over gRPC (multi-row requests from a few
    threads), so that a request with a tiny timeout waits behind real work."""

    def __init__(self, url: str, threads: int = 4, rows: int = 8):
        rng = np.random.default_rng(8)
        self.load = []
        for t in range(threads):
            feeds = ferro.random_inputs(rng, "conv", rows)
            self.load.append((ferro.infer_request("conv", feeds, typed=False, request_id=f"bg{t}"), feeds))
        self.url = url
        self.stop = threading.Event()
        self.results: list[tuple[int, object]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]

    def _run(self, t):
        try:
            with ferro.GrpcStub(self.url) as stub:
                while not self.stop.is_set():
                    self.results.append((t, stub.ModelInfer(self.load[t][0], timeout=60)))
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(60)

    def check(self):
        assert not self.errors, self.errors
        assert self.results, "the background load got no answers"
        for t, response in self.results:
            ferro.check_grpc_outputs("conv", response, self.load[t][1], what="background ")


def test_timeout_parameter_is_deadline_exceeded(grpc_triton, grpc_url):
    """`timeout` request parameter in microseconds (what tritonclient's
    `timeout=` sends as int64_param)."""
    rng = np.random.default_rng(9)
    outcomes = []
    with _Background(grpc_url) as bg:
        for i in range(10):
            feeds = ferro.random_inputs(rng, "conv", 2)
            try:
                grpc_triton.infer("conv", ferro.grpc_inputs("conv", feeds), timeout=1)
                outcomes.append(("OK", ""))
            except InferenceServerException as e:
                outcomes.append((ferro.grpc_code_name(e), e.message()))
    bg.check()
    for code, msg in outcomes:
        # a 1 µs budget cannot be met; the queue (1024) does not fill
        assert code == "DEADLINE_EXCEEDED", (code, msg)
        assert "timed out" in msg, msg
    ferro.check_good_grpc_request(grpc_url, "conv", rows=2)


def test_client_deadline_is_deadline_exceeded(grpc_triton, grpc_url, server):
    """A client deadline (grpc-timeout, tritonclient's `client_timeout`). The
    client may give up first and raise DEADLINE_EXCEEDED itself; either way
    the call ends DEADLINE_EXCEEDED (or succeeds correctly when it was quick
    enough), and the server keeps serving."""
    rng = np.random.default_rng(10)
    outcomes = []
    with _Background(grpc_url, rows=16) as bg:
        # conv is fast (well under 1 ms a row here): a short deadline may be
        # met; go on until several were not
        while len(outcomes) < 100 and sum(c != "OK" for c, _ in outcomes) < 3:
            feeds = ferro.random_inputs(rng, "conv", 2)
            client_timeout = (0.0005, 0.001, 0.002)[len(outcomes) % 3]
            try:
                result = grpc_triton.infer("conv", ferro.grpc_inputs("conv", feeds), client_timeout=client_timeout)
                ferro.check_grpc_outputs("conv", result.get_response(), feeds)
                outcomes.append(("OK", ""))
            except InferenceServerException as e:
                outcomes.append((ferro.grpc_code_name(e), e.message()))
    bg.check()
    by_server = sum(1 for c, m in outcomes if c == "DEADLINE_EXCEEDED" and "timed out" in m)
    print(f"client deadlines: {[c for c, _ in outcomes]}; {by_server} reported by the server")
    for code, msg in outcomes:
        assert code in ("OK", "DEADLINE_EXCEEDED"), (code, msg)
    assert any(code == "DEADLINE_EXCEEDED" for code, _ in outcomes), outcomes
    # abandoned calls leave nothing behind: the server answers at once and correctly
    assert server.running()
    ferro.check_good_grpc_request(grpc_url, "conv", rows=2)
    ferro.check_good_request(server.addr, "conv", rows=2)


def test_stream_timeout_parameter(grpc_url):
    """On a stream, a request that times out gets an error answer; the
    stream goes on."""
    rng = np.random.default_rng(12)
    feeds_ok = ferro.random_inputs(rng, "mlp", 1)
    with _Background(grpc_url) as bg:
        feeds = ferro.random_inputs(rng, "conv", 2)
        slow = ferro.infer_request("conv", feeds, typed=False, request_id="slow")
        slow.parameters["timeout"].int64_param = 1
        ok = ferro.infer_request("mlp", feeds_ok, typed=False, request_id="ok")
        with ferro.GrpcStub(grpc_url) as stub:
            answers = list(stub.ModelStreamInfer(iter([slow, ok]), timeout=60))
    bg.check()
    assert len(answers) == 2
    errors = [a.error_message for a in answers if a.error_message]
    assert len(errors) == 1 and "timed out" in errors[0], [a.error_message for a in answers]
    good = [a.infer_response for a in answers if not a.error_message]
    assert good[0].id == "ok"
    ferro.check_grpc_outputs("mlp", good[0], feeds_ok)


# ---------------------------------------------------------------- backend error

BAD_INDEX = 100


def _assert_ort_index_error(msg: str):
    # ONNX Runtime's own words: "indices element out of data bounds, idx=100 must be within ..."
    assert str(BAD_INDEX) in msg and "out of" in msg and "bounds" in msg, msg


def _multi_io_request(rng, bad: bool, i: int):
    feeds = ferro.random_inputs(rng, "multi_io", int(rng.integers(1, 4)))
    if bad:
        feeds["index"][0, 0] = BAD_INDEX
    req = ferro.infer_request("multi_io", feeds, typed=bool(i % 2), request_id=f"m{i}")
    return req, feeds, bad


def test_backend_error_is_internal_with_onnxruntime_message(grpc_url, addr):
    before = ferro.scrape(addr)
    req, _, _ = _multi_io_request(np.random.default_rng(1), True, 0)
    _assert_ort_index_error(_expect_error(grpc_url, req, "INTERNAL"))
    after = ferro.scrape(addr)
    lbl = dict(model="multi_io", version="1", outcome="backend_error")
    assert after.value("ferroserve_requests_total", **lbl) - before.value("ferroserve_requests_total", **lbl) == 1
    ferro.check_good_grpc_request(grpc_url, "multi_io")


def test_backend_error_fails_only_its_request(grpc_url):
    """Bad requests among concurrent good ones on one channel: each bad one
    gets INTERNAL with ONNX Runtime's message, each good one its own answer."""
    rng = np.random.default_rng(21)
    plan = [_multi_io_request(rng, bad=(i % 5 == 0), i=i) for i in range(40)]
    with ferro.GrpcStub(grpc_url) as stub:
        for _ in range(2):
            futures = [stub.ModelInfer.future(req, timeout=60) for req, _, _ in plan]
            for (req, feeds, bad), f in zip(plan, futures):
                if bad:
                    with pytest.raises(grpc.RpcError) as e:
                        f.result()
                    assert e.value.code() == grpc.StatusCode.INTERNAL, (req.id, e.value)
                    _assert_ort_index_error(e.value.details())
                else:
                    response = f.result()
                    assert response.id == req.id
                    ferro.check_grpc_outputs("multi_io", response, feeds, what=f"{req.id} ")
    for seed in range(5):
        ferro.check_good_grpc_request(grpc_url, "multi_io", rows=1 + seed % 3, seed=seed)

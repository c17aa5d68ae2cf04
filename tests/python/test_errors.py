"""Every error path over raw HTTP (http.client): the status, the protocol's
`{"error": "..."}` body whose message names the input, the expected and the
received value, and that the server then answers the next good request
correctly."""

from __future__ import annotations

import http.client
import json
import threading

import numpy as np
import pytest

import ferro


def _json(doc) -> tuple[bytes, dict]:
    return json.dumps(doc).encode(), {"Content-Type": "application/json"}


def _binary(doc, payload: bytes, header_len: int | None = None) -> tuple[bytes, dict]:
    header = json.dumps(doc).encode()
    n = len(header) if header_len is None else header_len
    return header + payload, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(n)}


def _mlp_input(rows=1, **over):
    t = {"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": [0.25] * (rows * 64)}
    t.update(over)
    return t


def _multi_io_inputs(rows=1):
    return [
        {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [0.5] * (4 * rows)},
        {"name": "index", "shape": [rows, 1], "datatype": "INT64", "data": [1] * rows},
    ]


F32_ROW = np.arange(64, dtype=np.float32).tobytes()  # one mlp row, 256 bytes

# (id, model, url version, (body, headers), status, substrings the message must hold)
CASES = [
    ("malformed_json", "mlp", None, (b'{"inputs": [{"name": "input", ', {"Content-Type": "application/json"}),
     400, ["json"]),
    ("body_not_an_object", "mlp", None, (b"[1, 2, 3]", {"Content-Type": "application/json"}), 400, []),
    ("no_inputs_key", "mlp", None, _json({"id": "x"}), 400, ["inputs"]),
    ("wrong_input_name", "mlp", None, _json({"inputs": [_mlp_input(name="inputs")]}), 400, ['"inputs"', '"input"']),
    ("extra_input", "mlp", None, _json({"inputs": [_mlp_input(), _mlp_input(name="bonus")]}), 400, ["bonus"]),
    ("missing_input", "multi_io", None, _json({"inputs": _multi_io_inputs()[:1]}), 400, ['"index"', "INT64"]),
    ("wrong_dtype", "mlp", None, _json({"inputs": [_mlp_input(datatype="FP64")]}), 400, ['"input"', "FP32", "FP64"]),
    ("wrong_dtype_binary", "mlp", None,
     _binary({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT32",
                          "parameters": {"binary_data_size": 256}}]}, F32_ROW),
     400, ['"input"', "FP32", "INT32"]),
    ("unknown_datatype", "mlp", None, _json({"inputs": [_mlp_input(datatype="FLOAT")]}), 400, ['"input"', "FLOAT"]),
    ("wrong_shape", "mlp", None, _json({"inputs": [_mlp_input(shape=[1, 63], data=[0.0] * 63)]}), 400,
     ['"input"', "64", "63"]),
    ("wrong_rank", "mlp", None, _json({"inputs": [_mlp_input(shape=[64], data=[0.0] * 64)]}), 400,
     ['"input"', "[-1, 64]", "[64]"]),
    ("zero_rows", "mlp", None, _json({"inputs": [_mlp_input(rows=0)]}), 400, ['"input"', "0"]),
    ("negative_dim", "mlp", None, _json({"inputs": [_mlp_input(shape=[-1, 64])]}), 400, ['"input"', "-1"]),
    ("data_count_mismatch", "mlp", None, _json({"inputs": [_mlp_input(rows=2, data=[0.0] * 127)]}), 400,
     ['"input"', "128", "127"]),
    ("data_not_numbers", "mlp", None, _json({"inputs": [_mlp_input(data=["a"] * 64)]}), 400, ['"input"']),
    ("rows_over_max_batch_size", "mlp", None, _json({"inputs": [_mlp_input(rows=33)]}), 400,
     ['"input"', "32", "33"]),
    ("batch_dims_differ", "multi_io", None,
     _json({"inputs": [_multi_io_inputs(2)[0], _multi_io_inputs(3)[1]]}), 400, ["2", "3"]),
    ("binary_size_not_matching_shape", "mlp", None,
     _binary({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": 252}}]}, F32_ROW[:252]),
     400, ['"input"', "256", "252"]),
    ("binary_size_past_body", "mlp", None,
     _binary({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": 256}}]}, F32_ROW[:200]),
     400, ['"input"', "256", "200"]),
    ("binary_trailing_bytes", "mlp", None,
     _binary({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": 256}}]}, F32_ROW + b"\0" * 8),
     400, ["8"]),
    ("binary_without_header_length", "mlp", None,
     (json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                              "parameters": {"binary_data_size": 256}}]}).encode() + F32_ROW,
      {"Content-Type": "application/octet-stream"}),
     400, []),
    ("header_length_past_body", "mlp", None,
     _binary({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": 256}}]}, F32_ROW, header_len=100_000),
     400, ["Inference-Header-Content-Length", "100000"]),
    ("header_length_not_a_number", "mlp", None,
     (json.dumps({"inputs": [_mlp_input()]}).encode(),
      {"Content-Type": "application/json", "Inference-Header-Content-Length": "lots"}),
     400, ["Inference-Header-Content-Length", "lots"]),
    ("unknown_output", "multi_io", None,
     _json({"inputs": _multi_io_inputs(), "outputs": [{"name": "z"}]}), 400, ['"z"', "y", "index_plus_one"]),
    ("bad_timeout_parameter", "mlp", None,
     _json({"inputs": [_mlp_input()], "parameters": {"timeout": "soon"}}), 400, ["timeout", "soon"]),
    ("unknown_model", "nope", None, _json({"inputs": [_mlp_input()]}), 404, ["nope"]),
    ("unknown_version", "mlp", "7", _json({"inputs": [_mlp_input()]}), 404, ['"7"']),
]


@pytest.mark.parametrize(("model", "version", "req", "status", "needles"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(addr, model, version, req, status, needles):
    body, headers = req
    resp = ferro.request(addr, "POST", ferro.infer_path(model, version), body, headers)
    assert resp.status == status, f"expected {status}, got {resp.status}: {resp.body[:500]!r}"
    msg = resp.error_message()
    for n in needles:
        assert n.lower() in msg.lower(), f"error message lacks {n!r}: {msg!r}"
    ferro.check_good_request(addr, "multi_io" if model == "multi_io" else "mlp")


@pytest.mark.parametrize(("method", "path", "status", "needle"), [
    ("GET", "/v2/models/nope", 404, "nope"),
    ("GET", "/v2/models/nope/ready", 404, "nope"),
    ("GET", "/v2/models/mlp/versions/7", 404, "7"),
    ("GET", "/v2/models/mlp/versions/7/ready", 404, "7"),
    ("GET", "/v2/no/such/route", 404, "/v2/no/such/route"),
    ("GET", "/v2/models/mlp/infer", 405, "GET"),
    ("POST", "/v2/health/live", 405, "POST"),
])
def test_bad_routes(addr, method, path, status, needle):
    resp = ferro.request(addr, method, path, b"" if method == "POST" else None)
    assert resp.status == status, (resp.status, resp.body[:300])
    assert needle in resp.error_message()
    ferro.check_good_request(addr)


# ---------------------------------------------------------------- 413


def test_body_over_limit_is_413(start_server, make_repo):
    srv = start_server(make_repo({"mlp": None}), "--max-body-bytes", "1024")
    big, headers = _json({"inputs": [_mlp_input(rows=8)]})
    assert len(big) > 1024
    # raw socket: the server may answer before reading the whole body and close
    resp = ferro.raw_exchange(srv.addr, "POST", ferro.infer_path("mlp"), [big], headers)
    assert resp.status == 413, (resp.status, resp.body[:300])
    msg = resp.error_message()
    assert "1024" in msg and str(len(big)) in msg, msg

    # the same without Content-Length (chunked): refused while reading
    chunks = [big[:600], big[600:1400], big[1400:]]
    resp = ferro.raw_exchange(srv.addr, "POST", ferro.infer_path("mlp"), chunks, headers, chunked=True)
    assert resp.status == 413, (resp.status, resp.body[:300])
    assert "1024" in resp.error_message()

    # under the limit, chunked, is accepted
    small, small_headers = _json({"inputs": [_mlp_input(rows=1, data=[0.5] * 64)]})
    assert len(small) < 1024
    resp = ferro.raw_exchange(srv.addr, "POST", ferro.infer_path("mlp"), [small[:100], small[100:]],
                              small_headers, chunked=True)
    assert resp.status == 200, (resp.status, resp.body[:300])
    want = ferro.model_ref("mlp").run({"input": np.full((1, 64), 0.5, np.float32)})["probabilities"]
    got = np.array(resp.json()["outputs"][0]["data"], np.float32).reshape(1, 10)
    ferro.assert_tensor("FP32", got, want, "mlp.probabilities")

    # a request under the limit still works (binary: 1 row is ~400 bytes)
    ferro.check_good_request(srv.addr, "mlp", rows=1, binary=True)


# ---------------------------------------------------------------- 503 full queue


def test_full_queue_is_503_with_retry_after(start_server, make_repo):
    srv = start_server(make_repo({"conv": {
        "max_batch_size": 1, "preferred_batch_sizes": [], "max_queue_size": 1, "count": 1,
    }}))
    threads_n = 24
    rng = np.random.default_rng(3)
    work = []
    for _ in range(threads_n):
        feeds = ferro.random_inputs(rng, "conv", 1)
        body, headers = ferro.encode_infer(feeds, "conv", True, True)
        work.append((body, headers, ferro.model_ref("conv").run(feeds)))

    responses: list[tuple[int, ferro.Response]] = []
    lock = threading.Lock()
    errors = []

    def blast(t, barrier):
        conn = http.client.HTTPConnection(*srv.addr, timeout=60)
        try:
            conn.connect()
            barrier.wait()
            body, headers, _ = work[t]
            conn.request("POST", ferro.infer_path("conv"), body=body, headers=headers)
            r = ferro.read_response(conn)
            with lock:
                responses.append((t, r))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    rounds = 0
    while rounds < 10 and not any(r.status == 503 for _, r in responses):
        rounds += 1
        barrier = threading.Barrier(threads_n, timeout=30)
        ts = [threading.Thread(target=blast, args=(t, barrier)) for t in range(threads_n)]
        for th in ts:
            th.start()
        for th in ts:
            th.join(120)
    assert not errors, errors

    statuses = [r.status for _, r in responses]
    print(f"{rounds} rounds: {statuses.count(200)} x 200, {statuses.count(503)} x 503")
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, f"no 503 in {rounds} bursts of {threads_n} against a queue of 1"
    for t, r in responses:
        if r.status == 503:
            assert "retry-after" in r.headers, r.headers
            assert int(r.headers["retry-after"]) >= 0
            assert "queue" in r.error_message().lower()
        else:
            result = ferro.decode_infer(r)
            ferro.assert_tensor("FP32", result.as_numpy("logits"), work[t][2]["logits"], f"request {t}")
    m = ferro.scrape(srv.addr)
    assert m.value("ferroserve_requests_total", model="conv", version="1", outcome="success") == statuses.count(200)
    ferro.check_good_request(srv.addr, "conv", rows=1)


# ---------------------------------------------------------------- 504 timeout


def test_request_timeout_parameter_is_504(server):
    addr = server.addr
    rng = np.random.default_rng(8)
    load = []
    for _ in range(4):
        feeds = ferro.random_inputs(rng, "conv", 8)
        body, headers = ferro.encode_infer(feeds, "conv", True, True)
        load.append((body, headers, ferro.model_ref("conv").run(feeds)))
    stop = threading.Event()
    load_results: list[tuple[int, ferro.Response]] = []
    errors = []

    def background(t):
        conn = http.client.HTTPConnection(*addr, timeout=60)
        try:
            while not stop.is_set():
                body, headers, _ = load[t]
                conn.request("POST", ferro.infer_path("conv"), body=body, headers=headers)
                load_results.append((t, ferro.read_response(conn)))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    ts = [threading.Thread(target=background, args=(t,)) for t in range(len(load))]
    for th in ts:
        th.start()
    timed = []
    try:
        for i in range(10):
            feeds = ferro.random_inputs(rng, "conv", 2)
            body, headers = ferro.encode_infer(feeds, "conv", True, True, timeout_us=1)
            timed.append(ferro.request(addr, "POST", ferro.infer_path("conv"), body, headers))
    finally:
        stop.set()
        for th in ts:
            th.join(60)
    assert not errors, errors
    for r in timed:
        assert r.status in (504, 503), (r.status, r.body[:300])
        assert "timed out" in r.error_message(), r.error_message()
    assert any(r.status == 504 for r in timed)
    assert load_results, "the background load got no answers"
    for t, r in load_results:
        assert r.status == 200, (r.status, r.body[:300])
        ferro.assert_tensor("FP32", ferro.decode_infer(r).as_numpy("logits"), load[t][2]["logits"], "background")
    ferro.check_good_request(addr, "conv", rows=2)


# ---------------------------------------------------------------- 500 backend error

BAD_INDEX = 100


def _multi_io_request(rng, bad: bool):
    feeds = ferro.random_inputs(rng, "multi_io", int(rng.integers(1, 4)))
    if bad:
        feeds["index"][0, 0] = BAD_INDEX
    body, headers = ferro.encode_infer(feeds, "multi_io", True, True)
    want = None if bad else ferro.model_ref("multi_io").run(feeds)
    return body, headers, want


def _assert_ort_index_error(resp: ferro.Response):
    assert resp.status == 500, (resp.status, resp.body[:300])
    msg = resp.error_message()
    # ONNX Runtime's own words: "indices element out of data bounds, idx=100 must be within ..."
    assert str(BAD_INDEX) in msg and "out of" in msg and "bounds" in msg, msg


def test_backend_error_is_500_with_onnxruntime_message(addr):
    before = ferro.scrape(addr)
    body, headers, _ = _multi_io_request(np.random.default_rng(1), bad=True)
    _assert_ort_index_error(ferro.request(addr, "POST", ferro.infer_path("multi_io"), body, headers))
    after = ferro.scrape(addr)
    lbl = dict(model="multi_io", version="1", outcome="backend_error")
    assert after.value("ferroserve_requests_total", **lbl) - before.value("ferroserve_requests_total", **lbl) == 1
    ferro.check_good_request(addr, "multi_io")


def test_backend_error_fails_only_its_batch(addr):
    """Bad requests among concurrent good ones: each bad one gets ONNX Runtime's
    error, and every good one gets its correct answer even when it shared a
    batch with a bad one (the server retries a failed batch request by
    request); afterwards every good request still succeeds."""
    rng = np.random.default_rng(21)
    threads_n, rounds = 8, 8
    plan = [[_multi_io_request(rng, bad=(t < 2 and i % 2 == 0)) for i in range(rounds)] for t in range(threads_n)]
    results: dict[tuple[int, int], ferro.Response] = {}
    errors = []
    barrier = threading.Barrier(threads_n, timeout=60)

    def client(t):
        conn = http.client.HTTPConnection(*addr, timeout=60)
        try:
            for i, (body, headers, _) in enumerate(plan[t]):
                barrier.wait()
                conn.request("POST", ferro.infer_path("multi_io"), body=body, headers=headers)
                results[(t, i)] = ferro.read_response(conn)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()
        finally:
            conn.close()

    ts = [threading.Thread(target=client, args=(t,)) for t in range(threads_n)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(120)
    assert not errors, errors
    good_ok = 0
    for (t, i), resp in results.items():
        want = plan[t][i][2]
        if want is None:
            _assert_ort_index_error(resp)
        else:
            assert resp.status == 200, (t, i, resp.status, resp.body[:300])
            result = ferro.decode_infer(resp)
            for o in ferro.model_ref("multi_io").outputs:
                ferro.assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"({t},{i}) {o.name}")
            good_ok += 1
    assert len(results) == threads_n * rounds
    assert good_ok == sum(1 for t in plan for (_, _, want) in t if want is not None)
    # the failure does not outlive its batch
    for seed in range(10):
        ferro.check_good_request(addr, "multi_io", rows=1 + seed % 3, seed=seed)

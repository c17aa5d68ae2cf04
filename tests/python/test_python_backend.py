"""The python entry-script backend (`backend = "python"`): Azure-ML-style
score.py bundles served by worker processes.

- raw style (iris) over `/score`, v2 HTTP and gRPC: the same JSON as the
  script's own run() called in-process, and run()'s exceptions as errors;
- tensor style (text_stats) under concurrent HTTP and gRPC clients: every
  answer is run() on that request's own rows, and requests are batched;
- faults (the `faulty` bundle) while a good stream keeps flowing: an
  exception, a worker that exits, a worker that hangs; every good request
  still succeeds and the workers come back;
- init() failing: `register` refuses the bundle, `serve` starts anyway with
  the model not ready (HTTP, gRPC, admin view, log) and other models served;
- virtual environments from requirements.txt: built at register time,
  shared by identical requirements, separate for different ones, rebuilt
  when broken.

Every server is started with `--python` set to the project's .venv
interpreter, so the tests do not depend on $FERROSERVE_PYTHON.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ferro

PYTHON = ferro.python_interpreter()
IRIS_DIR = ferro.EXAMPLES / "iris" / "1"
TEXT_STATS_DIR = ferro.EXAMPLES / "text_stats" / "1"
FAULTY_DIR = ferro.BUNDLES / "faulty"
FAULTY_INIT_DIR = ferro.BUNDLES / "faulty-init"
STATS_OUTPUTS = ["normalized", "summary"]


def _python_args(*extra) -> list[str]:
    return ["--python", str(PYTHON), *map(str, extra)]


def _register(repo: Path, bundle: Path, name: str, *extra) -> int:
    p = ferro.cli("register", bundle, "--repo", repo, "--name", name, *_python_args(*extra))
    return int(p.stdout.strip().splitlines()[-1])


def _stop(srv: ferro.Server):
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with code {rc} after SIGTERM\n{srv.log()}"


@pytest.fixture(scope="module")
def py_repo(tmp_path_factory) -> Path:
    """A fresh repository with iris, text_stats and faulty registered by the CLI."""
    ferro.ensure_examples()
    repo = tmp_path_factory.mktemp("pyrepo") / "repo"
    assert _register(repo, IRIS_DIR, "iris") == 1
    assert _register(repo, TEXT_STATS_DIR, "text_stats") == 1
    assert _register(repo, FAULTY_DIR, "faulty") == 1
    return repo


@pytest.fixture(scope="module")
def py_server(py_repo):
    srv = ferro.Server(py_repo, _python_args())
    yield srv
    _stop(srv)


@pytest.fixture(scope="module")
def iris_script():
    return ferro.load_entry_script(IRIS_DIR)


@pytest.fixture(scope="module")
def stats_script():
    return ferro.load_entry_script(TEXT_STATS_DIR)


def _assert_stats(got: dict, want: dict, what: str):
    for name in STATS_OUTPUTS:
        g = np.asarray(got[name])
        w = want[name]
        assert g.dtype == np.float32, f"{what} {name}: dtype {g.dtype}"
        assert g.shape == w.shape, f"{what} {name}: shape {g.shape}, expected {w.shape}"
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=f"{what} {name}")


# --------------------------------------------------------------------------
# 1. raw style: iris


def _iris_bodies(seed: int, count: int) -> list[str]:
    """The bundle's sample.json and COUNT random bodies of 1-5 rows (a mix of
    ints and floats, all plausible measurements)."""
    rng = np.random.default_rng(seed)
    bodies = [(IRIS_DIR / "sample.json").read_text()]
    for i in range(count):
        rows = int(rng.integers(1, 6))
        data = np.round(rng.uniform([4.0, 2.0, 1.0, 0.1], [8.0, 4.5, 7.0, 2.5], size=(rows, 4)), 1).tolist()
        if i % 3 == 0:
            data[0][0] = int(round(data[0][0]))  # an int in the JSON
        bodies.append(json.dumps({"data": data}))
    return bodies


def _script_error(module, body) -> str:
    """The message of the ValueError the script raises for BODY."""
    with pytest.raises(ValueError) as e:
        module.run(body)
    return str(e.value)


def test_iris_metadata_is_raw_bytes_in_and_out(py_server):
    resp = ferro.request(py_server.addr, "GET", "/v2/models/iris")
    assert resp.status == 200, resp.body[:500]
    meta = resp.json()
    assert meta["name"] == "iris" and meta["versions"] == ["1"], meta
    assert meta["inputs"] == [{"name": "raw", "datatype": "BYTES", "shape": [-1]}], meta
    assert meta["outputs"] == [{"name": "result", "datatype": "BYTES", "shape": [-1]}], meta
    assert ferro.request(py_server.addr, "GET", "/v2/models/iris/ready").status == 200


def test_iris_score_route_equals_script(py_server, iris_script):
    """POST /v2/models/iris/score: the body goes to run(), run()'s answer
    comes back as JSON, exactly the in-process answer."""
    for i, body in enumerate(_iris_bodies(11, 12)):
        resp = ferro.request(py_server.addr, "POST", "/v2/models/iris/score", body.encode(),
                             {"Content-Type": "application/json"})
        assert resp.status == 200, f"body {i}: {resp.status} {resp.body[:500]!r}"
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        want = iris_script.run(body)
        assert resp.json() == want, f"body {i}: {body}"
    # the sample's known answer, so the reference itself is checked too
    sample = json.loads(ferro.request(py_server.addr, "POST", "/v2/models/iris/score",
                                      (IRIS_DIR / "sample.json").read_bytes()).body)
    assert sample["labels"] == ["setosa", "versicolor", "virginica"], sample


def test_iris_v2_http_bytes_equals_script(py_server, iris_script):
    """v2 infer over HTTP: BYTES input "raw" [N] -> BYTES output "result" [N],
    each the JSON text of run(body), both with tritonclient (binary) and a
    plain JSON body."""
    import tritonclient.http as httpclient

    bodies = _iris_bodies(12, 5)
    want = [iris_script.run(b) for b in bodies]
    client = httpclient.InferenceServerClient(url=py_server.url, connection_timeout=60, network_timeout=60)
    try:
        for binary in (True, False):
            inp = httpclient.InferInput("raw", [len(bodies)], "BYTES")
            inp.set_data_from_numpy(np.array([b.encode() for b in bodies], dtype=np.object_), binary_data=binary)
            result = client.infer("iris", [inp], outputs=[httpclient.InferRequestedOutput("result", binary_data=binary)])
            out = result.as_numpy("result")
            assert out.shape == (len(bodies),), out.shape
            assert [json.loads(x) for x in out] == want, f"binary={binary}"
            assert result.get_response()["model_name"] == "iris"
    finally:
        client.close()
    # plain JSON, one body, no outputs requested
    resp = ferro.post_json(py_server.addr, "/v2/models/iris/infer", {
        "inputs": [{"name": "raw", "shape": [1], "datatype": "BYTES", "data": [bodies[1]]}],
    })
    assert resp.status == 200, resp.body[:500]
    doc = resp.json()
    [out] = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("result", "BYTES", [1]), out
    assert json.loads(out["data"][0]) == want[1]


def test_iris_grpc_bytes_equals_script(py_server, iris_script):
    import tritonclient.grpc as grpcclient

    bodies = _iris_bodies(13, 6)
    want = [iris_script.run(b) for b in bodies]
    client = ferro.grpc_client(py_server.grpc_url)
    try:
        assert client.is_model_ready("iris")
        for n in (1, len(bodies)):
            inp = grpcclient.InferInput("raw", [n], "BYTES")
            inp.set_data_from_numpy(np.array([b.encode() for b in bodies[:n]], dtype=np.object_))
            result = client.infer("iris", [inp], outputs=[grpcclient.InferRequestedOutput("result")],
                                  client_timeout=60)
            out = result.as_numpy("result")
            assert out.shape == (n,), out.shape
            assert [json.loads(x) for x in out] == want[:n]
    finally:
        client.close()


BAD_IRIS = [
    ('{"data": [[1, 2]]}', "data[0]"),
    ('{"rows": [[1, 2, 3, 4]]}', "data: missing"),
    ("not json at all", "request body is not JSON"),
]


@pytest.mark.parametrize("body,field", BAD_IRIS, ids=["short-row", "no-data", "not-json"])
def test_iris_bad_input_is_500_with_the_scripts_valueerror(py_server, iris_script, body, field):
    message = _script_error(iris_script, body)
    assert field in message, message
    # /score
    resp = ferro.request(py_server.addr, "POST", "/v2/models/iris/score", body.encode(),
                         {"Content-Type": "application/json"})
    assert resp.status == 500, (resp.status, resp.body[:500])
    err = resp.error_message()
    assert "ValueError" in err and message in err, err
    # v2 HTTP
    resp = ferro.post_json(py_server.addr, "/v2/models/iris/infer", {
        "inputs": [{"name": "raw", "shape": [1], "datatype": "BYTES", "data": [body]}],
    })
    assert resp.status == 500, (resp.status, resp.body[:500])
    err = resp.error_message()
    assert "ValueError" in err and message in err, err
    # gRPC: INTERNAL
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = ferro.grpc_client(py_server.grpc_url)
    try:
        inp = grpcclient.InferInput("raw", [1], "BYTES")
        inp.set_data_from_numpy(np.array([body.encode()], dtype=np.object_))
        with pytest.raises(InferenceServerException) as e:
            client.infer("iris", [inp], client_timeout=60)
        assert ferro.grpc_code_name(e.value) == "INTERNAL", e.value
        assert "ValueError" in e.value.message() and message in e.value.message(), e.value.message()
    finally:
        client.close()
    # the workers go on
    good = (IRIS_DIR / "sample.json").read_text()
    resp = ferro.request(py_server.addr, "POST", "/v2/models/iris/score", good.encode())
    assert resp.status == 200 and resp.json() == iris_script.run(good)


# --------------------------------------------------------------------------
# 2. tensor style: text_stats under concurrency

STATS_THREADS = 8
STATS_ROUNDS = 15


def _stats_plan(seed: int):
    rng = np.random.default_rng(seed)
    plan = []
    for t in range(STATS_THREADS):
        reqs = []
        for i in range(STATS_ROUNDS):
            rows = 1 if i % 2 == 0 else int(rng.integers(2, 6))
            values = (rng.standard_normal((rows, 16)) * rng.uniform(0.1, 100)).astype(np.float32)
            if i % 7 == 3:
                values[0, :] = 2.5  # a constant row: std 0, the 1e-6 floor
            reqs.append(values)
        plan.append(reqs)
    return plan


def _stats_http_client(addr, reqs, barrier, results, errors, t):
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=60)
    try:
        for i, values in enumerate(reqs):
            binary = (t + i) % 2 == 0
            body, headers = ferro.encode_tensors([("values", "FP32", values)], STATS_OUTPUTS, binary,
                                                 request_id=f"t{t}-r{i}")
            barrier.wait()
            conn.request("POST", "/v2/models/text_stats/infer", body=body, headers=headers)
            resp = ferro.read_response(conn)
            if resp.status != 200:
                results[t].append((resp.status, resp.body[:500]))
                continue
            result = ferro.decode_infer(resp)
            assert result.get_response()["id"] == f"t{t}-r{i}"
            results[t].append({n: result.as_numpy(n) for n in STATS_OUTPUTS})
    except Exception as e:  # reported by the main thread
        errors.append(f"http thread {t}: {type(e).__name__}: {e}")
        barrier.abort()
    finally:
        conn.close()


def _stats_grpc_client(url, reqs, barrier, results, errors, t):
    import tritonclient.grpc as grpcclient

    client = ferro.grpc_client(url)
    try:
        for i, values in enumerate(reqs):
            inp = grpcclient.InferInput("values", list(values.shape), "FP32")
            inp.set_data_from_numpy(values)
            barrier.wait()
            result = client.infer("text_stats", [inp], request_id=f"g{t}-r{i}", client_timeout=60)
            results[t].append({n: result.as_numpy(n) for n in STATS_OUTPUTS})
    except Exception as e:  # reported by the main thread
        errors.append(f"grpc thread {t}: {type(e).__name__}: {e}")
        barrier.abort()
    finally:
        client.close()


def test_text_stats_concurrent_http_and_grpc_equal_script_and_batch(py_server, stats_script):
    """Half the clients over HTTP, half over gRPC, 1-row and multi-row
    requests sent at the same moment each round: every answer is run() on
    that request's rows alone, and the batcher merged requests."""
    plan = _stats_plan(2025)
    lbl = dict(model="text_stats", version="1")
    before = ferro.scrape(py_server.addr)
    barrier = threading.Barrier(STATS_THREADS, timeout=60)
    results = [[] for _ in range(STATS_THREADS)]
    errors: list[str] = []
    threads = []
    for t in range(STATS_THREADS):
        if t % 2 == 0:
            target, where = _stats_http_client, py_server.addr
        else:
            target, where = _stats_grpc_client, py_server.grpc_url
        threads.append(threading.Thread(target=target, args=(where, plan[t], barrier, results, errors, t)))
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "client threads hung\n" + py_server.log(50)
    assert not errors, "\n".join(errors) + "\n" + py_server.log(50)

    total_rows = 0
    for t in range(STATS_THREADS):
        assert len(results[t]) == STATS_ROUNDS
        for i, (values, got) in enumerate(zip(plan[t], results[t])):
            what = f"thread {t} request {i} ({values.shape[0]} rows)"
            assert isinstance(got, dict), f"{what}: {got}"
            _assert_stats(got, stats_script.run({"values": values}), what)
            total_rows += values.shape[0]

    after = ferro.scrape(py_server.addr)
    rows = after.value("ferroserve_batch_size_sum", **lbl) - before.value("ferroserve_batch_size_sum", **lbl)
    batches = after.value("ferroserve_batch_size_count", **lbl) - before.value("ferroserve_batch_size_count", **lbl)
    requests = STATS_THREADS * STATS_ROUNDS
    ok = (after.value("ferroserve_requests_total", outcome="success", **lbl)
          - before.value("ferroserve_requests_total", outcome="success", **lbl))
    print(f"text_stats: {requests} requests, {total_rows} rows in {batches:.0f} batches "
          f"({rows / max(batches, 1):.2f} rows per batch)")
    assert ok == requests, (ok, requests)
    assert rows == total_rows, (rows, total_rows)  # every row through run() exactly once
    assert 0 < batches < requests, f"no request was batched with another: {batches} batches for {requests} requests"


# --------------------------------------------------------------------------
# 3. faults, with a good stream flowing meanwhile


def _faulty_values(trigger: float | None, rows: int, rng) -> np.ndarray:
    values = rng.standard_normal((rows, 16)).astype(np.float32)
    if trigger is not None:
        values[0, 0] = trigger
    return values


def _infer_faulty(addr, values, timeout=60.0, model="faulty") -> ferro.Response:
    body, headers = ferro.encode_tensors([("values", "FP32", values)], STATS_OUTPUTS, True)
    return ferro.request(addr, "POST", f"/v2/models/{model}/infer", body, headers, timeout=timeout)


def _wait_good(addr, script, model="faulty", deadline_s=30.0, seed=0) -> int:
    """Sends good requests until one is answered correctly (fails after
    DEADLINE_S); returns how many it took."""
    rng = np.random.default_rng(seed)
    deadline = time.monotonic() + deadline_s
    tries = 0
    last = None
    while time.monotonic() < deadline:
        tries += 1
        values = _faulty_values(None, 2, rng)
        resp = _infer_faulty(addr, values, timeout=max(1.0, deadline - time.monotonic()))
        if resp.status == 200:
            result = ferro.decode_infer(resp)
            _assert_stats({n: result.as_numpy(n) for n in STATS_OUTPUTS}, script.run({"values": values}),
                          "good request after a fault")
            return tries
        last = (resp.status, resp.body[:300])
        time.sleep(0.05)
    raise AssertionError(f"{model} did not answer a good request within {deadline_s} s; last answer {last}")


class GoodStream:
    """THREADS keep-alive clients sending good faulty requests (1-3 rows of
    normal data) back to back until stopped; every answer is checked against
    run() in-process and any failure is kept with its timing."""

    def __init__(self, addr, script, threads=4, seed=99):
        self.addr, self.script = addr, script
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._loop, args=(seed + t, t), daemon=True)
                        for t in range(threads)]
        for th in self.threads:
            th.start()

    def _loop(self, seed, t):
        rng = np.random.default_rng(seed)
        conn = http.client.HTTPConnection(self.addr[0], self.addr[1], timeout=60)
        i = 0
        while not self.stop_event.is_set():
            values = _faulty_values(None, int(rng.integers(1, 4)), rng)
            body, headers = ferro.encode_tensors([("values", "FP32", values)], STATS_OUTPUTS, True,
                                                 request_id=f"good-{t}-{i}")
            sent = time.monotonic() - self.t0
            try:
                conn.request("POST", "/v2/models/faulty/infer", body=body, headers=headers)
                resp = ferro.read_response(conn)
                took = time.monotonic() - self.t0 - sent
                if resp.status != 200:
                    raise AssertionError(f"{resp.status} {resp.body[:300]!r}")
                result = ferro.decode_infer(resp)
                assert result.get_response()["id"] == f"good-{t}-{i}"
                _assert_stats({n: result.as_numpy(n) for n in STATS_OUTPUTS},
                              self.script.run({"values": values}), f"good-{t}-{i}")
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - collected, asserted by the test
                took = time.monotonic() - self.t0 - sent
                with self.lock:
                    self.failures.append(f"good-{t}-{i} sent at {sent:.3f} s, failed after {took:.3f} s: "
                                         f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(self.addr[0], self.addr[1], timeout=60)
            i += 1
        conn.close()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stop(self):
        self.stop_event.set()
        for th in self.threads:
            th.join(90)
        assert not any(th.is_alive() for th in self.threads), "good stream threads hung"


def _wait_log(srv: ferro.Server, pattern: str, timeout: float = 20.0, after: int = 0) -> str:
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        with srv._lock:
            lines = srv.lines[after:]
        for line in lines:
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r} within {timeout} s\n{srv.log(80)}")
        time.sleep(0.05)


def _worker_of(line: str) -> str:
    m = re.search(r"worker=(\d+)", line)
    assert m, line
    return m.group(1)


def test_exception_and_worker_exit_fail_only_their_own_request_while_a_good_stream_flows(py_server):
    """666 (run() raises) and 777 (the worker exits) while 4 clients stream
    good requests: the faulty request fails with what happened, the worker
    comes back, and every good request succeeds (one batched with a faulty
    one is retried on its own)."""
    script = ferro.load_entry_script(FAULTY_DIR)
    addr = py_server.addr
    rng = np.random.default_rng(5)
    _wait_good(addr, script)
    stream = GoodStream(addr, script)
    timeline = []
    try:
        time.sleep(0.3)

        # run() raises: 500 with the exception's type and message; the worker goes on
        log_mark = len(py_server.lines)
        t = stream.elapsed()
        resp = _infer_faulty(addr, _faulty_values(666, 1, rng))
        timeline.append(f"666 at {t:.3f} s -> {resp.status}")
        assert resp.status == 500, (resp.status, resp.body[:500])
        err = resp.error_message()
        assert "ValueError" in err and "values[0] = 666 is the forbidden value" in err, err
        _wait_good(addr, script)
        time.sleep(0.2)
        assert "restarting the worker" not in "\n".join(py_server.lines[log_mark:]), \
            "an exception in run() must not cost the worker its process\n" + py_server.log(40)

        # the worker exits: 500 naming the exit code; the worker is restarted
        log_mark = len(py_server.lines)
        t = stream.elapsed()
        resp = _infer_faulty(addr, _faulty_values(777, 2, rng))
        timeline.append(f"777 at {t:.3f} s -> {resp.status}")
        assert resp.status == 500, (resp.status, resp.body[:500])
        err = resp.error_message()
        assert "worker exited" in err and "exit code 3" in err, err
        lost = _wait_log(py_server, r"worker exited \(exit code 3\).*model=faulty:1 worker=\d", after=log_mark)
        _wait_good(addr, script)
        _wait_log(py_server, rf"restarting the worker.*model=faulty:1 worker={_worker_of(lost)}\b", after=log_mark)
        time.sleep(0.3)
    finally:
        stream.stop()
    print(f"good stream: {stream.ok} ok, {len(stream.failures)} failed; " + "; ".join(timeline))
    assert stream.ok > 50, f"the good stream made only {stream.ok} requests"
    assert not stream.failures, (
        f"{len(stream.failures)} good requests failed (timeline: {timeline}):\n"
        + "\n".join(stream.failures[:20]) + "\n" + py_server.log(60)
    )
    log = "\n".join(py_server.lines)
    assert "restarting the worker" in log
    assert re.search(r"model=faulty:1 worker=\d", log), "no worker-tagged log line"


# Documented behaviour (see test_good_request_batched_with_a_hanging_one_shares_its_fate):
# a good request that lands in the same batch as a hanging one was held by the
# worker that is killed at timeout_ms, and times out with it (504). In a stream
# that happens only when the good request was queued together with the 888
# one, so the test below tolerates exactly that: a 504 "timed out" of a good
# request sent within HANG_BATCH_WINDOW_S of the 888 request.
HANG_BATCH_WINDOW_S = 0.1


def test_hung_worker_is_killed_and_restarted_while_a_good_stream_flows(py_server):
    script = ferro.load_entry_script(FAULTY_DIR)
    addr = py_server.addr
    rng = np.random.default_rng(6)
    _wait_good(addr, script)
    stream = GoodStream(addr, script, seed=7)
    try:
        time.sleep(0.3)
        # the worker hangs: killed after timeout_ms (2000), the request fails
        log_mark = len(py_server.lines)
        sent = stream.elapsed()
        started = time.monotonic()
        resp = _infer_faulty(addr, _faulty_values(888, 1, rng), timeout=30)
        took = time.monotonic() - started
        assert resp.status in (500, 504), (resp.status, resp.body[:500])
        err = resp.error_message()
        assert re.search(r"did not answer|timed out", err), err
        assert 1.5 <= took <= 15, f"the hung request failed after {took:.2f} s (timeout_ms = 2000)"
        lost = _wait_log(py_server, r"did not answer within 2000 ms.*model=faulty:1 worker=\d", after=log_mark)
        _wait_good(addr, script)
        _wait_log(py_server, rf"restarting the worker.*model=faulty:1 worker={_worker_of(lost)}\b", after=log_mark)
        time.sleep(0.3)
    finally:
        stream.stop()
    known, other = [], []
    for f in stream.failures:
        m = re.search(r"sent at ([0-9.]+) s, failed after [0-9.]+ s: AssertionError: 504 .*timed out", f)
        (known if m and abs(float(m.group(1)) - sent) <= HANG_BATCH_WINDOW_S else other).append(f)
    print(f"good stream: {stream.ok} ok, {len(other)} failed, {len(known)} failed with the 888 request's "
          f"batch (held by the hung worker); 888 sent at {sent:.3f} s -> {resp.status} after {took:.3f} s")
    assert stream.ok > 50, f"the good stream made only {stream.ok} requests"
    assert not other, (
        f"{len(other)} good requests failed (888 sent at {sent:.3f} s):\n" + "\n".join(other[:20])
        + "\n" + py_server.log(60)
    )


def test_grpc_run_exception_is_internal(py_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    script = ferro.load_entry_script(FAULTY_DIR)
    client = ferro.grpc_client(py_server.grpc_url)
    try:
        values = _faulty_values(666, 3, np.random.default_rng(1))
        inp = grpcclient.InferInput("values", [3, 16], "FP32")
        inp.set_data_from_numpy(values)
        with pytest.raises(InferenceServerException) as e:
            client.infer("faulty", [inp], client_timeout=60)
        assert ferro.grpc_code_name(e.value) == "INTERNAL", e.value
        msg = e.value.message()
        assert "ValueError" in msg and "values[0] = 666 is the forbidden value" in msg, msg
        values[0, 0] = 1.0
        inp.set_data_from_numpy(values)
        result = client.infer("faulty", [inp], client_timeout=60)
        _assert_stats({n: result.as_numpy(n) for n in STATS_OUTPUTS}, script.run({"values": values}), "grpc")
    finally:
        client.close()


# A good request and a faulty one in one batch, made certain: one worker and
# a long batching window, so both are queued before the batch is cut.
BATCH_WINDOW_US = 300_000


@pytest.fixture(scope="module")
def batched_faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched_faulty")
    dst = root / "faulty" / "1"
    shutil.copytree(FAULTY_DIR, dst)
    manifest = dst / "bundle.toml"
    text = manifest.read_text()
    for key, value in (("max_queue_delay_us", BATCH_WINDOW_US), ("count", 1)):
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    manifest.write_text(text)
    srv = ferro.Server(root, _python_args())
    yield srv
    _stop(srv)


@pytest.mark.parametrize("trigger", [
    666,
    777,
])
def test_good_request_batched_with_a_faulty_one_succeeds(batched_faulty, trigger):
    srv = batched_faulty
    script = ferro.load_entry_script(FAULTY_DIR)
    _wait_good(srv.addr, script, deadline_s=30)
    rng = np.random.default_rng(trigger)
    good = _faulty_values(None, 2, rng)
    bad = _faulty_values(trigger, 1, rng)
    lbl = dict(model="faulty", version="1")
    before = ferro.scrape(srv.addr)
    answers = {}

    def send(key, values, delay):
        time.sleep(delay)
        t0 = time.monotonic()
        answers[key] = (_infer_faulty(srv.addr, values, timeout=30), time.monotonic() - t0)

    threads = [threading.Thread(target=send, args=("good", good, 0.0)),
               threading.Thread(target=send, args=("bad", bad, 0.05))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    after = ferro.scrape(srv.addr)
    # they did share a batch: some batch had more than 1 row... the good one has 2
    multi = (after.value("ferroserve_batch_size_count", **lbl) - before.value("ferroserve_batch_size_count", **lbl)) - (
        after.value("ferroserve_batch_size_bucket", le="2", **lbl) - before.value("ferroserve_batch_size_bucket", le="2", **lbl))
    bad_resp, bad_took = answers["bad"]
    good_resp, good_took = answers["good"]
    assert bad_resp.status in (500, 504), (bad_resp.status, bad_resp.body[:300])
    assert multi >= 1, "the two requests were not batched together (no batch of 3 rows)"
    assert good_resp.status == 200, (
        f"the good request batched with a {trigger} one failed after {good_took:.2f} s: "
        f"{good_resp.status} {good_resp.body[:300]!r} (the faulty one: {bad_resp.status} "
        f"{bad_resp.body[:200]!r} after {bad_took:.2f} s)"
    )
    result = ferro.decode_infer(good_resp)
    _assert_stats({n: result.as_numpy(n) for n in STATS_OUTPUTS}, script.run({"values": good}), "batched good")
    _wait_good(srv.addr, script, deadline_s=30)


def test_good_request_batched_with_a_hanging_one_shares_its_fate(batched_faulty):
    """A batch that hangs holds every request in it: the worker is killed at
    timeout_ms and they all time out (504). The hung request is not run
    again afterwards (its deadline has passed), so the worker is killed once
    and the model answers right after the restart."""
    srv = batched_faulty
    script = ferro.load_entry_script(FAULTY_DIR)
    _wait_good(srv.addr, script, deadline_s=30)
    rng = np.random.default_rng(888)
    good = _faulty_values(None, 2, rng)
    bad = _faulty_values(888, 1, rng)
    answers = {}
    log_mark = len(srv.lines)

    def send(key, values, delay):
        time.sleep(delay)
        answers[key] = _infer_faulty(srv.addr, values, timeout=30)

    threads = [threading.Thread(target=send, args=("good", good, 0.0)),
               threading.Thread(target=send, args=("bad", bad, 0.05))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for key in ("good", "bad"):
        r = answers[key]
        assert r.status == 504 and "timed out" in r.error_message(), (key, r.status, r.body[:300])
    _wait_good(srv.addr, script, deadline_s=30)
    kills = [line for line in srv.lines[log_mark:] if "did not answer within" in line]
    assert len(kills) == 1, kills


# --------------------------------------------------------------------------
# 4. init() failing


def test_register_refuses_a_bundle_whose_init_fails(tmp_path):
    repo = tmp_path / "repo"
    p = ferro.cli("register", FAULTY_INIT_DIR, "--repo", repo, "--name", "faulty_init", *_python_args(),
                  check=False)
    assert p.returncode != 0, p.stdout
    assert "init failed on purpose" in p.stderr and "RuntimeError" in p.stderr, p.stderr[-2000:]
    assert not (repo / "faulty_init").exists(), list(repo.iterdir())


def test_init_failure_makes_the_model_not_ready_and_others_serve(tmp_path, start_server, stats_script):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    # placed by hand (register refuses it); the first serve imports the folders
    repo = tmp_path / "repo"
    shutil.copytree(FAULTY_INIT_DIR, repo / "faulty_init" / "1")
    shutil.copytree(TEXT_STATS_DIR, repo / "text_stats" / "1")
    assert not (repo / "registry.db").exists()
    srv = start_server(repo, *_python_args())
    addr = srv.addr

    resp = ferro.request(addr, "GET", "/v2/models/faulty_init/ready")
    assert resp.status == 503, (resp.status, resp.body[:500])
    err = resp.error_message()
    for part in ("RuntimeError", "init failed on purpose", "Traceback"):
        assert part in err, err

    values = _faulty_values(None, 2, np.random.default_rng(3))
    resp = _infer_faulty(addr, values, model="faulty_init")
    assert resp.status == 503, (resp.status, resp.body[:500])
    assert "init failed on purpose" in resp.error_message()

    client = ferro.grpc_client(srv.grpc_url)
    try:
        assert client.is_model_ready("faulty_init") is False
        assert client.is_model_ready("text_stats") is True
        inp = grpcclient.InferInput("values", [2, 16], "FP32")
        inp.set_data_from_numpy(values)
        with pytest.raises(InferenceServerException) as e:
            client.infer("faulty_init", [inp], client_timeout=60)
        assert "init failed on purpose" in e.value.message(), e.value
        assert ferro.grpc_code_name(e.value) == "UNAVAILABLE", e.value
    finally:
        client.close()

    view = ferro.endpoint_view(addr, "faulty_init")
    status = view["deployments"][0]["status"]
    assert status.startswith("not ready"), view
    assert "init failed on purpose" in status, view

    # the other model of the repository is served
    assert ferro.request(addr, "GET", "/v2/models/text_stats/ready").status == 200
    resp = _infer_faulty(addr, values, model="text_stats")
    assert resp.status == 200, (resp.status, resp.body[:500])
    result = ferro.decode_infer(resp)
    _assert_stats({n: result.as_numpy(n) for n in STATS_OUTPUTS}, stats_script.run({"values": values}), "text_stats")

    log = "\n".join(srv.lines)
    assert "Traceback (most recent call last)" in log and "init failed on purpose" in log, srv.log(60)


CHATTY_CODE = """

_plain_init = init
_plain_run = run


def init():
    print("chatty init says hello")  # stdout: must not corrupt the protocol
    _plain_init()


def run(inputs):
    import sys
    print("chatty run on", len(inputs["values"]), "rows", flush=True)
    print("chatty stderr line", file=sys.stderr, flush=True)
    return _plain_run(inputs)
"""


def test_script_output_goes_to_the_log_tagged_with_model_and_worker(tmp_path, start_server, stats_script):
    """A script that prints on stdout and stderr (in init() and run()):
    answers stay correct (its stdout cannot corrupt the framed protocol) and
    every line lands in the server log, tagged model=NAME:VERSION worker=N."""
    repo = tmp_path / "repo"
    dst = repo / "chatty" / "1"
    shutil.copytree(TEXT_STATS_DIR, dst)
    manifest = dst / "bundle.toml"
    text, n = re.subn(r'^name = "text_stats"$', 'name = "chatty"', manifest.read_text(), flags=re.M)
    assert n == 1
    manifest.write_text(text)
    with open(dst / "score.py", "a") as f:
        f.write(CHATTY_CODE)
    srv = start_server(repo, *_python_args())
    values = _faulty_values(None, 3, np.random.default_rng(8))
    resp = _infer_faulty(srv.addr, values, model="chatty")
    assert resp.status == 200, (resp.status, resp.body[:500])
    result = ferro.decode_infer(resp)
    _assert_stats({n: result.as_numpy(n) for n in STATS_OUTPUTS}, stats_script.run({"values": values}), "chatty")
    for pattern in (r"ferroserve::python: chatty init says hello model=chatty:1 worker=0\b",
                    r"ferroserve::python: chatty init says hello model=chatty:1 worker=1\b",
                    r"ferroserve::python: chatty run on 3 rows model=chatty:1 worker=[01]\b",
                    r"ferroserve::python: chatty stderr line model=chatty:1 worker=[01]\b"):
        _wait_log(srv, pattern, timeout=10)


@pytest.mark.parametrize("flag", ["--python", "--python-envs"])
def test_relative_python_paths_are_relative_to_the_working_folder(tmp_path, flag):
    # ferro.cli runs the binary in REPO_ROOT
    import os

    if flag == "--python":
        args = ["--python", os.path.relpath(PYTHON, ferro.REPO_ROOT)]
    else:
        args = ["--python", str(PYTHON), "--python-envs", os.path.relpath(tmp_path / "envs", ferro.REPO_ROOT)]
    p = ferro.cli("register", IRIS_DIR, "--repo", tmp_path / "repo", "--name", "iris", *args, check=False)
    why = [line for line in p.stderr.splitlines() if "Error" in line or "can't open" in line]
    assert p.returncode == 0, "\n".join(why[:6])


# --------------------------------------------------------------------------
# 5. virtual environments

SIX_VERSION = "1.17.0"


def _handmade_six_wheel(folder: Path) -> Path | None:
    """six-1.17.0-py2.py3-none-any.whl built from the six module installed in
    this interpreter (six is one file), for hosts without PyPI access."""
    import base64
    import hashlib

    import six

    if six.__version__ != SIX_VERSION:
        return None
    src = Path(six.__file__).read_bytes()
    info = f"six-{SIX_VERSION}.dist-info"
    files = {
        "six.py": src,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: six\nVersion: {SIX_VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: ferroserve-tests\nRoot-Is-Purelib: true\nTag: py2-none-any\nTag: py3-none-any\n",
        f"{info}/top_level.txt": b"six\n",
    }

    def digest(b):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode()

    record = "".join(f"{n},{digest(b)},{len(b)}\n" for n, b in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    path = folder / f"six-{SIX_VERSION}-py2.py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    return path


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """A --find-links folder holding six 1.17.0, so the environments build
    with --pip-offline: `pip download` (PyPI or pip's cache), else a wheel
    made from the six installed here."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", f"six=={SIX_VERSION}", "--no-deps",
                        "--only-binary", ":all:", "--disable-pip-version-check", "-d", str(folder)],
                       capture_output=True, timeout=120, check=True)
    except (subprocess.SubprocessError, OSError):
        pass
    if not list(folder.glob("six-*.whl")) and _handmade_six_wheel(folder) is None:
        pytest.skip(f"no six {SIX_VERSION} wheel: no PyPI access and six {SIX_VERSION} is not installed")
    return folder


def _env_dirs(envs: Path) -> list[Path]:
    """The environment folders (not the harness files, not half-built .building-*)."""
    return sorted(p for p in envs.iterdir() if p.is_dir() and not p.name.startswith("."))


def _score(addr, model: str) -> dict:
    resp = ferro.request(addr, "POST", f"/v2/models/{model}/score", b'{"data": []}',
                         {"Content-Type": "application/json"})
    assert resp.status == 200, (model, resp.status, resp.body[:500])
    return resp.json()


def test_requirements_environments_are_shared_by_content_and_rebuilt_when_broken(tmp_path, wheelhouse,
                                                                                   start_server):
    envs = tmp_path / "envs"
    repo = tmp_path / "repo"
    flags = ["--python-envs", envs, "--pip-offline", "--pip-find-links", wheelhouse]

    # built at register time
    _register(repo, ferro.BUNDLES / "reqs-a", "reqs_a", *flags)
    [env_a] = _env_dirs(envs)
    assert (env_a / ".ferroserve-ready").is_file()
    six_version = subprocess.run([str(env_a / "bin" / "python"), "-c", "import six; print(six.__version__)"],
                                 capture_output=True, text=True, timeout=60)
    assert six_version.stdout.strip() == SIX_VERSION, six_version
    # same requirements: the same environment; different ones: a new one
    _register(repo, ferro.BUNDLES / "reqs-b", "reqs_b", *flags)
    assert _env_dirs(envs) == [env_a]
    _register(repo, ferro.BUNDLES / "reqs-c", "reqs_c", *flags)
    assert len(_env_dirs(envs)) == 2, _env_dirs(envs)
    [env_c] = [d for d in _env_dirs(envs) if d != env_a]
    marker_c = (env_c / ".ferroserve-ready").stat()

    srv = start_server(repo, *_python_args(*flags))
    a, b, c = (_score(srv.addr, m) for m in ("reqs_a", "reqs_b", "reqs_c"))
    for name, doc in (("reqs_a", a), ("reqs_b", b), ("reqs_c", c)):
        assert doc["six"] == SIX_VERSION, (name, doc)
        assert Path(doc["prefix"]).resolve().parent == envs.resolve(), (name, doc, envs)
    assert a["prefix"] == b["prefix"], (a, b)
    assert c["prefix"] != a["prefix"], (a, c)
    assert {Path(a["prefix"]).name, Path(c["prefix"]).name} == {env_a.name, env_c.name}
    assert a["pid"] != b["pid"]  # separate workers, one environment
    assert len(_env_dirs(envs)) == 2, _env_dirs(envs)
    _stop(srv)

    # broken (its marker gone): rebuilt at the next start, then served again
    (env_a / ".ferroserve-ready").unlink()
    srv = start_server(repo, *_python_args(*flags))
    assert (env_a / ".ferroserve-ready").is_file(), "the broken environment was not rebuilt\n" + srv.log(60)
    a2, b2 = _score(srv.addr, "reqs_a"), _score(srv.addr, "reqs_b")
    assert a2["six"] == b2["six"] == SIX_VERSION, (a2, b2)
    assert a2["prefix"] == b2["prefix"] == a["prefix"], (a, a2, b2)
    assert _score(srv.addr, "reqs_c")["prefix"] == c["prefix"]
    assert _env_dirs(envs) == sorted([env_a, env_c]), _env_dirs(envs)
    # the healthy one was left alone
    after_c = (env_c / ".ferroserve-ready").stat()
    assert (after_c.st_ino, after_c.st_mtime_ns) == (marker_c.st_ino, marker_c.st_mtime_ns)
    assert "rebuilding" in "\n".join(srv.lines), srv.log(60)

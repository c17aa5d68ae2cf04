"""Endpoints and deployments (issue 5), end to end against a real server:
hot swaps under load without a lost request, weighted and pinned routing,
failed warm-ups that never take traffic, rollouts that roll back or
complete, shadow mirroring that loses no copy, draining that frees memory,
and deployment pinning over gRPC.

Every test starts its own server on a fresh repository built with
`ferroserve register`. Deadlines below are hang guards, not speed
assertions; latency and throughput figures are printed (`pytest -s`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ferro

EXAMPLE_MLP = ferro.EXAMPLES / "mlp" / "1"
BUNDLES = ferro.REPO_ROOT / "examples" / "bundles"
MLP_V2 = BUNDLES / "mlp-v2"
FLAKY = BUNDLES / "flaky"
FLAKY_BADWARMUP = BUNDLES / "flaky-badwarmup"

HEADER = "x-ferroserve-deployment"
POLL_MS = "300"
DEADLINE = 30.0  # hang guard for anything we wait for

pytestmark = pytest.mark.skipif(
    not all((b / "model.onnx").is_file() for b in (MLP_V2, FLAKY, FLAKY_BADWARMUP)),
    reason="examples/bundles not generated (run examples/generate.py)",
)


# --------------------------------------------------------------------------
# helpers


_SESSIONS: dict[str, object] = {}
_SESSIONS_LOCK = threading.Lock()


def ort_session(path: Path):
    import onnxruntime as ort

    with _SESSIONS_LOCK:
        key = str(path)
        if key not in _SESSIONS:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            _SESSIONS[key] = ort.InferenceSession(key, opts, providers=["CPUExecutionProvider"])
        return _SESSIONS[key]


def run_local(model_file: Path, x: np.ndarray) -> np.ndarray:
    """The model's output for the batch X, computed with onnxruntime here."""
    sess = ort_session(model_file)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def expected_by_version(xs: list[np.ndarray], files: dict[str, Path]) -> dict[str, np.ndarray]:
    """{version: outputs} for every 1-row input of XS stacked in one batch."""
    if not xs:
        return {v: np.zeros((0, 10), np.float32) for v in files}
    batch = np.concatenate(xs, axis=0)
    out = {}
    for v, f in files.items():
        # in chunks: the reference models' batch size is dynamic, keep memory small
        out[v] = np.concatenate([run_local(f, batch[i:i + 512]) for i in range(0, len(batch), 512)])
    return out


def infer_body(x: np.ndarray, rid: str, input_name: str = "input", binary_outputs: list[str] | None = None) -> bytes:
    doc = {"id": rid, "inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                                  "data": x.ravel().tolist()}]}
    if binary_outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in binary_outputs]
    return json.dumps(doc).encode()


class Reply:
    __slots__ = ("status", "deployment", "version", "model_name", "rid", "output", "body", "latency", "error")

    def __init__(self):
        self.status = None
        self.deployment = None
        self.version = None
        self.model_name = None
        self.rid = None
        self.output = None
        self.body = b""
        self.latency = 0.0
        self.error = None


class Client:
    """One keep-alive HTTP/1.1 connection. A transport error is recorded in
    the reply (never retried), and the connection is reopened for the next."""

    def __init__(self, addr, timeout: float = 60.0):
        self.addr = addr
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)

    def infer(self, path: str, x: np.ndarray, rid: str, headers: dict[str, str] | None = None) -> Reply:
        r = Reply()
        h = {"content-type": "application/json"}
        h.update(headers or {})
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", path, body=infer_body(x, rid), headers=h)
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            r.error = f"{type(e).__name__}: {e}"
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.addr[0], self.addr[1], timeout=self.timeout)
            return r
        r.latency = time.perf_counter() - t0
        r.status = resp.status
        r.deployment = resp.getheader(HEADER)
        r.body = body
        if resp.status == 200:
            doc = json.loads(body)
            r.version = doc.get("model_version")
            r.model_name = doc.get("model_name")
            r.rid = doc.get("id")
            outs = doc.get("outputs") or []
            if outs:
                r.output = np.asarray(outs[0]["data"], dtype=np.float32).reshape(outs[0]["shape"])
        return r

    def close(self):
        self.conn.close()


class Load:
    """N threads, each with its own keep-alive connection, sending a steady
    stream of distinct 1x64 requests to PATH until stopped. `make_input(rng,
    i)` builds the i-th input of a thread. Every (input, reply) is kept."""

    def __init__(self, addr, threads: int, path: str, make_input=None, headers=None, seed: int = 0,
                 max_requests: int | None = None):
        self.addr = addr
        self.path = path
        self.headers = headers
        self.make_input = make_input or (lambda rng, i: rng.standard_normal((1, 64)).astype(np.float32))
        self.stop_event = threading.Event()
        self.max_requests = max_requests
        self.results: list[list[tuple[np.ndarray, Reply]]] = [[] for _ in range(threads)]
        self.crashes: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(k, seed * 1000 + k), daemon=True, name=f"load-{k}")
            for k in range(threads)
        ]
        self.started = None
        self.elapsed = None

    def _run(self, k: int, seed: int):
        rng = np.random.default_rng(seed)
        client = Client(self.addr)
        out = self.results[k]
        i = 0
        try:
            while not self.stop_event.is_set():
                if self.max_requests is not None and i >= self.max_requests:
                    break
                x = self.make_input(rng, i)
                rid = f"t{k}-r{i}"
                r = client.infer(self.path, x, rid, self.headers)
                out.append((x, r))
                i += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.crashes.append(f"thread {k}: {type(e).__name__}: {e}")
        finally:
            client.close()

    def start(self):
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def count(self) -> int:
        return sum(len(r) for r in self.results)

    def wait_count(self, n: int, timeout: float = DEADLINE):
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < deadline, f"load made only {self.count()} of {n} requests in {timeout} s"
            assert not self.crashes, self.crashes
            time.sleep(0.02)

    def join(self, timeout: float = 120.0):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"{t.name} did not finish within {timeout} s"
        self.elapsed = time.monotonic() - self.started
        assert not self.crashes, self.crashes

    def stop(self):
        self.stop_event.set()
        self.join()

    def all(self) -> list[tuple[np.ndarray, Reply]]:
        return [p for rs in self.results for p in rs]


def describe_reply(x: np.ndarray | None, r: Reply) -> str:
    return (f"status={r.status} error={r.error} deployment={r.deployment} version={r.version} "
            f"id={r.rid} body={r.body[:300]!r}" + ("" if x is None else f" input[0]={float(x.ravel()[0])}"))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ok(resp: ferro.Response, what: str) -> dict:
    assert resp.status == 200, f"{what}: {resp.status} {resp.body[:800]!r}"
    return resp.json()


def view_shape(view: dict) -> dict:
    """The parts of a live view a failed change must leave alone (request
    counters move with traffic, so they are left out)."""
    return {
        "name": view["name"],
        "implicit": view["implicit"],
        "live": view["live"],
        "deployments": sorted((d["name"], d["model"], d["version"], d["weight"]) for d in view["deployments"]),
        "mirror": view["mirror"],
        "desired": view["desired"],
    }


def metric_sum(m: ferro.Metrics, name: str, **labels) -> dict[str, float]:
    """{outcome: value} of NAME's series matching LABELS."""
    want = set(labels.items())
    out: dict[str, float] = {}
    for (n, lbl), v in m.items():
        if n == name and want <= set(lbl):
            out[dict(lbl).get("outcome", "")] = out.get(dict(lbl).get("outcome", ""), 0.0) + v
    return out


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "repo"


@pytest.fixture
def events_of():
    """`events_of(server)`: an EventStream on the server, closed at the end."""
    streams: list[ferro.EventStream] = []

    def open_stream(srv) -> ferro.EventStream:
        s = ferro.EventStream(srv.addr)
        streams.append(s)
        return s

    yield open_stream
    for s in streams:
        s.close()


def mlp_files() -> dict[str, Path]:
    return {"1": EXAMPLE_MLP / "model.onnx", "2": MLP_V2 / "model.onnx"}


# --------------------------------------------------------------------------
# 1. zero loss under swaps


def test_zero_loss_under_swaps_and_weight_changes(repo, start_server):
    """8 keep-alive clients stream distinct requests for >= 10 s while the
    deployments are swapped between versions and the weights change: every
    response is 200 with exactly the output of the version it names."""
    assert ferro.register(repo, EXAMPLE_MLP, "mlp") == 1
    assert ferro.register(repo, MLP_V2, "mlp") == 2
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    ok(ferro.put_deployment(a, "ep", "blue", {"model": "mlp", "version": 1}), "PUT blue")
    ok(ferro.put_deployment(a, "ep", "green", {"model": "mlp", "version": 2}), "PUT green")
    view = ok(ferro.set_traffic(a, "ep", {"blue": 50, "green": 50}), "traffic 50/50")
    assert ferro.live_weights(view) == {"blue": 50, "green": 50}

    ops = [
        ("deploy", "blue", 2), ("traffic", {"blue": 90, "green": 10}),
        ("deploy", "green", 1), ("traffic", {"blue": 10, "green": 90}),
        ("deploy", "blue", 1), ("traffic", {"blue": 100, "green": 0}),
        ("deploy", "green", 2), ("traffic", {"blue": 0, "green": 100}),
        ("deploy", "blue", 2), ("traffic", {"blue": 30, "green": 70}),
        ("deploy", "blue", 1), ("traffic", {"blue": 50, "green": 50}),
    ]
    duration = 10.5
    load = Load(a, 8, "/v2/models/ep/infer", seed=1).start()
    load.wait_count(50)
    t0 = time.monotonic()
    op_times = []
    for k, op in enumerate(ops):
        # spread the changes over the run
        target = t0 + (k + 0.5) * duration / (len(ops) + 1)
        while time.monotonic() < target:
            time.sleep(0.01)
        s = time.perf_counter()
        if op[0] == "deploy":
            _, dep, ver = op
            v = ok(ferro.put_deployment(a, "ep", dep, {"model": "mlp", "version": ver}), f"op {k}: {op}")
            assert {d["name"]: d["version"] for d in v["deployments"]}[dep] == ver, (op, v)
        else:
            v = ok(ferro.set_traffic(a, "ep", op[1]), f"op {k}: {op}")
            assert ferro.live_weights(v) == op[1], (op, v)
        op_times.append(time.perf_counter() - s)
    while time.monotonic() < t0 + duration:
        time.sleep(0.05)
    load.stop()

    final = ferro.endpoint_view(a, "ep")
    assert {d["name"]: (d["version"], d["weight"]) for d in final["deployments"]} == {
        "blue": (1, 50), "green": (2, 50)}, final

    pairs = load.all()
    want = expected_by_version([x for x, _ in pairs], mlp_files())
    failures = []
    seen = {}
    for i, (x, r) in enumerate(pairs):
        problem = None
        if r.status != 200:
            problem = "not 200"
        elif r.deployment not in ("blue", "green"):
            problem = "unexpected deployment header"
        elif r.version not in ("1", "2") or r.model_name != "ep":
            problem = "unexpected model_name/model_version"
        elif r.output is None or r.output.shape != (1, 10):
            problem = "bad output"
        elif not np.allclose(r.output[0], want[r.version][i], atol=1e-5):
            other = "2" if r.version == "1" else "1"
            match_other = np.allclose(r.output[0], want[other][i], atol=1e-5)
            problem = f"output is not version {r.version}'s (matches version {other}: {match_other})"
        if problem:
            failures.append(f"{problem}: {describe_reply(x, r)}")
        else:
            seen[(r.deployment, r.version)] = seen.get((r.deployment, r.version), 0) + 1
    ids = [r.rid for _, r in pairs if r.status == 200]
    total = len(pairs)
    print(f"\nswaps under load: {total} requests in {load.elapsed:.1f} s "
          f"({total / load.elapsed:.0f} req/s) over 8 connections, {len(ops)} changes "
          f"(PUT/traffic took {min(op_times) * 1e3:.0f}..{max(op_times) * 1e3:.0f} ms); "
          f"answered by (deployment, version): {dict(sorted(seen.items()))}; failures: {len(failures)}")
    assert not failures, f"{len(failures)} of {total} requests failed, first ones:\n" + "\n".join(failures[:10])
    assert len(set(ids)) == len(ids) == total, "a response carried another request's id"
    assert load.elapsed >= 10.0
    # every swap took effect: both deployments answered with both versions
    assert set(seen) == {("blue", "1"), ("blue", "2"), ("green", "1"), ("green", "2")}, seen


# --------------------------------------------------------------------------
# 2. weights and pins


def test_weighted_routing_and_pins(repo, start_server):
    """70/20/10 over 10,000 unpinned requests; a header pin or /versions/{v}
    always reaches its deployment; an unknown pin is 404 naming them."""
    for v, src in ((1, EXAMPLE_MLP), (2, MLP_V2), (3, EXAMPLE_MLP)):
        assert ferro.register(repo, src, "mlp") == v
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    deps = {"a": 1, "b": 2, "c": 3}
    for d, v in deps.items():
        ok(ferro.put_deployment(a, "ep", d, {"model": "mlp", "version": v}), f"PUT {d}")
    weights = {"a": 70, "b": 20, "c": 10}
    view = ok(ferro.set_traffic(a, "ep", weights), "traffic")
    assert ferro.live_weights(view) == weights

    n_threads, per_thread = 4, 2500
    load = Load(a, n_threads, "/v2/models/ep/infer", seed=2, max_requests=per_thread).start()
    load.join(timeout=180)
    pairs = load.all()
    assert len(pairs) == n_threads * per_thread
    bad = [describe_reply(x, r) for x, r in pairs if r.status != 200]
    assert not bad, f"{len(bad)} unpinned requests failed: {bad[:5]}"
    counts = {d: 0 for d in deps}
    for _, r in pairs:
        assert r.deployment in deps, describe_reply(None, r)
        assert r.version == str(deps[r.deployment]), describe_reply(None, r)
        counts[r.deployment] += 1
    total = len(pairs)
    shares = {d: 100.0 * c / total for d, c in counts.items()}
    print(f"\nweights {weights}: {total} requests in {load.elapsed:.1f} s ({total / load.elapsed:.0f} req/s), "
          f"counts {counts}, shares " + ", ".join(f"{d}={s:.2f}%" for d, s in shares.items()))
    for d, w in weights.items():
        assert abs(shares[d] - w) <= 3.0, f"deployment {d}: {shares[d]:.2f}% of traffic, weight {w}"
    # outputs: v1 and v3 are the same model, v2 the other one
    files = {"1": EXAMPLE_MLP / "model.onnx", "2": MLP_V2 / "model.onnx"}
    sample = pairs[:300]
    want = expected_by_version([x for x, _ in sample], files)
    for i, (x, r) in enumerate(sample):
        v = "2" if r.version == "2" else "1"
        assert np.allclose(r.output[0], want[v][i], atol=1e-5), describe_reply(x, r)

    # pinned by header
    client = Client(a)
    rng = np.random.default_rng(22)
    pinned = {d: 0 for d in deps}
    for d, v in deps.items():
        for i in range(30):
            r = client.infer("/v2/models/ep/infer", rng.standard_normal((1, 64)).astype(np.float32),
                             f"pin-{d}-{i}", {HEADER: d})
            assert r.status == 200, describe_reply(None, r)
            assert r.deployment == d and r.version == str(v), describe_reply(None, r)
            pinned[d] += 1
    # pinned by version in the path
    for d, v in deps.items():
        for i in range(10):
            r = client.infer(f"/v2/models/ep/versions/{v}/infer",
                             rng.standard_normal((1, 64)).astype(np.float32), f"ver-{v}-{i}")
            assert r.status == 200, describe_reply(None, r)
            assert r.deployment == d and r.version == str(v), describe_reply(None, r)
            pinned[d] += 1
    # an unknown pin
    r = client.infer("/v2/models/ep/infer", np.zeros((1, 64), np.float32), "nope", {HEADER: "nope"})
    assert r.status == 404, describe_reply(None, r)
    msg = json.loads(r.body)["error"]
    assert "nope" in msg and all(f'"{d}"' in msg for d in deps), msg
    client.close()

    # the live view's counters agree with what the clients saw
    view = ferro.endpoint_view(a, "ep")
    got = {d["name"]: (d["requests_ok"], d["requests_failed"]) for d in view["deployments"]}
    assert got == {d: (counts[d] + pinned[d], 0) for d in deps}, (got, counts, pinned)


# --------------------------------------------------------------------------
# 3. a version that fails warm-up never takes traffic


def test_failed_warmup_never_receives_traffic(repo, start_server, events_of):
    assert ferro.register(repo, FLAKY, "flaky") == 1
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    events = events_of(srv)
    before = ferro.endpoint_view(a, "flaky")
    assert before["implicit"] and [(d["name"], d["version"]) for d in before["deployments"]] == [("default", 1)]

    # good inputs only: |x| < 1 never trips flaky's input[0] > 100
    load = Load(a, 2, "/v2/models/flaky/infer", seed=3,
                make_input=lambda rng, i: rng.uniform(-1, 1, (1, 64)).astype(np.float32)).start()
    load.wait_count(20)
    assert ferro.register(repo, FLAKY_BADWARMUP, "flaky") == 2
    failed = events.wait_for(
        lambda e: e.get("type") == "io.ferroserve.deployment.failed" and e.get("subject") == "flaky/default",
        timeout=DEADLINE, what="deployment.failed for flaky/default")
    data = failed["data"]
    assert data.get("version") == 2 and data.get("serving") == 1, failed
    assert data.get("error"), failed
    # keep serving across several more polls of the registry
    n = load.count()
    time.sleep(4 * int(POLL_MS) / 1000)
    load.wait_count(n + 20)
    load.stop()

    pairs = load.all()
    want = expected_by_version([x for x, _ in pairs], {"1": FLAKY / "model.onnx"})["1"]
    bad = [describe_reply(x, r) for i, (x, r) in enumerate(pairs)
           if r.status != 200 or r.version != "1" or r.deployment != "default"
           or not np.allclose(r.output[0], want[i], atol=1e-5)]
    n_failed = sum(1 for e in events.snapshot() if e.get("type") == "io.ferroserve.deployment.failed")
    print(f"\nfailed warm-up: {len(pairs)} requests during and after, all on version 1: {not bad}; "
          f"deployment.failed events seen: {n_failed}; error: {data.get('error')!r}")
    assert not bad, f"{len(bad)} of {len(pairs)} requests not answered by version 1: {bad[:5]}"
    assert not [e for e in events.snapshot()
                if e.get("subject") == "flaky/default" and e.get("type") != "io.ferroserve.deployment.failed"
                and (e.get("data") or {}).get("version") == 2], "version 2 was deployed after all"
    after = ferro.endpoint_view(a, "flaky")
    assert view_shape(after) == view_shape(before), (before, after)

    # the audit log has it too
    deadline = time.monotonic() + DEADLINE
    while True:
        rows = [r for r in ferro.audit_log(repo)
                if r[0] == "io.ferroserve.deployment.failed" and r[1] == "flaky/default"]
        if rows:
            break
        assert time.monotonic() < deadline, "deployment.failed never reached the audit log"
        time.sleep(0.2)
    assert rows[0][2]["data"]["version"] == 2 and rows[0][2]["data"]["serving"] == 1, rows[0]

    c = Client(a)
    r = c.infer("/v2/models/flaky/infer", np.full((1, 64), 0.1, np.float32), "after")
    c.close()
    assert r.status == 200 and r.version == "1" and r.deployment == "default", describe_reply(None, r)


def _flaky_with_failed_v2(repo, start_server, events_of):
    """A server on flaky v1 (implicit endpoint "flaky") after flaky-badwarmup
    was registered as v2 and failed its warm-up there."""
    assert ferro.register(repo, FLAKY, "flaky") == 1
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    events = events_of(srv)
    assert ferro.register(repo, FLAKY_BADWARMUP, "flaky") == 2
    events.wait_for(lambda e: e.get("type") == "io.ferroserve.deployment.failed"
                    and e.get("subject") == "flaky/default", timeout=DEADLINE, what="failed warm-up of flaky v2")
    return srv, events


def test_failed_put_on_implicit_endpoint_changes_nothing(repo, start_server, events_of):
    """PUT flaky/canary pinned to the version that failed warm-up: 422, and
    the implicit endpoint keeps serving version 1 exactly as before."""
    srv, _ = _flaky_with_failed_v2(repo, start_server, events_of)
    a = srv.addr
    before = ferro.endpoint_view(a, "flaky")
    assert before["implicit"] and [(d["name"], d["version"]) for d in before["deployments"]] == [("default", 1)]
    # A stream of requests runs across the failed change: none may fail.
    stop = threading.Event()
    seen = []

    def stream():
        c = Client(a)
        i = 0
        while not stop.is_set():
            r = c.infer("/v2/models/flaky/infer", np.full((1, 64), 0.1, np.float32), f"s{i}")
            seen.append((r.status, r.version))
            i += 1
        c.close()

    t = threading.Thread(target=stream)
    t.start()
    try:
        r = ferro.put_deployment(a, "flaky", "canary", {"model": "flaky", "version": 2})
    finally:
        stop.set()
        t.join()
    assert r.status == 422, f"PUT flaky/canary version 2: {r.status} {r.body[:500]!r}"
    assert "warm-up" in r.error_message(), r.body
    assert seen and all(x == (200, "1") for x in seen), [x for x in seen if x != (200, "1")][:5]
    c = Client(a)
    r = c.infer("/v2/models/flaky/infer", np.full((1, 64), 0.1, np.float32), "after-422")
    c.close()
    assert r.status == 200 and r.version == "1" and r.deployment == "default", describe_reply(None, r)
    resp = ferro.admin(a, "GET", "/v2/admin/endpoints/flaky")
    assert resp.status == 200, (resp.status, resp.body[:300])
    assert view_shape(resp.json()) == view_shape(before), (before, resp.json())


def test_put_of_a_version_that_already_failed_is_422(repo, start_server, events_of):
    """A PUT whose version cannot warm up is 422 with nothing changed, also
    the second time it is asked for, and also when that version already
    failed for the deployment as a newly registered version."""
    srv, _ = _flaky_with_failed_v2(repo, start_server, events_of)
    a = srv.addr
    ok(ferro.put_deployment(a, "ep", "blue", {"model": "flaky", "version": 1}), "PUT blue v1")
    before = {e: view_shape(ferro.endpoint_view(a, e)) for e in ("ep", "flaky")}
    for attempt in (1, 2):
        r = ferro.put_deployment(a, "ep", "blue", {"model": "flaky", "version": 2})
        assert r.status == 422, f"PUT ep/blue version 2, attempt {attempt}: {r.status} {r.body[:600]!r}"
        assert view_shape(ferro.endpoint_view(a, "ep")) == before["ep"], f"attempt {attempt}"
    r = ferro.put_deployment(a, "flaky", "default", {"model": "flaky", "version": 2})
    assert r.status == 422, f"PUT flaky/default version 2: {r.status} {r.body[:600]!r}"
    assert view_shape(ferro.endpoint_view(a, "flaky")) == before["flaky"]


# --------------------------------------------------------------------------
# 4. rollouts


def _bad_or_good(rng, i):
    x = rng.uniform(-1, 1, (1, 64)).astype(np.float32)
    if i % 2 == 0:
        x[0, 0] = 1000.0  # fails on flaky, harmless for mlp
    return x


def test_rollout_rolls_back_then_completes(repo, start_server, events_of):
    assert ferro.register(repo, EXAMPLE_MLP, "mlp") == 1
    assert ferro.register(repo, MLP_V2, "mlp") == 2
    assert ferro.register(repo, FLAKY, "flaky") == 1
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    url = f"http://{srv.url}"
    ok(ferro.put_deployment(a, "ep", "blue", {"model": "mlp", "version": 1}), "PUT blue")
    ok(ferro.put_deployment(a, "ep", "canary", {"model": "flaky"}), "PUT canary")
    view = ok(ferro.put_deployment(a, "ep", "green", {"model": "mlp", "version": 2}), "PUT green")
    assert ferro.live_weights(view) == {"blue": 100, "canary": 0, "green": 0}, view
    events = events_of(srv)

    load = Load(a, 4, "/v2/models/ep/infer", seed=4, make_input=_bad_or_good).start()
    load.wait_count(20)

    t = time.monotonic()
    p = ferro.cli("rollout", "ep", "--to", "canary", "--steps", "10,50,100", "--interval", "1s",
                  "--max-error-rate", "5%", "--url", url, timeout=120, check=False)
    t_back = time.monotonic() - t
    assert p.returncode == 1, f"rollout to canary exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    view = ferro.endpoint_view(a, "ep")
    assert ferro.live_weights(view) == {"blue": 100, "canary": 0, "green": 0}, view
    ev = events.wait_for(lambda e: e.get("type") == "io.ferroserve.rollout.rolled_back", timeout=DEADLINE,
                         what="rollout.rolled_back")
    st = ok(ferro.admin(a, "GET", "/v2/admin/endpoints/ep/rollout"), "rollout status")
    assert st["state"] == "rolled_back", st
    print(f"\nrollout to canary: exit {p.returncode} after {t_back:.1f} s; status {st}; "
          f"event data {ev.get('data')}; cli: {(p.stdout + p.stderr).strip()[-400:]!r}")

    t = time.monotonic()
    p = ferro.cli("rollout", "ep", "--to", "green", "--steps", "10,50,100", "--interval", "1s",
                  "--max-error-rate", "5%", "--url", url, timeout=120, check=False)
    t_done = time.monotonic() - t
    assert p.returncode == 0, f"rollout to green exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    view = ferro.endpoint_view(a, "ep")
    assert ferro.live_weights(view) == {"blue": 0, "canary": 0, "green": 100}, view
    events.wait_for(lambda e: e.get("type") == "io.ferroserve.rollout.completed", timeout=DEADLINE,
                    what="rollout.completed")
    st = ok(ferro.admin(a, "GET", "/v2/admin/endpoints/ep/rollout"), "rollout status")
    assert st["state"] == "completed", st
    # some traffic on green at 100%
    load.wait_count(load.count() + 40)
    load.stop()

    pairs = load.all()
    want = expected_by_version([x for x, _ in pairs], mlp_files())
    per = {}
    problems = []
    for i, (x, r) in enumerate(pairs):
        per.setdefault((r.deployment, r.status), 0)
        per[(r.deployment, r.status)] += 1
        if r.deployment in ("blue", "green"):
            v = {"blue": "1", "green": "2"}[r.deployment]
            if r.status != 200 or r.version != v or not np.allclose(r.output[0], want[v][i], atol=1e-5):
                problems.append(describe_reply(x, r))
        elif r.deployment == "canary":
            if x[0, 0] > 100 and r.status == 200:
                problems.append("canary answered a bad input: " + describe_reply(x, r))
        else:
            problems.append("no deployment: " + describe_reply(x, r))
    print(f"rollout to green: exit 0 after {t_done:.1f} s; status {st}; "
          f"responses by (deployment, status): {dict(sorted(per.items(), key=str))}")
    assert not problems, f"{len(problems)} bad responses: {problems[:5]}"
    assert per.get(("canary", 500), 0) > 0, f"canary never took (failing) traffic: {per}"
    assert per.get(("green", 200), 0) > 0, per


# --------------------------------------------------------------------------
# 5. mirroring


def _run_fixed(addr, threads: int, per_thread: int, make_input, seed: int) -> Load:
    load = Load(addr, threads, "/v2/models/ep/infer", make_input=make_input, seed=seed,
                max_requests=per_thread).start()
    load.join(timeout=120)
    return load


def test_mirror_loses_nothing(repo, start_server):
    assert ferro.register(repo, EXAMPLE_MLP, "mlp") == 1
    assert ferro.register(repo, FLAKY, "flaky") == 1
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    ok(ferro.put_deployment(a, "ep", "live", {"model": "mlp", "version": 1}), "PUT live")
    ok(ferro.put_deployment(a, "ep", "shadow", {"model": "flaky"}), "PUT shadow")
    view = ok(ferro.set_traffic(a, "ep", {"live": 100, "shadow": 0},
                                mirror={"deployment": "shadow", "percent": 100}), "traffic + mirror")
    assert view["mirror"] == {"deployment": "shadow", "percent": 100}, view

    threads, per_thread = 4, 100
    n = threads * per_thread
    load = _run_fixed(a, threads, per_thread, _bad_or_good, seed=5)
    pairs = load.all()
    n_bad = sum(1 for x, _ in pairs if x[0, 0] > 100)
    want = expected_by_version([x for x, _ in pairs], {"1": EXAMPLE_MLP / "model.onnx"})["1"]
    problems = [describe_reply(x, r) for i, (x, r) in enumerate(pairs)
                if r.status != 200 or r.deployment != "live" or r.version != "1"
                or not np.allclose(r.output[0], want[i], atol=1e-5)]
    assert not problems, f"{len(problems)} of {n} live responses wrong: {problems[:5]}"
    lat_mirror = [r.latency for _, r in pairs]

    def mirror_counts():
        m = ferro.scrape(a)
        outcomes = metric_sum(m, "ferroserve_mirror_requests_total", endpoint="ep", deployment="shadow")
        dropped = m.value("ferroserve_mirror_dropped_total", endpoint="ep", deployment="shadow")
        return outcomes, dropped

    # every copy ends up answered, failed or counted dropped
    deadline = time.monotonic() + DEADLINE
    last = None
    while True:
        outcomes, dropped = mirror_counts()
        accounted = sum(outcomes.values()) + dropped
        if accounted == n and (outcomes, dropped) == last:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"mirror copies: {outcomes} + dropped {dropped} = {accounted}, sent {n}")
        last = (outcomes, dropped)
        time.sleep(0.3)
    print(f"\nmirror 100% to a flaky shadow: {n} live requests ({n_bad} bad for the shadow); "
          f"copies by outcome {outcomes}, dropped {dropped:.0f}")
    success = outcomes.get("success", 0.0)
    errors = sum(v for k, v in outcomes.items() if k != "success")
    # a bad copy never succeeds; good copies may fail only when batched with a bad one
    assert success <= n - n_bad, outcomes
    assert errors + dropped >= n_bad, (outcomes, dropped, n_bad)
    assert outcomes.get("backend_error", 0.0) > 0, outcomes
    live_ok = ferro.scrape(a).value("ferroserve_requests_total", endpoint="ep", deployment="live", outcome="success")
    assert live_ok == n, live_ok

    # the same load without the mirror: latency for comparison, no copies
    view = ok(ferro.set_traffic(a, "ep", {"live": 100, "shadow": 0}, mirror=None), "mirror off")
    assert view["mirror"] is None, view
    load2 = _run_fixed(a, threads, per_thread, _bad_or_good, seed=5)
    assert all(r.status == 200 for _, r in load2.all())
    lat_plain = [r.latency for _, r in load2.all()]
    outcomes2, dropped2 = mirror_counts()
    assert (outcomes2, dropped2) == (outcomes, dropped), "copies were mirrored after the mirror was removed"
    print(f"live latency with mirror: p50 {percentile(lat_mirror, 50) * 1e3:.2f} ms, "
          f"p99 {percentile(lat_mirror, 99) * 1e3:.2f} ms; without: p50 {percentile(lat_plain, 50) * 1e3:.2f} ms, "
          f"p99 {percentile(lat_plain, 99) * 1e3:.2f} ms")


# --------------------------------------------------------------------------
# 6. draining frees memory

BIG_IN, BIG_OUT = 1024, 16384  # a 64 MiB FP32 weight
MIB = 1024 * 1024

BIG_MANIFEST = """\
name = "big"
description = "MatMul with a 1024x16384 FP32 weight (64 MiB): memory tests"
backend = "onnx"
model = "model.onnx"

[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 1024]

[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 16384]

[batching]
max_batch_size = 4
max_queue_delay_us = 0
preferred_batch_sizes = [2, 4]
max_queue_size = 64
timeout_ms = 30000

[instances]
count = 1
device = "cpu"
intra_op_threads = 1

[tags]
task = "testing"
"""


def make_big_bundle(dst: Path, seed: int) -> np.ndarray:
    """A bundle in DST whose model is y = x @ W with a seeded W; returns W[:, :8]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((BIG_IN, BIG_OUT), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", BIG_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", BIG_OUT])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test_deployments")
    model.ir_version = 8
    dst.mkdir(parents=True)
    onnx.save(model, str(dst / "model.onnx"))
    (dst / "bundle.toml").write_text(BIG_MANIFEST)
    return w[:, :8].copy()


def test_draining_frees_memory(repo, tmp_path, start_server):
    w = {}
    for v, seed in ((1, 101), (2, 202)):
        w[v] = make_big_bundle(tmp_path / f"big{v}", seed)
        assert ferro.register(repo, tmp_path / f"big{v}", "big") == v
        (tmp_path / f"big{v}" / "model.onnx").unlink()  # disk: the repository keeps its copy
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    client = Client(a, timeout=120)
    x = np.random.default_rng(6).uniform(-1, 1, (1, BIG_IN)).astype(np.float32)

    def check(version: int):
        c = client
        c.conn.request("POST", "/v2/models/big/infer",
                       body=infer_body(x, f"big-{version}", "x", binary_outputs=["y"]),
                       headers={"content-type": "application/json"})
        resp = ferro.read_response(c.conn)
        assert resp.status == 200, (resp.status, resp.body[:500])
        assert resp.headers.get(HEADER) == "d", resp.headers
        y = ferro.decode_infer(resp)
        assert y.get_response()["model_version"] == str(version), y.get_response()
        got = y.as_numpy("y")
        assert got.shape == (1, BIG_OUT), got.shape
        np.testing.assert_allclose(got[0, :8], (x @ w[version])[0], rtol=1e-4, atol=1e-3)

    def settle_rss(limit: float | None = None, timeout: float = 20.0) -> tuple[int, list[int]]:
        """Polls RSS until it stops falling (and is under LIMIT if given)."""
        samples = []
        deadline = time.monotonic() + timeout
        while True:
            samples.append(srv.rss_bytes())
            stable = len(samples) >= 5 and max(samples[-5:]) - min(samples[-5:]) < 4 * MIB
            if stable and (limit is None or samples[-1] < limit):
                return samples[-1], samples
            if time.monotonic() > deadline:
                return samples[-1], samples
            time.sleep(0.2)

    # the explicit endpoint replaces the implicit one (which served v2)
    view = ok(ferro.put_deployment(a, "big", "d", {"model": "big", "version": 1}), "PUT d v1")
    assert [(d["name"], d["version"]) for d in view["deployments"]] == [("d", 1)], view
    check(1)
    baseline, _ = settle_rss()
    peak = baseline
    swaps = []
    for k in range(10):
        v = 2 if k % 2 == 0 else 1
        s = time.perf_counter()
        ok(ferro.put_deployment(a, "big", "d", {"model": "big", "version": v}), f"swap {k} to v{v}")
        swaps.append(time.perf_counter() - s)
        check(v)
        peak = max(peak, srv.rss_bytes())
    limit = baseline + 1.5 * 64 * MIB
    final, samples = settle_rss(limit)
    print(f"\ndraining: RSS baseline {baseline / MIB:.0f} MiB (v1 loaded), peak {peak / MIB:.0f} MiB, "
          f"final {final / MIB:.0f} MiB after 10 swaps (limit {limit / MIB:.0f} MiB); "
          f"swap PUTs {min(swaps):.2f}..{max(swaps):.2f} s")
    assert final < limit, (
        f"RSS {final / MIB:.0f} MiB after 10 swaps, baseline {baseline / MIB:.0f} MiB: old versions were "
        f"not freed (last samples {[round(s / MIB) for s in samples[-10:]]})")
    client.close()


# --------------------------------------------------------------------------
# 7. gRPC


def test_grpc_pin_and_endpoint_metadata(repo, start_server):
    import grpc

    assert ferro.register(repo, EXAMPLE_MLP, "mlp") == 1
    assert ferro.register(repo, MLP_V2, "mlp") == 2
    srv = start_server(repo, "--poll-interval-ms", POLL_MS)
    a = srv.addr
    ok(ferro.put_deployment(a, "ep", "blue", {"model": "mlp", "version": 1}), "PUT blue")
    view = ok(ferro.put_deployment(a, "ep", "green", {"model": "mlp", "version": 2}), "PUT green")
    assert ferro.live_weights(view) == {"blue": 100, "green": 0}, view

    x = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    want = {v: run_local(f, x) for v, f in mlp_files().items()}
    client = ferro.grpc_client(srv.grpc_url)
    try:
        inputs = ferro.grpc_inputs("mlp", {"input": x})
        outputs = ferro.grpc_outputs(["probabilities"])
        res = client.infer("ep", inputs, outputs=outputs, headers={HEADER: "green"})
        resp = res.get_response()
        assert resp.model_name == "ep" and resp.model_version == "2", resp
        np.testing.assert_allclose(res.as_numpy("probabilities"), want["2"], atol=1e-5)
        res = client.infer("ep", inputs, outputs=outputs)  # unpinned: blue has all the weight
        assert res.get_response().model_version == "1"
        np.testing.assert_allclose(res.as_numpy("probabilities"), want["1"], atol=1e-5)
        res = client.infer("ep", inputs, model_version="2", outputs=outputs)
        assert res.get_response().model_version == "2"

        meta = client.get_model_metadata("ep")
        assert meta.name == "ep", meta
        assert sorted(meta.versions) == ["1", "2"], meta
        assert [i.name for i in meta.inputs] == ["input"] and [o.name for o in meta.outputs] == ["probabilities"]
    finally:
        client.close()

    # the answering deployment comes back in the response metadata
    with ferro.GrpcStub(srv.grpc_url) as stub:
        req = ferro.infer_request("mlp", {"input": x}, typed=False)
        req.model_name = "ep"
        for pin, version in (("green", "2"), ("blue", "1")):
            response, call = stub.ModelInfer.with_call(req, metadata=[(HEADER, pin)], timeout=60)
            md = dict(call.initial_metadata())
            assert md.get(HEADER) == pin, md
            assert response.model_version == version
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, metadata=[(HEADER, "nope")], timeout=60)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value
        assert "blue" in e.value.details() and "green" in e.value.details(), e.value.details()

"""Graceful shutdown under load: SIGTERM in the middle of continuous traffic
from keep-alive connections. Every request that got an HTTP response must
have got a correct 200; requests refused at connect time or cut before any
response are counted separately (a closing server may do that); the process
must exit with code 0 within a bounded time."""

from __future__ import annotations

import http.client
import threading
import time

import numpy as np

import ferro

THREADS = 8


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.ok_before_signal = 0
        self.bad_status: list[str] = []  # got a response, and it was not a correct 200
        self.refused = 0  # connect() refused: the listener is closed
        self.no_response = 0  # connection reset / closed before a response came
        self.other: list[str] = []


def _load(addr, t, stop, signalled, tally: Tally, work):
    conn = None
    i = 0
    while not stop.is_set():
        model, body, headers, want = work[(t + i) % len(work)]
        i += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection(addr[0], addr[1], timeout=60)
                conn.connect()
        except ConnectionRefusedError:
            with tally.lock:
                tally.refused += 1
            conn = None
            time.sleep(0.01)
            continue
        except OSError as e:
            with tally.lock:
                tally.other.append(f"connect: {type(e).__name__}: {e}")
            conn = None
            time.sleep(0.01)
            continue
        try:
            conn.request("POST", ferro.infer_path(model), body=body, headers=headers)
            resp = ferro.read_response(conn)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                http.client.BadStatusLine, ConnectionAbortedError):
            # the server closed this keep-alive connection before answering:
            # no response was produced for this request
            with tally.lock:
                tally.no_response += 1
            conn.close()
            conn = None
            continue
        except Exception as e:  # a timeout, a truncated response, ...
            with tally.lock:
                tally.other.append(f"request: {type(e).__name__}: {e}")
            conn.close()
            conn = None
            continue
        problem = None
        if resp.status != 200:
            problem = f"{model}: HTTP {resp.status} {resp.body[:300]!r}"
        else:
            try:
                result = ferro.decode_infer(resp)
                for o in ferro.model_ref(model).outputs:
                    ferro.assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"{model}.{o.name}")
            except AssertionError as e:
                problem = f"{model}: wrong answer: {e}"
        with tally.lock:
            if problem:
                tally.bad_status.append(problem)
            else:
                tally.ok += 1
                if not signalled.is_set():
                    tally.ok_before_signal += 1
        if resp.headers.get("connection", "").lower() == "close":
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def test_sigterm_under_load_drains_and_exits_zero(start_server, make_repo):
    repo = make_repo({"mlp": None, "conv": None})
    srv = start_server(repo)
    rng = np.random.default_rng(99)
    work = []
    for k in range(8):
        model = ("mlp", "conv")[k % 2]
        feeds = ferro.random_inputs(rng, model, 1 + k % 3)
        body, headers = ferro.encode_infer(feeds, model, True, True)
        work.append((model, body, headers, ferro.model_ref(model).run(feeds)))

    tally = Tally()
    stop, signalled = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=_load, args=(srv.addr, t, stop, signalled, tally, work), daemon=True)
        for t in range(THREADS)
    ]
    for th in threads:
        th.start()
    # let real traffic flow first
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with tally.lock:
            if tally.ok >= 200 or tally.bad_status or tally.other:
                break
        time.sleep(0.02)

    signalled.set()
    srv.terminate()
    t0 = time.monotonic()
    # readiness must go away once shutdown has started (503, or nobody listening)
    ready_gone = False
    while time.monotonic() - t0 < 30 and not ready_gone:
        try:
            ready_gone = ferro.request(srv.addr, "GET", "/v2/health/ready", timeout=5).status != 200
        except OSError:
            ready_gone = True
        if not ready_gone:
            time.sleep(0.01)
    rc = srv.wait(timeout=30)
    stop.set()
    for th in threads:
        th.join(60)

    summary = (
        f"ok={tally.ok} (before SIGTERM {tally.ok_before_signal}), non-200 responses={len(tally.bad_status)}, "
        f"refused at connect={tally.refused}, closed before a response={tally.no_response}, other={tally.other[:5]}"
    )
    print(summary)
    assert rc == 0, f"exit code {rc}\n{summary}\n{srv.log()}"
    assert tally.ok_before_signal > 0, summary
    assert not tally.bad_status, f"{summary}\nfirst failures: {tally.bad_status[:5]}\n{srv.log(40)}"
    assert not tally.other, summary
    # A keep-alive connection can lose at most the request it was sending when
    # the server closed it, plus one on a connection still in the listen
    # backlog; anything beyond that means accepted requests were dropped.
    assert tally.no_response <= 2 * THREADS, summary
    assert ready_gone, "GET /v2/health/ready still answered 200 30 s after SIGTERM"
    # and nothing listens any more
    try:
        ferro.request(srv.addr, "GET", "/v2/health/live", timeout=5)
        raise AssertionError("the server still answers after exiting")
    except OSError:
        pass


def test_sigterm_when_idle_exits_zero(start_server, make_repo):
    srv = start_server(make_repo({"mlp": None}))
    ferro.check_good_request(srv.addr, "mlp")
    # an idle keep-alive connection must not hold the shutdown up
    conn = http.client.HTTPConnection(*srv.addr, timeout=30)
    conn.request("GET", "/v2/health/live")
    assert ferro.read_response(conn).status == 200
    try:
        assert srv.stop(timeout=30) == 0, srv.log()
    finally:
        conn.close()


def test_sigterm_lets_queued_requests_finish(start_server, make_repo):
    """Requests parked in the batcher's window (a 3 s max_queue_delay and a
    batch that never fills) when SIGTERM arrives are still answered, correctly."""
    srv = start_server(make_repo({"mlp": {"max_queue_delay_us": 3_000_000, "preferred_batch_sizes": []}}))
    n = 4
    rng = np.random.default_rng(5)
    reqs = []
    for _ in range(n):
        feeds = ferro.random_inputs(rng, "mlp", 1)
        body, headers = ferro.encode_infer(feeds, "mlp", True, True)
        reqs.append((body, headers, ferro.model_ref("mlp").run(feeds)))
    results: dict[int, object] = {}

    def send(i):
        try:
            body, headers, _ = reqs[i]
            results[i] = ferro.request(srv.addr, "POST", ferro.infer_path("mlp"), body, headers)
        except Exception as e:
            results[i] = e

    ts = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for th in ts:
        th.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not results:
        if ferro.scrape(srv.addr).value("ferroserve_inflight_requests", model="mlp") == n:
            break
        time.sleep(0.005)
    assert not results, f"answered before the signal: {results}"  # the 3 s window cannot have passed
    srv.terminate()
    for th in ts:
        th.join(60)
    rc = srv.wait(timeout=30)
    assert rc == 0, srv.log()
    for i in range(n):
        r = results.get(i)
        assert isinstance(r, ferro.Response), f"request {i}: {r!r}\n{srv.log(30)}"
        assert r.status == 200, (i, r.status, r.body[:300])
        ferro.assert_tensor("FP32", ferro.decode_infer(r).as_numpy("probabilities"), reqs[i][2]["probabilities"], f"request {i}")


def test_sigterm_with_a_delay_turns_unready_serves_on_then_drains(start_server, make_repo):
    """Kubernetes' order: on SIGTERM readiness turns 503 at once while the
    server goes on accepting new connections and answering for
    --shutdown-delay-s (the endpoints controller and the load balancers
    catch up meanwhile); then it drains what is in flight and exits 0.
    Load runs throughout, from keep-alive connections and from a fresh
    connection per request."""
    delay = 3.0
    srv = start_server(make_repo({"mlp": None}), "--shutdown-delay-s", str(int(delay)), "--metrics-port", "0")
    rng = np.random.default_rng(11)
    work = []
    for k in range(4):
        feeds = ferro.random_inputs(rng, "mlp", 1 + k)
        body, headers = ferro.encode_infer(feeds, "mlp", True, True)
        work.append(("mlp", body, headers, ferro.model_ref("mlp").run(feeds)))
    tally = Tally()
    stop, signalled = threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=_load, args=(srv.addr, t, stop, signalled, tally, work), daemon=True)
        for t in range(4)
    ]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and tally.ok < 100 and not tally.bad_status:
        time.sleep(0.02)

    signalled.set()
    srv.terminate()
    t0 = time.monotonic()
    # readiness flips first: within the delay, and before anything is refused
    ready_status = None
    while time.monotonic() - t0 < delay:
        ready_status = ferro.request(srv.addr, "GET", "/v2/health/ready", timeout=5).status
        if ready_status == 503:
            break
        time.sleep(0.01)
    flipped_at = time.monotonic() - t0
    assert ready_status == 503, f"readiness still {ready_status} {flipped_at:.2f} s after SIGTERM"
    # unready, yet new connections are accepted and answered, and live stays 200
    fresh_ok = 0
    while time.monotonic() - t0 < delay - 1.0:
        model, body, headers, want = work[fresh_ok % len(work)]
        resp = ferro.request(srv.addr, "POST", ferro.infer_path(model), body, headers, timeout=10)
        assert resp.status == 200, (resp.status, resp.body[:200])
        ferro.assert_tensor("FP32", ferro.decode_infer(resp).as_numpy("probabilities"), want["probabilities"], "fresh")
        fresh_ok += 1
    assert ferro.request(srv.addr, "GET", "/v2/health/live", timeout=5).status == 200
    with tally.lock:
        ok_in_window = tally.ok
    rc = srv.wait(timeout=60)
    stop.set()
    for th in threads:
        th.join(60)
    summary = (f"ok={tally.ok}, fresh-connection ok during the delay={fresh_ok}, refused={tally.refused}, "
               f"closed before a response={tally.no_response}, non-200={tally.bad_status[:3]}, other={tally.other[:3]}")
    assert rc == 0, f"exit code {rc}\n{summary}\n{srv.log()}"
    assert fresh_ok > 0, summary
    assert ok_in_window > tally.ok_before_signal, f"keep-alive clients got nothing after SIGTERM: {summary}"
    assert not tally.bad_status and not tally.other, summary
    assert tally.no_response <= 2 * len(threads), summary
    log = srv.log()
    assert "serving on until the delay ends" in log and "shutdown delay over" in log, log

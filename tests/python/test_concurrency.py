"""Many distinct requests at once from many keep-alive connections: every
answer must be ONNX Runtime's answer for that request's own rows (dynamic
batching must never mix or reorder rows), and the server must actually have
batched (fewer backend batches than requests)."""

from __future__ import annotations

import http.client
import threading

import numpy as np

import ferro

THREADS = 16
PER_THREAD = 25
MODELS = ("mlp", "multi_io")


def _plan(seed: int):
    """Per thread, a list of (model, binary, feeds, body, headers, expected)."""
    rng = np.random.default_rng(seed)
    plan = []
    for t in range(THREADS):
        reqs = []
        for i in range(PER_THREAD):
            model = MODELS[(t + i) % 2]
            rows = int(rng.integers(1, 5))
            feeds = ferro.random_inputs(rng, model, rows)
            binary = bool(rng.integers(0, 2))
            body, headers = ferro.encode_infer(feeds, model, binary, binary, request_id=f"t{t}-r{i}")
            reqs.append((model, rows, body, headers, ferro.model_ref(model).run(feeds)))
        plan.append(reqs)
    return plan


def _client(addr, reqs, barrier, results, errors, t):
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=60)
    try:
        for i, (model, _rows, body, headers, _want) in enumerate(reqs):
            barrier.wait()  # every thread sends its i-th request at the same moment
            conn.request("POST", ferro.infer_path(model), body=body, headers=headers)
            results[t].append(ferro.read_response(conn))
    except Exception as e:  # reported by the main thread
        errors.append(f"thread {t}: {type(e).__name__}: {e}")
        barrier.abort()
    finally:
        conn.close()


def test_concurrent_requests_are_answered_with_their_own_rows(server):
    addr = server.addr
    plan = _plan(2024)
    before = ferro.scrape(addr)
    barrier = threading.Barrier(THREADS, timeout=60)
    results = [[] for _ in range(THREADS)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_client, args=(addr, plan[t], barrier, results, errors, t)) for t in range(THREADS)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    assert not any(th.is_alive() for th in threads), "client threads hung"
    assert not errors, "\n".join(errors) + "\n" + server.log(50)

    sent_rows = {m: 0 for m in MODELS}
    sent_reqs = {m: 0 for m in MODELS}
    for t in range(THREADS):
        assert len(results[t]) == PER_THREAD
        for i, ((model, rows, _b, _h, want), resp) in enumerate(zip(plan[t], results[t])):
            what = f"thread {t} request {i} ({model}, {rows} rows)"
            assert resp.status == 200, f"{what}: {resp.status} {resp.body[:300]!r}"
            result = ferro.decode_infer(resp)
            assert result.get_response()["id"] == f"t{t}-r{i}", what
            ref = ferro.model_ref(model)
            for o in ref.outputs:
                ferro.assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"{what} {o.name}")
            sent_rows[model] += rows
            sent_reqs[model] += 1

    after = ferro.scrape(addr)
    report = []
    for model in MODELS:
        lbl = dict(model=model, version="1")
        rows = after.value("ferroserve_batch_size_sum", **lbl) - before.value("ferroserve_batch_size_sum", **lbl)
        batches = after.value("ferroserve_batch_size_count", **lbl) - before.value("ferroserve_batch_size_count", **lbl)
        ok = after.value("ferroserve_requests_total", outcome="success", **lbl) - before.value(
            "ferroserve_requests_total", outcome="success", **lbl
        )
        report.append(f"{model}: {sent_reqs[model]} requests, {rows:.0f} rows in {batches:.0f} batches")
        assert ok == sent_reqs[model], (model, ok, sent_reqs[model])
        # every row went through the backend exactly once
        assert rows == sent_rows[model], (model, rows, sent_rows[model])
        assert batches > 0
    print("; ".join(report))
    total_batches = sum(
        after.value("ferroserve_batch_size_count", model=m, version="1")
        - before.value("ferroserve_batch_size_count", model=m, version="1")
        for m in MODELS
    )
    # dynamic batching happened: some backend runs served several requests
    # (rows per batch > 1 alone would not show it: requests carry 1-4 rows)
    assert total_batches < sum(sent_reqs.values()), "; ".join(report)
    assert sum(sent_rows.values()) / total_batches > 1
    for model in MODELS:
        assert after.value("ferroserve_inflight_requests", model=model) == 0
        assert after.value("ferroserve_queue_depth", model=model, version="1") == 0

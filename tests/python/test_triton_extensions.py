"""Triton's extensions through tritonclient, HTTP and gRPC, on every example
(ferro.MODELS and ferro.PYTHON_MODELS) served by a server of this module's
own, so every request it has answered is one this module sent:

- model configuration (`get_model_config`): values against bundle.toml,
  and the HTTP JSON and the gRPC message identical;
- statistics (`get_inference_statistics`): zero after start-up (warm-up is
  not counted); then requests sent one at a time (each its own batch, so
  the batch sizes are known exactly), then concurrently (batches form as
  they will), and the counts must add up exactly; requests that fail in
  the model count in `fail`, requests refused at validation count nowhere
  (they never reached the model); HTTP and gRPC give identical numbers;
- the repository index (`get_model_repository_index`): every example READY,
  and on a repository of its own an older version and a version that failed
  to load listed UNAVAILABLE with their reasons; `ready` filters.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest

import ferro

ALL_MODELS = ferro.MODELS + ferro.PYTHON_MODELS
PYTHON = ferro.python_interpreter()

TYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16", "FP64": "TYPE_FP64", "BYTES": "TYPE_STRING",
         "INT64": "TYPE_INT64", "INT32": "TYPE_INT32", "INT8": "TYPE_INT8", "UINT8": "TYPE_UINT8",
         "BOOL": "TYPE_BOOL", "INT16": "TYPE_INT16", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
         "UINT64": "TYPE_UINT64"}
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
             "cache_hit", "cache_miss")


@pytest.fixture(scope="module")
def ext_server(tmp_path_factory):
    """Every example bundle on a server of this module's own (python
    bundles run by the project's .venv interpreter)."""
    repo = ferro.make_repo(tmp_path_factory.mktemp("ext") / "repo", {m: None for m in ALL_MODELS})
    srv = ferro.Server(repo, ["--python", str(PYTHON)])
    yield srv
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with code {rc} after SIGTERM\n{srv.log()}"


@pytest.fixture(scope="module")
def http_client(ext_server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(url=ext_server.url, connection_timeout=60, network_timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def grpc_client(ext_server):
    c = ferro.grpc_client(ext_server.grpc_url)
    yield c
    c.close()


def _http_equals_grpc(http_doc, grpc_msg):
    """The HTTP JSON, parsed into the message type tritonclient's own
    protos define, equals the gRPC answer field for field."""
    from google.protobuf import json_format

    parsed = json_format.ParseDict(http_doc, type(grpc_msg)())
    assert parsed == grpc_msg, f"HTTP:\n{json.dumps(http_doc, indent=1)}\ngRPC:\n{grpc_msg}"


# --------------------------------------------------------------------------
# model configuration


@pytest.mark.parametrize("model", ALL_MODELS)
def test_config_matches_bundle_and_grpc(ext_server, http_client, grpc_client, model):
    manifest = ferro.bundle_manifest(model)
    meta = http_client.get_model_metadata(model)
    config = http_client.get_model_config(model)
    b = manifest["batching"]
    batched = b["max_batch_size"] > 0
    assert config["name"] == model
    if manifest["backend"] == "onnx":
        assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime")
    else:
        assert (config["platform"], config["backend"]) == ("", "python")
    assert config["max_batch_size"] == b["max_batch_size"]
    assert config["default_model_filename"] == manifest["model"]
    # The served signature (what metadata says; a raw-style script's is
    # "raw" in, "result" out), less the batch dim, Triton's type names.
    for section, key in (("inputs", "input"), ("outputs", "output")):
        got = {t["name"]: t for t in config[key]}
        assert list(got) == [t["name"] for t in meta[section]], (model, config[key])
        for t in meta[section]:
            assert got[t["name"]]["data_type"] == TYPES[t["datatype"]], (model, got[t["name"]])
            assert got[t["name"]]["dims"] == (t["shape"][1:] if batched else t["shape"]), (model, got[t["name"]])
        for t in manifest.get(section, []):
            assert got[t["name"]]["dims"] == (t["shape"][1:] if batched else t["shape"])
            assert got[t["name"]].get("label_filename", "") == t.get("labels", "")
    group = config["instance_group"]
    assert [(g["kind"], g["count"]) for g in group] == [("KIND_CPU", manifest["instances"]["count"])]
    # An implicit endpoint serves the newest registered version.
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    if batched:
        d = config["dynamic_batching"]
        assert d["preferred_batch_size"] == b.get("preferred_batch_sizes", [])
        assert d["max_queue_delay_microseconds"] == b.get("max_queue_delay_us", 0)
        assert d["default_queue_policy"]["max_queue_size"] == b["max_queue_size"]
        assert d["default_queue_policy"]["default_timeout_microseconds"] == b["timeout_ms"] * 1000
    else:
        assert "dynamic_batching" not in config
    assert http_client.get_model_config(model, model_version="1") == config

    # gRPC: the same configuration, field for field.
    reply = grpc_client.get_model_config(model)
    _http_equals_grpc(config, reply.config)
    assert grpc_client.get_model_config(model, model_version="1") == reply
    as_json = grpc_client.get_model_config(model, as_json=True)["config"]
    assert as_json["name"] == model and as_json["max_batch_size"] == b["max_batch_size"]


def test_config_of_unknown_model_or_version(ext_server, grpc_client):
    from tritonclient.utils import InferenceServerException

    for path, needle in (("/v2/models/nope/config", "unknown model \"nope\""),
                         ("/v2/models/mlp/versions/9/config", "no version \"9\"")):
        resp = ferro.request(ext_server.addr, "GET", path)
        assert resp.status == 404 and needle in resp.error_message(), (path, resp)
    for name, version, needle in (("nope", "", "unknown model"), ("mlp", "9", "no version \"9\"")):
        with pytest.raises(InferenceServerException) as e:
            grpc_client.get_model_config(name, model_version=version)
        assert ferro.grpc_code_name(e.value) == "NOT_FOUND" and needle in e.value.message(), e.value


def test_extensions_are_listed(ext_server, http_client, grpc_client):
    http_ext = http_client.get_server_metadata()["extensions"]
    grpc_ext = list(grpc_client.get_server_metadata().extensions)
    assert sorted(http_ext) == sorted(grpc_ext)
    assert {"model_configuration", "statistics"} <= set(http_ext), http_ext
    # only the index of the repository extension exists, so it is not claimed
    assert "model_repository" not in http_ext


# --------------------------------------------------------------------------
# statistics

def _send(addr, model: str, rows: int, seed: int, use_grpc_url: str | None = None) -> int:
    """One request of ROWS rows (iris: its raw /score call is one row);
    returns the HTTP status or 200 for a gRPC success."""
    rng = np.random.default_rng(seed)
    if model == "iris":
        body = json.dumps({"data": rng.uniform(0, 8, (rows, 4)).round(2).tolist()}).encode()
        return ferro.request(addr, "POST", "/v2/models/iris/score", body,
                             {"Content-Type": "application/json"}).status
    if model == "text_stats":
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        body, headers = ferro.encode_tensors([("values", "FP32", x)], ["normalized", "summary"], binary=True)
        return ferro.request(addr, "POST", "/v2/models/text_stats/infer", body, headers).status
    feeds = ferro.random_inputs(rng, model, rows)
    if use_grpc_url:
        with ferro.GrpcStub(use_grpc_url) as stub:
            stub.ModelInfer(ferro.infer_request(model, feeds, typed=False), timeout=60)
        return 200
    body, headers = ferro.encode_infer(feeds, model, binary_in=True, binary_out=True)
    return ferro.request(addr, "POST", ferro.infer_path(model), body, headers).status


def _rows(model: str, rows: int) -> int:
    """Batch rows a request of ROWS rows becomes (iris: always 1)."""
    return 1 if model == "iris" else rows


def _stats_both(http_client, grpc_client, model: str | None = None, version: str = ""):
    """(HTTP JSON, gRPC message), checked identical."""
    doc = http_client.get_inference_statistics(model or "", model_version=version)
    msg = grpc_client.get_inference_statistics(model or "", model_version=version)
    _http_equals_grpc(doc, msg)
    return doc, msg


def _one(doc, model):
    entries = [m for m in doc["model_stats"] if m["name"] == model]
    assert len(entries) == 1 and entries[0]["version"] == "1", doc
    return entries[0]


def _check_consistent(s: dict, model: str):
    """The invariants of any statistics entry."""
    i = s["inference_stats"]
    batches = s["batch_stats"]
    assert s["execution_count"] == sum(b["compute_infer"]["count"] for b in batches), (model, s)
    assert s["inference_count"] == sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches), (model, s)
    for b in batches:
        assert b["compute_input"]["count"] == b["compute_infer"]["count"] == b["compute_output"]["count"], b
    for k in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert i[k]["count"] == i["success"]["count"], (model, k, i)
    assert i["cache_hit"] == i["cache_miss"] == {"count": 0, "ns": 0}
    if i["success"]["count"]:
        for k in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            assert i[k]["ns"] > 0, (model, k, i)
        staged = sum(i[k]["ns"] for k in ("queue", "compute_input", "compute_infer", "compute_output"))
        assert staged <= i["success"]["ns"], (model, i)
    # each batch is counted once in batch_stats, each request in inference_stats
    assert sum(b["compute_infer"]["ns"] for b in batches) <= i["compute_infer"]["ns"], (model, s)


def test_statistics_start_at_zero(ext_server, http_client, grpc_client):
    """Warm-up ran at start-up (zeros through the real path) but clients
    sent nothing yet: every model is all zero."""
    doc, _ = _stats_both(http_client, grpc_client)
    assert sorted(m["name"] for m in doc["model_stats"]) == sorted(ALL_MODELS)
    for m in doc["model_stats"]:
        assert m["version"] == "1"
        assert (m["last_inference"], m["inference_count"], m["execution_count"]) == (0, 0, 0), m
        assert m["batch_stats"] == []
        assert all(m["inference_stats"][k] == {"count": 0, "ns": 0} for k in DURATIONS), m


@pytest.mark.parametrize("model", ALL_MODELS)
def test_statistics_add_up(ext_server, http_client, grpc_client, model):
    addr, grpc_url = ext_server.addr, ext_server.grpc_url
    before, _ = _stats_both(http_client, grpc_client, model)
    base = _one(before, model)
    t0 = math.floor(time.time() * 1000)

    # 1. One at a time: each request is a batch of its own.
    plan = [1, 2, 3, 1, 2, 1]
    for k, rows in enumerate(plan):
        via_grpc = grpc_url if (model in ferro.MODELS and k % 2) else None
        assert _send(addr, model, rows, seed=k, use_grpc_url=via_grpc) == 200
    doc, _ = _stats_both(http_client, grpc_client, model)
    s = _one(doc, model)
    _check_consistent(s, model)
    seq_rows = [_rows(model, r) for r in plan]
    i = s["inference_stats"]
    assert i["success"]["count"] - base["inference_stats"]["success"]["count"] == len(plan)
    assert s["execution_count"] - base["execution_count"] == len(plan)
    assert s["inference_count"] - base["inference_count"] == sum(seq_rows)
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]}
    base_sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in base["batch_stats"]}
    want = {r: seq_rows.count(r) for r in set(seq_rows)}
    assert {k: sizes.get(k, 0) - base_sizes.get(k, 0) for k in set(sizes) | set(base_sizes)} == \
        {k: want.get(k, 0) for k in set(sizes) | set(base_sizes)}, (model, s["batch_stats"])
    assert i["fail"] == base["inference_stats"]["fail"]

    # 2. Concurrently: batches form as they will, but everything adds up.
    threads, per_thread = 6, 5
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(t):
        for j in range(per_thread):
            st = _send(addr, model, 1 + (t + j) % 2, seed=100 + t * 10 + j)
            with lock:
                statuses.append(st)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert statuses == [200] * (threads * per_thread), statuses
    conc_rows = sum(_rows(model, 1 + (t + j) % 2) for t in range(threads) for j in range(per_thread))
    t1 = math.ceil(time.time() * 1000)
    doc, msg = _stats_both(http_client, grpc_client, model)
    s = _one(doc, model)
    _check_consistent(s, model)
    n_requests = len(plan) + threads * per_thread
    i = s["inference_stats"]
    assert i["success"]["count"] - base["inference_stats"]["success"]["count"] == n_requests
    assert s["inference_count"] - base["inference_count"] == sum(seq_rows) + conc_rows
    executed = s["execution_count"] - base["execution_count"]
    assert len(plan) < executed <= n_requests, (model, executed)
    assert t0 <= s["last_inference"] <= t1, (t0, s["last_inference"], t1)
    assert int(msg.model_stats[0].last_inference) == s["last_inference"]

    # The versioned route and the all-models list carry the same entry.
    versioned, _ = _stats_both(http_client, grpc_client, model, "1")
    assert versioned == doc
    everything, _ = _stats_both(http_client, grpc_client)
    assert _one(everything, model) == s
    print(f"\n{model}: {n_requests} requests, {s['inference_count'] - base['inference_count']} rows in "
          f"{executed} batches; batch sizes {sorted((b['batch_size'], b['compute_infer']['count']) for b in s['batch_stats'])}")


def test_failures_reaching_the_model_count_in_fail(ext_server, http_client, grpc_client):
    """multi_io's backend fails on an index outside 0..7: that request
    reached the model and counts in fail (and in no batch); a request with
    a wrong shape is refused at validation and counts nowhere."""
    addr = ext_server.addr
    before = _one(_stats_both(http_client, grpc_client, "multi_io")[0], "multi_io")
    bad_index = {"x": np.zeros((1, 4), np.float32), "index": np.array([[99]], np.int64)}
    body, headers = ferro.encode_infer(bad_index, "multi_io", binary_in=True, binary_out=True)
    t0 = math.floor(time.time() * 1000)
    r = ferro.request(addr, "POST", ferro.infer_path("multi_io"), body, headers)
    assert r.status == 500, r
    bad_shape = {"x": np.zeros((1, 5), np.float32), "index": np.zeros((1, 1), np.int64)}
    body, headers = ferro.encode_infer(bad_shape, "multi_io", binary_in=True, binary_out=True)
    r = ferro.request(addr, "POST", ferro.infer_path("multi_io"), body, headers)
    assert r.status == 400, r
    with ferro.GrpcStub(ext_server.grpc_url) as stub:
        import grpc

        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(ferro.infer_request("multi_io", bad_index, typed=False), timeout=60)
        assert e.value.code() == grpc.StatusCode.INTERNAL
    after = _one(_stats_both(http_client, grpc_client, "multi_io")[0], "multi_io")
    _check_consistent(after, "multi_io")
    fail, fail0 = after["inference_stats"]["fail"], before["inference_stats"]["fail"]
    assert fail["count"] - fail0["count"] == 2, (before, after)
    assert fail["ns"] > fail0["ns"]
    for k in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][k] == before["inference_stats"][k], k
    assert (after["execution_count"], after["inference_count"], after["batch_stats"]) == \
        (before["execution_count"], before["inference_count"], before["batch_stats"])
    assert after["last_inference"] >= t0
    ferro.check_good_request(addr, "multi_io")


def test_statistics_of_unknown_model_or_version(ext_server, grpc_client):
    from tritonclient.utils import InferenceServerException

    for path, needle in (("/v2/models/nope/stats", "unknown model \"nope\""),
                         ("/v2/models/mlp/versions/7/stats", "no version \"7\"")):
        resp = ferro.request(ext_server.addr, "GET", path)
        assert resp.status == 404 and needle in resp.error_message(), (path, resp)
    resp = ferro.request(ext_server.addr, "POST", "/v2/models/stats")
    assert resp.status == 405, resp
    for name, version in (("nope", ""), ("mlp", "7")):
        with pytest.raises(InferenceServerException) as e:
            grpc_client.get_inference_statistics(name, model_version=version)
        assert ferro.grpc_code_name(e.value) == "NOT_FOUND", e.value


# --------------------------------------------------------------------------
# repository index


def test_index_lists_every_example_ready(ext_server, http_client, grpc_client):
    doc = http_client.get_model_repository_index()
    assert doc == [{"name": m, "version": "1", "state": "READY"} for m in sorted(ALL_MODELS)], doc
    as_json = grpc_client.get_model_repository_index(as_json=True)
    assert as_json == {"models": doc}
    msg = grpc_client.get_model_repository_index()
    _http_equals_grpc({"models": doc}, msg)
    for body in (b"", b"{}", b'{"ready": false}', b'{"ready": true}'):
        r = ferro.request(ext_server.addr, "POST", "/v2/repository/index", body,
                          {"Content-Type": "application/json"})
        assert r.status == 200 and r.json() == doc, (body, r)
    for body, needle in ((b"[1]", "JSON object"), (b'{"ready": 1}', '"ready" must be true or false'),
                         (b"{", "could not parse")):
        r = ferro.request(ext_server.addr, "POST", "/v2/repository/index", body,
                          {"Content-Type": "application/json"})
        assert r.status == 400 and needle in r.error_message(), (body, r)
    r = ferro.request(ext_server.addr, "GET", "/v2/repository/index")
    assert r.status == 405, r


def test_index_states_and_reasons(tmp_path, start_server):
    """mlp with versions 1 and 2 (2 served), flaky v1 served and v2 failing
    its warm-up after start: the older and the failed version are
    UNAVAILABLE with their reasons; `ready` lists only what is READY."""
    import tritonclient.http as httpclient
    from tritonclient.grpc import service_pb2

    bundles = ferro.REPO_ROOT / "examples" / "bundles"
    flaky, flaky_bad = bundles / "flaky", bundles / "flaky-badwarmup"
    if not (flaky / "model.onnx").is_file() or not (flaky_bad / "model.onnx").is_file():
        pytest.skip("examples/bundles not generated (run examples/generate.py)")
    repo = tmp_path / "repo"
    ferro.ensure_examples()
    assert ferro.register(repo, ferro.EXAMPLES / "mlp" / "1", "mlp") == 1
    assert ferro.register(repo, ferro.EXAMPLES / "mlp" / "1", "mlp") == 2
    assert ferro.register(repo, flaky, "flaky") == 1
    srv = start_server(repo, "--poll-interval-ms", "300")
    events = ferro.EventStream(srv.addr)
    try:
        assert ferro.register(repo, flaky_bad, "flaky") == 2
        events.wait_for(lambda e: e.get("type") == "io.ferroserve.deployment.failed"
                        and e.get("subject") == "flaky/default", timeout=60, what="flaky v2 failing")
    finally:
        events.close()
    client = httpclient.InferenceServerClient(url=srv.url, connection_timeout=60, network_timeout=60)
    try:
        doc = client.get_model_repository_index()
    finally:
        client.close()
    rows = [(m["name"], m["version"], m["state"]) for m in doc]
    assert rows == [("flaky", "1", "READY"), ("flaky", "2", "UNAVAILABLE"),
                    ("mlp", "1", "UNAVAILABLE"), ("mlp", "2", "READY")], doc
    reasons = {(m["name"], m["version"]): m.get("reason") for m in doc}
    assert reasons[("mlp", "1")] == 'not served: "mlp" serves version 2', doc
    assert "flaky/default failed to load it" in reasons[("flaky", "2")], doc
    assert reasons[("flaky", "1")] is None and reasons[("mlp", "2")] is None
    with ferro.GrpcStub(srv.grpc_url) as stub:
        msg = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=60)
        ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=60)
    _http_equals_grpc({"models": doc}, msg)
    only_ready = ferro.post_json(srv.addr, "/v2/repository/index", {"ready": True}).json()
    assert only_ready == [m for m in doc if m["state"] == "READY"], only_ready
    _http_equals_grpc({"models": only_ready}, ready)

"""Triton model repositories served as they are, and `ferroserve import-triton`.

The test writes a Triton-style repository (`DIR/NAME/config.pbtxt`,
`DIR/NAME/N/model.onnx`) from the example ONNX models, with several
config.pbtxt variants:

- `mlp_nobatch`: max_batch_size 0, the batch dimension written in dims;
- `conv_dyn`: dynamic batching with preferred sizes and a queue policy, two
  CPU instances, and two harmless settings that are ignored with a warning
  (`model_warmup`, `optimization.graph`);
- `mlp_versions`: three versions (three different models), `version_policy
  specific [1, 3]`, a label file in the model folder;
- `mlp_latest2`: the same three versions with `latest { num_versions: 2 }`;
- `words`: TYPE_STRING in and out;
- `multi_io`: a ferroserve bundle (bundle.toml) in the same repository.

It is served with `ferroserve serve --repo DIR` and called over HTTP and gRPC
with tritonclient; every answer is compared with ONNX Runtime run here on
the same model file. The versions a policy selects are reachable at
`/versions/N`, the unversioned name answers with the newest of them, and
the others are not served (404 / NOT_FOUND). A configuration with a setting
ferroserve does not support stops the server at start-up (as a broken
bundle does, and as Triton does by default) with an error naming the
setting, its path and the config file. Then `import-triton` registers the
repository into a new ferroserve repository, and serving that gives the same
answers with the same version numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import ferro

MLP_V2 = ferro.REPO_ROOT / "examples" / "bundles" / "mlp-v2" / "model.onnx"

pytestmark = pytest.mark.skipif(not MLP_V2.is_file(), reason="examples/bundles not generated (run examples/generate.py)")

CONFIGS = {
    "mlp_nobatch": """
# no batching: the batch dimension is part of dims
name: "mlp_nobatch"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "input", data_type: TYPE_FP32, dims: [ -1, 64 ] } ]
output [ { name: "probabilities", data_type: TYPE_FP32, dims: [ -1, 10 ] } ]
""",
    "conv_dyn": """
name: "conv_dyn"
backend: "onnxruntime"
max_batch_size: 16
input [
  {
    name: "image"
    data_type: TYPE_FP32
    format: FORMAT_NONE
    dims: [ 3, 32, 32 ]
  }
]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2000
  default_queue_policy {
    timeout_action: REJECT
    default_timeout_microseconds: 20000000
    allow_timeout_override: true
    max_queue_size: 64
  }
}
instance_group [ { count: 1, kind: KIND_CPU }, { count: 1, kind: KIND_AUTO } ]
optimization { graph: { level: 1 } }
model_warmup [
  { name: "zeros" batch_size: 1 inputs { key: "image" value: { data_type: TYPE_FP32 dims: [ 3, 32, 32 ] zero_data: true } } }
]
""",
    "mlp_versions": """
name: "mlp_versions"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [ { name: "input" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
version_policy: { specific: { versions: [ 1, 3 ] } }
""",
    "mlp_latest2": """
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] } ]
version_policy { latest { num_versions: 2 } }
""",
    "words": """
name: "words"
backend: "onnxruntime"
max_batch_size: 64
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "label_id" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "echo" data_type: TYPE_STRING dims: [ 1 ] }
]
""",
}

# (name, config, the setting's path as the error names it, words of the reason)
UNSUPPORTED = [
    (
        "reshaped",
        """platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 64 ] reshape: { shape: [ 8, 8 ] } } ]
""",
        "input[0].reshape",
        "not supported (line 3)",
    ),
    (
        "stateful",
        """platform: "onnxruntime_onnx"
max_batch_size: 8
sequence_batching { }
""",
        "sequence_batching",
        "stateful",
    ),
    (
        "on_gpu",
        """platform: "onnxruntime_onnx"
max_batch_size: 8
instance_group [ { count: 1 kind: KIND_GPU } ]
""",
        "instance_group[0].kind",
        "KIND_GPU is not supported",
    ),
    (
        "tensorrt",
        """platform: "onnxruntime_onnx"
max_batch_size: 8
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }
""",
        "optimization.execution_accelerators.gpu_execution_accelerator[0]",
        "GPU execution providers",
    ),
]


# --------------------------------------------------------------------------
# the repository


def scaled_mlp(dst: Path, factor: float):
    """The mlp model with its first weight matrix scaled: a third model with
    the same signature and other answers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(ferro.EXAMPLES / "mlp" / "1" / "model.onnx"))
    init = next(i for i in model.graph.initializer if len(i.dims) == 2)
    arr = numpy_helper.to_array(init) * np.float32(factor)
    init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(model, str(dst))


def write_triton_repo(root: Path) -> Path:
    ferro.ensure_examples()
    ex = ferro.EXAMPLES
    for name, config in CONFIGS.items():
        (root / name).mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    for name, src in [("mlp_nobatch", "mlp"), ("conv_dyn", "conv"), ("words", "strings")]:
        (root / name / "1").mkdir()
        shutil.copy(ex / src / "1" / "model.onnx", root / name / "1" / "model.onnx")
    for name in ("mlp_versions", "mlp_latest2"):
        for v in (1, 2, 3):
            (root / name / str(v)).mkdir()
        shutil.copy(ex / "mlp" / "1" / "model.onnx", root / name / "1" / "model.onnx")
        shutil.copy(MLP_V2, root / name / "2" / "model.onnx")
        scaled_mlp(root / name / "3" / "model.onnx", 0.5)
    # Triton reads label files from the model folder, not the version folder.
    shutil.copy(ex / "mlp" / "1" / "labels.txt", root / "mlp_versions" / "labels.txt")
    # A ferroserve bundle beside the Triton models.
    shutil.copytree(ex / "multi_io" / "1", root / "multi_io" / "1")
    return root


@pytest.fixture(scope="module")
def triton_dir(tmp_path_factory) -> Path:
    return write_triton_repo(tmp_path_factory.mktemp("triton") / "models")


@pytest.fixture(scope="module")
def served(triton_dir):
    srv = ferro.Server(triton_dir)
    yield srv
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with code {rc} after SIGTERM\n{srv.log()}"


_SESSIONS: dict[str, object] = {}
_LOCK = threading.Lock()


def ort_run(model_file: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    with _LOCK:
        key = str(model_file)
        if key not in _SESSIONS:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            _SESSIONS[key] = ort.InferenceSession(key, opts, providers=["CPUExecutionProvider"])
        sess = _SESSIONS[key]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))


def datatype(arr: np.ndarray) -> str:
    if arr.dtype == np.float32:
        return "FP32"
    if arr.dtype == np.int64:
        return "INT64"
    if arr.dtype == np.object_:
        return "BYTES"
    raise AssertionError(arr.dtype)


def http_infer(url: str, model: str, feeds: dict[str, np.ndarray], version: str = "", binary: bool = True, outputs=None):
    client = httpclient.InferenceServerClient(url=url, connection_timeout=60, network_timeout=60)
    try:
        inputs = []
        for name, arr in feeds.items():
            i = httpclient.InferInput(name, list(arr.shape), datatype(arr))
            i.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(i)
        return client.infer(model, inputs, model_version=version, outputs=outputs)
    finally:
        client.close()


def grpc_infer(url: str, model: str, feeds: dict[str, np.ndarray], version: str = ""):
    client = grpcclient.InferenceServerClient(url=url)
    try:
        inputs = []
        for name, arr in feeds.items():
            i = grpcclient.InferInput(name, list(arr.shape), datatype(arr))
            i.set_data_from_numpy(arr)
            inputs.append(i)
        return client.infer(model, inputs, model_version=version)
    finally:
        client.close()


def feeds_for(model: str, rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model.startswith("mlp"):
        return {"input": rng.standard_normal((rows, 64)).astype(np.float32)}
    if model == "conv_dyn":
        return {"image": rng.random((rows, 3, 32, 32), dtype=np.float32)}
    if model == "words":
        words = [ferro.WORDS[i] for i in rng.integers(0, len(ferro.WORDS), size=rows)]
        return {"text": np.array(words, dtype=np.object_).reshape(rows, 1)}
    if model == "multi_io":
        return {
            "x": rng.standard_normal((rows, 4)).astype(np.float32),
            "index": rng.integers(0, 8, size=(rows, 1), dtype=np.int64),
        }
    raise AssertionError(model)


def model_file(repo: Path, model: str, version: int) -> Path:
    return repo / model / str(version) / "model.onnx"


def check_answer(result, want: dict[str, np.ndarray], what: str):
    for name, w in want.items():
        ferro.assert_tensor(datatype(w), result.as_numpy(name), w, f"{what}: {name}")


# (model, version asked ("" = unversioned), version that must answer)
SERVED = [
    ("mlp_nobatch", "", 1),
    ("conv_dyn", "", 1),
    ("words", "", 1),
    ("multi_io", "", 1),
    ("mlp_versions", "", 3),
    ("mlp_versions", "1", 1),
    ("mlp_versions", "3", 3),
    ("mlp_latest2", "", 3),
    ("mlp_latest2", "2", 2),
    ("mlp_latest2", "3", 3),
]
NOT_SERVED = [("mlp_versions", "2"), ("mlp_latest2", "1"), ("conv_dyn", "2")]


def check_serves_like_triton(srv: ferro.Server, models_dir: Path):
    """Every SERVED (model, version) answers as ONNX Runtime does on that
    version's model file, over HTTP (binary and JSON) and gRPC; every
    NOT_SERVED one is 404 / NOT_FOUND."""
    for i, (model, asked, answering) in enumerate(SERVED):
        feeds = feeds_for(model, rows=3, seed=100 + i)
        want = ort_run(model_file(models_dir, model, answering), feeds)
        what = f"{model} version {asked or '(newest)'}"
        for binary in (True, False):
            r = http_infer(srv.url, model, feeds, asked, binary)
            assert r.get_response()["model_version"] == str(answering), (what, r.get_response())
            check_answer(r, want, f"HTTP {what}")
        g = grpc_infer(srv.grpc_url, model, feeds, asked)
        assert g.get_response().model_version == str(answering), what
        check_answer(g, want, f"gRPC {what}")
    for model, version in NOT_SERVED:
        feeds = feeds_for(model, rows=1, seed=1)
        resp = ferro.post_json(srv.addr, ferro.infer_path(model, version), json_request(feeds))
        assert resp.status == 404, (model, version, resp.status, resp.body[:300])
        assert f'"{version}"' in resp.error_message(), resp.body
        with pytest.raises(InferenceServerException) as e:
            grpc_infer(srv.grpc_url, model, feeds, version)
        assert e.value.status() == "StatusCode.NOT_FOUND", e.value
    # Metadata lists exactly the selected versions.
    for model, versions in [("mlp_versions", ["1", "3"]), ("mlp_latest2", ["2", "3"]), ("mlp_nobatch", ["1"])]:
        meta = ferro.request(srv.addr, "GET", f"/v2/models/{model}").json()
        assert meta["versions"] == versions, meta


def json_request(feeds: dict[str, np.ndarray]) -> dict:
    return {
        "inputs": [
            {"name": n, "datatype": datatype(a), "shape": list(a.shape), "data": a.reshape(-1).tolist()}
            for n, a in feeds.items()
        ]
    }


# --------------------------------------------------------------------------
# serving a Triton repository as it is


def test_models_versions_and_answers_as_triton(served, triton_dir):
    check_serves_like_triton(served, triton_dir)


def test_no_batching_takes_the_batch_dimension_from_dims(served, triton_dir):
    meta = ferro.request(served.addr, "GET", "/v2/models/mlp_nobatch").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], meta
    # No batching: any number of rows in one request, run alone.
    feeds = feeds_for("mlp_nobatch", rows=50, seed=5)
    want = ort_run(model_file(triton_dir, "mlp_nobatch", 1), feeds)
    check_answer(http_infer(served.url, "mlp_nobatch", feeds), want, "50 rows")
    view = ferro.request(served.addr, "GET", "/v2/admin/endpoints/mlp_nobatch").json()
    eff = view["deployments"][0]["effective"]
    assert eff["max_batch_size"] == 0 and eff["max_queue_delay_us"] == 0, view


def test_dynamic_batching_settings_and_concurrent_requests(served, triton_dir):
    view = ferro.request(served.addr, "GET", "/v2/admin/endpoints/conv_dyn").json()
    eff = view["deployments"][0]["effective"]
    # max_batch_size, the queue delay, and both instance groups' counts added up
    assert (eff["max_batch_size"], eff["max_queue_delay_us"], eff["instances"]) == (16, 2000, 2), view
    ref = model_file(triton_dir, "conv_dyn", 1)

    def one(i):
        feeds = feeds_for("conv_dyn", rows=1 + i % 3, seed=1000 + i)
        body, headers = ferro.encode_infer(feeds, "conv", True, True)
        resp = ferro.request(served.addr, "POST", ferro.infer_path("conv_dyn"), body, headers)
        assert resp.status == 200, resp.body[:300]
        got = ferro.decode_infer(resp).as_numpy("logits")
        ferro.assert_tensor("FP32", got, ort_run(ref, feeds)["logits"], f"request {i}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(64)))
    # A request above max_batch_size is refused, naming the limit.
    feeds = feeds_for("conv_dyn", rows=17, seed=3)
    resp = ferro.post_json(served.addr, ferro.infer_path("conv_dyn"), json_request(feeds))
    assert resp.status == 400 and "max_batch_size 16" in resp.error_message(), resp.body[:300]


def test_labels_from_the_model_folder(served, triton_dir):
    feeds = feeds_for("mlp_versions", rows=2, seed=77)
    want = ort_run(model_file(triton_dir, "mlp_versions", 1), feeds)["probabilities"]
    labels = (triton_dir / "mlp_versions" / "labels.txt").read_text().splitlines()
    out = httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=2)
    r = http_infer(served.url, "mlp_versions", feeds, "1", outputs=[out])
    got = [x.decode() if isinstance(x, bytes) else str(x) for x in r.as_numpy("probabilities").reshape(-1)]
    for row in range(2):
        top = np.argsort(-want[row], kind="stable")[:2]
        assert [s.split(":", 2)[1:] for s in got[2 * row: 2 * row + 2]] == [[str(i), labels[i]] for i in top], got


def test_ignored_settings_are_warned_about(served):
    log = served.log(last=100000)
    for path in ("model_warmup[0]", "optimization.graph"):
        line = next((l for l in log.splitlines() if f"Triton setting {path} ignored" in l), None)
        assert line is not None, f"no warning for {path}\n{log[-3000:]}"
        assert "WARN" in line and "conv_dyn/config.pbtxt" in line, line
    # FORMAT_NONE and the queue policy are not warnings.
    assert "input[0].format" not in log and "default_queue_policy" not in log


def test_health_and_readiness_per_version(served):
    client = httpclient.InferenceServerClient(url=served.url)
    try:
        assert client.is_model_ready("mlp_versions", "1")
        assert client.is_model_ready("mlp_versions", "3")
        assert not client.is_model_ready("mlp_versions", "2")
    finally:
        client.close()


def test_a_changed_version_policy_applies_while_serving(tmp_path, start_server):
    """config.pbtxt is read again at each poll of the registry: a new policy
    serves its versions without a restart; a config that does not read
    (half-edited) leaves the served versions as they were."""
    import time

    root = write_triton_repo(tmp_path / "models")
    srv = start_server(root, "--poll-interval-ms", "100")
    versions = lambda: ferro.request(srv.addr, "GET", "/v2/models/mlp_versions").json()["versions"]  # noqa: E731

    def wait_for(want):
        deadline = time.monotonic() + 30  # hang guard
        while versions() != want:
            assert time.monotonic() < deadline, f"{versions()} != {want}\n{srv.log()}"
            time.sleep(0.05)

    assert versions() == ["1", "3"]
    config = root / "mlp_versions" / "config.pbtxt"
    text = config.read_text()
    config.write_text(text.replace("specific: { versions: [ 1, 3 ] }", "all { }"))
    wait_for(["1", "2", "3"])
    config.write_text(text.replace("specific: { versions: [ 1, 3 ] }", "specific: { versions: [ 2 ] }"))
    wait_for(["2"])
    feeds = feeds_for("mlp_versions", rows=2, seed=9)
    r = http_infer(srv.url, "mlp_versions", feeds)
    assert r.get_response()["model_version"] == "2"
    check_answer(r, ort_run(model_file(root, "mlp_versions", 2), feeds), "after the change")
    config.write_text("version_policy { all")  # broken: nothing changes
    time.sleep(0.5)
    assert versions() == ["2"]


@pytest.mark.parametrize("name,config,path,reason", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_setting_stops_the_server_naming_it(tmp_path, name, config, path, reason):
    """As a bundle that does not load stops start-up (and as Triton stops with
    its default --exit-on-error), naming the setting, its path and the file."""
    root = tmp_path / "models"
    (root / name / "1").mkdir(parents=True)
    shutil.copy(ferro.EXAMPLES / "mlp" / "1" / "model.onnx", root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(config)
    # A good model beside it does not change that.
    shutil.copytree(ferro.EXAMPLES / "mlp" / "1", root / "mlp" / "1")
    proc = subprocess.run(
        [str(ferro.server_binary()), "serve", "--repo", str(root), "--host", "127.0.0.1",
         "--http-port", "0", "--grpc-port", "0"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": "0"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "listening" not in out, out
    error = next(l for l in out.splitlines() if f"{name}/config.pbtxt: {path}:" in l and "Caused" not in l)
    assert reason in error, error
    assert str(root / name / "config.pbtxt") in error, error


# --------------------------------------------------------------------------
# import-triton


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ferro.server_binary()), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": "0"},
    )


def test_import_triton_then_serve(tmp_path, start_server):
    src = write_triton_repo(tmp_path / "triton")
    # One refused model in the source: reported, the others imported.
    (src / "stateful" / "1").mkdir(parents=True)
    shutil.copy(ferro.EXAMPLES / "mlp" / "1" / "model.onnx", src / "stateful" / "1" / "model.onnx")
    (src / "stateful" / "config.pbtxt").write_text(UNSUPPORTED[1][1])
    repo = tmp_path / "imported"

    done = run_cli("import-triton", str(src), "--repo", str(repo), "--json", "--user", "tester")
    assert done.returncode == 1, done.stdout + done.stderr  # one model refused
    report = json.loads(done.stdout)
    by_name = {m["name"]: m for m in report["models"]}
    assert "multi_io" in report["skipped"]  # a ferroserve bundle, not a Triton model
    assert by_name["stateful"]["refused"] and "sequence_batching: not supported" in by_name["stateful"]["refused"]
    for name, versions in [("mlp_nobatch", [1]), ("conv_dyn", [1]), ("words", [1]),
                           ("mlp_versions", [1, 2, 3]), ("mlp_latest2", [1, 2, 3])]:
        m = by_name[name]
        assert m["refused"] is None, m
        assert [(v["version"], v["outcome"]) for v in m["versions"]] == [(v, "imported") for v in versions], m
    assert any("model_warmup[0]" in i for i in by_name["conv_dyn"]["ignored"]), by_name["conv_dyn"]
    assert "endpoint mlp_versions written" in by_name["mlp_versions"]["endpoint"], by_name["mlp_versions"]

    # The registry has them, with the same version numbers.
    listed = json.loads(run_cli("models", "list", "--repo", str(repo), "--json").stdout)
    summary = {m["name"]: (m["latest_version"], m["versions"]) for m in listed}
    assert summary == {
        "conv_dyn": (1, 1), "mlp_nobatch": (1, 1), "words": (1, 1),
        "mlp_versions": (3, 3), "mlp_latest2": (3, 3),
    }, summary
    shown = json.loads(run_cli("models", "show", "mlp_versions:2", "--repo", str(repo), "--json").stdout)
    assert shown["registered_by"] == "tester" and shown["tags"].get("source") == "triton", shown
    assert shown["source_dir"].endswith("mlp_versions/2"), shown
    # A normal ferroserve bundle, with the config's settings.
    import tomllib

    manifest = tomllib.loads((repo / "conv_dyn" / "1" / "bundle.toml").read_text())
    assert manifest["batching"] == {
        "max_batch_size": 16, "max_queue_delay_us": 2000, "preferred_batch_sizes": [4, 8],
        "max_queue_size": 64, "timeout_ms": 20000,
    }, manifest
    assert manifest["instances"]["count"] == 2
    assert (repo / "mlp_versions" / "3" / "labels.txt").is_file()

    # Again: already imported, nothing fails obscurely.
    again = run_cli("import-triton", str(src), "--repo", str(repo))
    assert again.returncode == 1, again.stdout + again.stderr  # still the refused one
    assert "mlp_versions:2: already imported" in again.stdout, again.stdout
    assert "versions: 0 imported, 9 already imported, 0 failed" in again.stdout, again.stdout

    # Served: the same answers from the same version numbers, as the
    # Triton repository (the multi_io bundle was not imported: it is added
    # with `register`, as any bundle is).
    reg = run_cli("register", str(src / "multi_io" / "1"), "--repo", str(repo), "--name", "multi_io")
    assert reg.returncode == 0 and reg.stdout.strip() == "1", reg.stdout + reg.stderr
    srv = start_server(repo)
    check_serves_like_triton(srv, src)

"""The OpenCL backend (backends/opencl) through the real `ferroserve` binary.

The example bundles examples/bundles/{mlp,conv}-opencl are the `mlp` and
`conv` example models (the same model.onnx bytes) with backend = "opencl" on
opencl:0. Here they are registered into scratch repositories and:

1. served next to the ONNX Runtime `mlp`/`conv` under concurrent batched
   HTTP load (binary and JSON bodies) and over gRPC: every answer equals
   ONNX Runtime in-process on the same model within a relative error of
   1e-4 (|got - want| <= 1e-4 * |want| + 1e-6, element-wise; the ORT-served
   models are held to ferro.assert_tensor's 1e-5); dynamic batching happened
   (fewer batches than requests), and the kernel launch counters of /metrics
   are exactly batches x launches-per-batch of each kernel (Relu fused into
   Gemm/Conv: no `unary` launch);
2. served from a program binary made by `ferroserve opencl build-binary`
   (`[opencl.binaries]`), the log naming it as the program's origin;
3. refused at register (and at upload over HTTP) with the documented
   messages: unsupported operator, unusable program binaries (random bytes;
   a truncated real binary, which makes PoCL abort in the checking child
   process, not in the server), device and manifest errors; the repository
   stays consistent and the next good bundle registers;
4. without any OpenCL platform (OCL_ICD_VENDORS pointing at an empty place):
   the CLI and the server say `no OpenCL runtime`, the server serves its
   other models, and an OpenCL model that arrives later fails to deploy with
   that reason while the others keep answering;
5. the `opencl devices` and `opencl source` commands.

Needs an OpenCL device (PoCL here). Without one the tests that need it are
skipped with the reason, unless FERROSERVE_REQUIRE_OPENCL=1 makes that a
failure. The no-platform tests that need no device run anyway.

Every server here is stopped with SIGTERM and must exit 0. With an OpenCL
model loaded that is not a given: PoCL brings LLVM, whose signal handlers
once made SIGTERM kill the server (test_sigterm_with_an_opencl_model_loaded_
shuts_down_cleanly).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shutil
import tarfile
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

import ferro

MLP_CL = ferro.BUNDLES / "mlp-opencl"
CONV_CL = ferro.BUNDLES / "conv-opencl"
# served name -> (bundle folder, the example model it is a copy of)
OPENCL_BUNDLES = {"mlp_opencl": (MLP_CL, "mlp"), "conv_opencl": (CONV_CL, "conv")}
# Launches (kernels and transfers) of one batch, per the planner: Relu is
# fused into the Gemm/Conv before it.
LAUNCHES_PER_BATCH = {
    "mlp_opencl": {"upload": 1, "gemm": 2, "softmax": 1, "download": 1},
    # each 3x3 convolution is im2col + gemm; then the pool and the classifier's gemm
    "conv_opencl": {"upload": 1, "im2col": 3, "gemm": 4, "global_average_pool": 1, "download": 1},
}
LAUNCHES = "ferroserve_device_kernel_launches_total"
KERNEL_SECONDS = "ferroserve_device_kernel_seconds_total"

# relative error allowed between the OpenCL kernels and ONNX Runtime
RTOL = 1e-4
ATOL = 1e-6

NO_PLATFORM_ENV = {"OCL_ICD_VENDORS": "/nonexistent-dir", "OCL_ICD_FILENAMES": ""}


# --------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def device() -> dict:
    """opencl:0 as `ferroserve opencl devices` lists it: {"name", "platform"}.
    Skips (or fails, with FERROSERVE_REQUIRE_OPENCL=1) where there is none."""
    p = ferro.cli("opencl", "devices", check=False)
    m = re.search(r"^opencl:0 (.+) \((.+?); .*compute units", p.stdout, re.M)
    if p.returncode != 0 or not m:
        why = (f"no OpenCL device: `ferroserve opencl devices` exited with {p.returncode}: "
               f"{(p.stderr or p.stdout).strip().splitlines()[:1]}")
        if os.environ.get("FERROSERVE_REQUIRE_OPENCL") == "1":
            pytest.fail(f"{why} (FERROSERVE_REQUIRE_OPENCL=1)", pytrace=False)
        pytest.skip(f"{why} (set FERROSERVE_REQUIRE_OPENCL=1 to make this a failure)")
    return {"name": m.group(1), "platform": m.group(2)}


def _stop(srv: ferro.Server, opencl_loaded: bool = True) -> int:
    """SIGTERM; the server must have been alive until then and must exit 0
    (a drained, clean shutdown), OpenCL model loaded or not."""
    del opencl_loaded  # every server must shut down cleanly
    assert srv.running(), f"ferroserve died during the test\n{srv.log()}"
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with {rc} after SIGTERM\n{srv.log()}"
    return rc


@pytest.fixture
def servers():
    """`servers.append(srv)`: killed at the end if a test left it running."""
    started: list[ferro.Server] = []
    yield started
    for srv in started:
        srv.kill()


def _register_opencl(repo: Path, names=("mlp_opencl", "conv_opencl")):
    for name in names:
        assert ferro.register(repo, OPENCL_BUNDLES[name][0], name) == 1


def _close(got, want: np.ndarray, what: str):
    """OpenCL result vs ONNX Runtime: same shape and dtype, element-wise
    |got - want| <= RTOL * |want| + ATOL."""
    assert got is not None, f"{what}: output missing"
    got = np.asarray(got)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = RTOL * np.abs(want.astype(np.float64)) + ATOL
    bad = np.argwhere(~(err <= bound))
    assert bad.size == 0, (
        f"{what}: {len(bad)} of {want.size} elements beyond rtol {RTOL} + atol {ATOL}; first at "
        f"{tuple(bad[0])}: got {got[tuple(bad[0])]!r}, want {want[tuple(bad[0])]!r}; "
        f"max relative error {float(np.max(err / np.maximum(np.abs(want), 1e-30))):.3g}"
    )


def _check_answer(model: str, result, want: dict, what: str):
    ref = ferro.model_ref(OPENCL_BUNDLES[model][1] if model in OPENCL_BUNDLES else model)
    for o in ref.outputs:
        if model in OPENCL_BUNDLES:
            _close(result.as_numpy(o.name), want[o.name], f"{what} {o.name}")
        else:
            ferro.assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"{what} {o.name}")


def _http_infer(addr, model: str, feeds: dict, binary: bool, request_id: str = ""):
    """One inference of MODEL (an OpenCL copy is encoded with its example's
    signature, which is the same) -> tritonclient InferResult."""
    ref_name = OPENCL_BUNDLES[model][1] if model in OPENCL_BUNDLES else model
    body, headers = ferro.encode_infer(feeds, ref_name, binary, binary, request_id=request_id)
    resp = ferro.request(addr, "POST", ferro.infer_path(model), body, headers)
    assert resp.status == 200, f"{model}: {resp.status} {resp.body[:500]!r}"
    return ferro.decode_infer(resp)


def _kernel_series(m: ferro.Metrics, name: str, model: str) -> dict[str, dict]:
    """{kernel: labels} of the series NAME of MODEL."""
    out = {}
    for (n, lbl), _v in m.items():
        d = dict(lbl)
        if n == name and d.get("model") == model:
            out[d["kernel"]] = d
    return out


def _wait_log(srv: ferro.Server, pred, what: str, timeout: float = 30.0) -> str:
    """The first log line matching PRED; the log is read by a thread, so a
    line may come a moment after an answer that followed it."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((l for l in list(srv.lines) if pred(l)), None)
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout} s\n{srv.log()}"
        time.sleep(0.05)


def _tar_gz(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, arcname=f.name)
    return buf.getvalue()


def _upload(addr, name: str, folder: Path) -> ferro.Response:
    return ferro.request(addr, "POST", f"/v2/admin/models/{name}/versions", _tar_gz(folder),
                         {"content-type": "application/gzip"}, timeout=120)


def _add_binaries(bundle: Path, pattern: str, file: str):
    with open(bundle / "bundle.toml", "a") as f:
        f.write(f"\n[opencl.binaries]\n{json.dumps(pattern)} = {json.dumps(file)}\n")


def _set_device(bundle: Path, device: str):
    manifest = bundle / "bundle.toml"
    text, n = re.subn(r'^device = "opencl:0"$', f"device = {json.dumps(device)}", manifest.read_text(), flags=re.M)
    assert n == 1, manifest
    manifest.write_text(text)


# --------------------------------------------------------------------------
# 1. OpenCL next to ONNX Runtime under concurrent batched load


def test_bundles_are_the_example_models():
    for name, (folder, example) in OPENCL_BUNDLES.items():
        example_file = ferro.EXAMPLES / example / "1" / "model.onnx"
        assert (folder / "model.onnx").read_bytes() == example_file.read_bytes(), name
        manifest = tomllib.loads((folder / "bundle.toml").read_text())
        assert manifest["name"] == name
        assert manifest["backend"] == "opencl"
        assert manifest["instances"]["device"] == "opencl:0"
        assert manifest["batching"]["max_batch_size"] == 32


@pytest.fixture(scope="module")
def mixed(device, tmp_path_factory):
    """(server, repo): mlp and conv (ONNX Runtime) and their OpenCL copies."""
    repo = ferro.make_repo(tmp_path_factory.mktemp("opencl_mixed") / "repo", {"mlp": None, "conv": None})
    _register_opencl(repo)
    srv = ferro.Server(repo)
    try:
        yield srv, repo
    finally:
        try:
            _stop(srv)
        finally:
            srv.kill()


ORDER = ("mlp_opencl", "conv_opencl", "mlp", "conv")
THREADS = 8
STEPS = 16


def _plan(seed: int):
    """Per thread, STEPS requests (model, rows, body, headers, expected). At
    step i threads 0-3 send to ORDER[i % 4] and threads 4-7 to
    ORDER[(i + 1) % 4]: four requests to a model at once, next to another
    model's four; 32 requests per model in all."""
    rng = np.random.default_rng(seed)
    plan = [[] for _ in range(THREADS)]
    for i in range(STEPS):
        for t in range(THREADS):
            model = ORDER[(i + (t >= THREADS // 2)) % len(ORDER)]
            ref = OPENCL_BUNDLES[model][1] if model in OPENCL_BUNDLES else model
            rows = int(rng.integers(1, 6))
            feeds = ferro.random_inputs(rng, ref, rows)
            binary = bool(rng.integers(0, 2))
            body, headers = ferro.encode_infer(feeds, ref, binary, binary, request_id=f"t{t}-r{i}")
            plan[t].append((model, rows, body, headers, ferro.model_ref(ref).run(feeds)))
    return plan


def _client(addr, reqs, barrier, results, errors, t):
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=120)
    try:
        for model, _rows, body, headers, _want in reqs:
            barrier.wait()  # the threads send their i-th requests together
            conn.request("POST", ferro.infer_path(model), body=body, headers=headers)
            results[t].append(ferro.read_response(conn))
    except Exception as e:  # reported by the main thread
        errors.append(f"thread {t}: {type(e).__name__}: {e}")
        barrier.abort()
    finally:
        conn.close()


def test_concurrent_http_load_equals_onnxruntime_and_kernel_counters_add_up(mixed, device):
    srv, _repo = mixed
    addr = srv.addr
    plan = _plan(4242)
    before = ferro.scrape(addr)
    barrier = threading.Barrier(THREADS, timeout=120)
    results = [[] for _ in range(THREADS)]
    errors: list[str] = []
    threads = [threading.Thread(target=_client, args=(addr, plan[t], barrier, results, errors, t))
               for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(600)
    assert not any(th.is_alive() for th in threads), "client threads hung"
    assert not errors, "\n".join(errors) + "\n" + srv.log(50)

    sent_reqs = {m: 0 for m in ORDER}
    sent_rows = {m: 0 for m in ORDER}
    for t in range(THREADS):
        assert len(results[t]) == STEPS
        for i, ((model, rows, _b, _h, want), resp) in enumerate(zip(plan[t], results[t])):
            what = f"thread {t} request {i} ({model}, {rows} rows)"
            assert resp.status == 200, f"{what}: {resp.status} {resp.body[:300]!r}"
            result = ferro.decode_infer(resp)
            assert result.get_response()["id"] == f"t{t}-r{i}", what
            assert result.get_response()["model_name"] == model, what
            _check_answer(model, result, want, what)
            sent_reqs[model] += 1
            sent_rows[model] += rows

    after = ferro.scrape(addr)

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    report = []
    for model in ORDER:
        lbl = dict(model=model, version="1")
        assert delta("ferroserve_requests_total", outcome="success", **lbl) == sent_reqs[model], model
        rows = delta("ferroserve_batch_size_sum", **lbl)
        batches = delta("ferroserve_batch_size_count", **lbl)
        report.append(f"{model}: {sent_reqs[model]} requests, {rows:.0f} rows in {batches:.0f} batches")
        assert rows == sent_rows[model], (model, rows, sent_rows[model])
        if model not in OPENCL_BUNDLES:
            # ONNX Runtime measures no device kernels
            assert not _kernel_series(after, LAUNCHES, model), (model, _kernel_series(after, LAUNCHES, model))
            continue
        # dynamic batching happened: some batch served several requests
        assert 0 < batches < sent_reqs[model], report[-1]
        per_batch = LAUNCHES_PER_BATCH[model]
        series = _kernel_series(after, LAUNCHES, model)
        # exactly the planned kernels ran (warm-up included): no `unary`,
        # Relu is fused into the Gemm/Conv kernels
        assert set(series) == set(per_batch), (model, sorted(series))
        for kernel, labels in series.items():
            assert labels["device"] == device["name"], labels
            assert (labels["version"], labels["endpoint"], labels["deployment"]) == ("1", model, "default"), labels
            launched = delta(LAUNCHES, model=model, kernel=kernel)
            assert launched == batches * per_batch[kernel], (
                f"{model} kernel {kernel}: {launched:.0f} launches in {batches:.0f} batches, "
                f"expected {per_batch[kernel]} per batch"
            )
        assert set(_kernel_series(after, KERNEL_SECONDS, model)) == set(per_batch), model
        # device time is a counter too: it never goes down, and it grew
        seconds = [delta(KERNEL_SECONDS, model=model, kernel=k) for k in per_batch]
        assert min(seconds) >= 0 and sum(seconds) > 0, (model, seconds)
        assert after.value("ferroserve_queue_depth", model=model, version="1") == 0
    print("; ".join(report))


def test_grpc_answers_equal_onnxruntime(mixed):
    srv, _repo = mixed
    client = ferro.grpc_client(srv.grpc_url)
    try:
        for k, (model, (_folder, example)) in enumerate(OPENCL_BUNDLES.items()):
            assert client.is_model_ready(model)
            meta = client.get_model_metadata(model)
            ref = ferro.model_ref(example)
            assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == \
                [(i.name, i.datatype, i.shape) for i in ref.inputs], meta
            for rows in (1, 3, 7):
                feeds = ferro.random_inputs(np.random.default_rng(100 + 10 * k + rows), example, rows)
                names = [o.name for o in ref.outputs]
                result = client.infer(model, ferro.grpc_inputs(example, feeds), outputs=ferro.grpc_outputs(names),
                                      request_id=f"grpc-{model}-{rows}", client_timeout=60)
                response = result.get_response()
                assert response.model_name == model and response.model_version == "1", response
                assert response.id == f"grpc-{model}-{rows}"
                _check_answer(model, result, ref.run(feeds), f"gRPC {model} ({rows} rows)")
    finally:
        client.close()


# --------------------------------------------------------------------------
# 2. a program binary instead of compiling the kernels


def test_program_binary_is_loaded_and_serves_equal_answers(device, tmp_path, servers):
    binary = tmp_path / "kernels.bin"
    p = ferro.cli("opencl", "build-binary", "--device", "opencl:0", "--out", binary)
    assert binary.is_file() and binary.stat().st_size > 0, p.stdout
    assert device["name"] in p.stdout and "[opencl.binaries]" in p.stdout, p.stdout
    p = ferro.cli("opencl", "check-binary", "--device", "opencl:0", binary)
    assert "every kernel" in p.stdout, p.stdout

    bundle = tmp_path / "mlp-opencl-bin"
    shutil.copytree(MLP_CL, bundle)
    shutil.copy(binary, bundle / "kernels.bin")
    # the pattern is a case-insensitive substring of the device name
    _add_binaries(bundle, device["name"].upper(), "kernels.bin")
    repo = tmp_path / "repo"
    p = ferro.cli("register", bundle, "--repo", repo, "--name", "mlp_opencl")
    assert p.stdout.strip().splitlines()[-1] == "1", p.stdout
    assert f"program={bundle / 'kernels.bin'}" in p.stderr, p.stderr
    assert (repo / "mlp_opencl" / "1" / "kernels.bin").read_bytes() == binary.read_bytes()

    srv = ferro.Server(repo)
    servers.append(srv)
    loaded = [l for l in srv.lines if "OpenCL model loaded" in l and "model=mlp_opencl" in l]
    assert len(loaded) == 1, srv.log()
    assert f"program={repo / 'mlp_opencl' / '1' / 'kernels.bin'}" in loaded[0], loaded[0]
    assert f'device="{device["name"]}"' in loaded[0], loaded[0]

    rng = np.random.default_rng(77)
    for i, rows in enumerate((1, 2, 5, 32)):
        feeds = ferro.random_inputs(rng, "mlp", rows)
        result = _http_infer(srv.addr, "mlp_opencl", feeds, binary=bool(i % 2))
        _check_answer("mlp_opencl", result, ferro.model_ref("mlp").run(feeds), f"binary program, {rows} rows")
    m = ferro.scrape(srv.addr)
    assert set(_kernel_series(m, LAUNCHES, "mlp_opencl")) == set(LAUNCHES_PER_BATCH["mlp_opencl"])
    _stop(srv)


# --------------------------------------------------------------------------
# 3. bundles refused at register, with the repository intact after


def _exp_model(dst: Path):
    """mlp's graph with a Sign node ("sign_odd"), which the backend does not support, after the Softmax."""
    import onnx
    from onnx import helper

    model = onnx.load(str(MLP_CL / "model.onnx"))
    last = model.graph.node[-1]
    assert last.op_type == "Softmax" and last.output[0] == "probabilities"
    last.output[0] = "softmax_out"
    model.graph.node.append(helper.make_node("Sign", ["softmax_out"], ["probabilities"], name="sign_odd"))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def _real_binary(tmp: Path) -> bytes:
    out = tmp / "real-kernels.bin"
    if not out.exists():
        ferro.cli("opencl", "build-binary", "--device", "opencl:0", "--out", out)
    return out.read_bytes()


def _bad_bundle(case: str, tmp: Path, device: dict) -> tuple[str, Path, list[str]]:
    """(name to register as, bundle folder, substrings the refusal must hold)."""
    bundle = tmp / f"bad-{case}"
    name = "mlp_opencl"
    if case == "unsupported_operator":
        shutil.copytree(MLP_CL, bundle)
        _exp_model(bundle / "model.onnx")
        want = [f"{bundle / 'model.onnx'}: ", 'unsupported operator "Sign" (node "sign_odd"); '
                "the OpenCL backend supports Add, AveragePool, "]
    elif case in ("random_binary", "truncated_binary"):
        shutil.copytree(MLP_CL, bundle)
        if case == "random_binary":
            data = np.random.default_rng(5).integers(0, 256, 20000, dtype=np.uint8).tobytes()
        else:
            data = _real_binary(tmp)[:5000]
        (bundle / "prog.bin").write_bytes(data)
        _add_binaries(bundle, device["name"], "prog.bin")
        head = f'program binary {bundle / "prog.bin"} is not usable on "{device["name"]}": '
        if case == "random_binary":
            want = [head + "clCreateProgramWithBinary: CL_INVALID_BINARY"]
        elif "Portable Computing Language" in device["platform"]:
            # PoCL asserts on it: the checking child dies, not ferroserve
            want = [head + "the OpenCL driver crashed loading it (signal 6): "]
        else:
            want = [head]
    elif case == "device_cpu":
        shutil.copytree(MLP_CL, bundle)
        _set_device(bundle, "cpu")
        want = [f"{bundle / 'bundle.toml'}: instances.device: ", 'expected "opencl" or "opencl:N"', 'got "cpu"']
    elif case == "device_missing":
        shutil.copytree(MLP_CL, bundle)
        _set_device(bundle, "opencl:7")
        want = [f'no OpenCL device matches opencl:7; available: opencl:0 "{device["name"]}"']
    elif case == "device_number_and_names":
        shutil.copytree(MLP_CL, bundle)
        with open(bundle / "bundle.toml", "a") as f:
            f.write(f'\n[opencl]\ndevice = {json.dumps(device["name"])}\n')
        want = [f"{bundle / 'bundle.toml'}: instances.device: ", '"opencl:0" picks a device by number']
    elif case == "platform_not_found":
        shutil.copytree(MLP_CL, bundle)
        _set_device(bundle, "opencl")
        with open(bundle / "bundle.toml", "a") as f:
            f.write('\n[opencl]\nplatform = "no-such-platform"\n')
        want = ['no OpenCL device matches platform "no-such-platform", device "any"; available: opencl:0']
    elif case == "opencl_table_on_onnx_bundle":
        name = "mlp"
        shutil.copytree(ferro.EXAMPLES / "mlp" / "1", bundle)
        with open(bundle / "bundle.toml", "a") as f:
            f.write(f'\n[opencl]\ndevice = {json.dumps(device["name"])}\n')
        want = [f"{bundle / 'bundle.toml'}: opencl: ", 'only applies to backend = "opencl"']
    elif case == "binary_file_missing":
        shutil.copytree(MLP_CL, bundle)
        _add_binaries(bundle, "skylake", "nope.bin")
        want = [f"{bundle / 'bundle.toml'}: opencl.binaries.", '"nope.bin" not found']
    elif case == "unknown_opencl_key":
        shutil.copytree(MLP_CL, bundle)
        with open(bundle / "bundle.toml", "a") as f:
            f.write('\n[opencl]\nplatfrom = "pocl"\n')
        want = [f"{bundle / 'bundle.toml'}: ", "unknown field `platfrom`"]
    else:
        raise AssertionError(case)
    return name, bundle, want


BAD_CASES = [
    "unsupported_operator", "random_binary", "truncated_binary", "device_cpu", "device_missing",
    "device_number_and_names", "platform_not_found", "opencl_table_on_onnx_bundle", "binary_file_missing",
    "unknown_opencl_key",
]


def _versions(repo: Path) -> dict[str, list[str]]:
    return {d.name: sorted(v.name for v in d.iterdir() if not v.name.startswith("."))
            for d in sorted(repo.iterdir()) if d.is_dir() and not d.name.startswith(".")}


@pytest.mark.parametrize("case", BAD_CASES)
def test_register_refuses_a_bad_bundle_and_the_repo_still_works(device, tmp_path, case):
    repo = tmp_path / "repo"
    assert ferro.register(repo, MLP_CL, "mlp_opencl") == 1
    before = _versions(repo)
    name, bundle, want = _bad_bundle(case, tmp_path, device)

    p = ferro.cli("register", bundle, "--repo", repo, "--name", name, check=False)
    # an error exit, not a crash (a truncated binary aborts PoCL only in the
    # child process that checks it)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    for part in want:
        assert part in p.stderr, f"{part!r} not in:\n{p.stderr[-3000:]}"
    assert _versions(repo) == before

    check = ferro.cli("repo", "check", "--repo", repo, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert ferro.register(repo, MLP_CL, "mlp_opencl") == 2


def test_device_chosen_by_platform_and_device_name(device, tmp_path, servers):
    """instances.device = "opencl" with [opencl] names (case-insensitive
    substrings) picks opencl:0."""
    bundle = tmp_path / "by-name"
    shutil.copytree(MLP_CL, bundle)
    _set_device(bundle, "opencl")
    with open(bundle / "bundle.toml", "a") as f:
        f.write(f'\n[opencl]\nplatform = {json.dumps(device["platform"][:8].swapcase())}\n'
                f'device = {json.dumps(device["name"][-6:].swapcase())}\n')
    repo = tmp_path / "repo"
    assert ferro.register(repo, bundle, "mlp_opencl") == 1
    srv = ferro.Server(repo)
    servers.append(srv)
    loaded = [l for l in srv.lines if "OpenCL model loaded" in l]
    assert len(loaded) == 1 and f'device="{device["name"]}"' in loaded[0] and "program=source" in loaded[0], srv.log()
    feeds = ferro.random_inputs(np.random.default_rng(8), "mlp", 4)
    _check_answer("mlp_opencl", _http_infer(srv.addr, "mlp_opencl", feeds, True), ferro.model_ref("mlp").run(feeds),
                  "by-name device")
    _stop(srv)


def test_server_refuses_bad_uploads_and_survives_a_crashing_binary(device, tmp_path, servers):
    """The same checks in the server's own process (POST .../versions with a
    tar.gz): a truncated binary makes the driver abort, in the server's
    checking child, and the server keeps serving."""
    repo = tmp_path / "repo"
    assert ferro.register(repo, MLP_CL, "mlp_opencl") == 1
    srv = ferro.Server(repo)
    servers.append(srv)
    for case in ("truncated_binary", "random_binary", "unsupported_operator"):
        _name, bundle, want = _bad_bundle(case, tmp_path, device)
        resp = _upload(srv.addr, "mlp_opencl", bundle)
        assert resp.status == 400, (case, resp.status, resp.body[:1000])
        msg = resp.error_message()
        # the message names the upload's temporary folder, not BUNDLE
        tail = [w.split(str(bundle) + "/", 1)[-1] for w in want]
        for part in tail:
            assert part in msg, f"{case}: {part!r} not in {msg!r}"
        assert srv.running(), f"{case}: the server died\n{srv.log()}"
        feeds = ferro.random_inputs(np.random.default_rng(9), "mlp", 3)
        _check_answer("mlp_opencl", _http_infer(srv.addr, "mlp_opencl", feeds, True),
                      ferro.model_ref("mlp").run(feeds), f"after the {case} upload")
    assert _versions(repo) == {"mlp_opencl": ["1"]}
    check = ferro.cli("repo", "check", "--repo", repo, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    _stop(srv)


# --------------------------------------------------------------------------
# 4. no OpenCL platform at all


@contextlib.contextmanager
def no_platform():
    """Processes started inside find no OpenCL platform."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in NO_PLATFORM_ENV.items():
            mp.setenv(k, v)
        yield


def test_no_platform_cli_and_startup_say_no_opencl_runtime(tmp_path):
    """Needs no OpenCL device. `opencl devices` fails with the reason; a
    repository that deploys an OpenCL model does not start (start-up is
    strict, as for any bundle that fails to load) and names the model and
    the reason; without the OpenCL model it starts and serves, and an upload
    of one is refused with the reason."""
    with no_platform():
        p = ferro.cli("opencl", "devices", check=False)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "no OpenCL runtime" in p.stderr, p.stderr[-2000:]

    repo = ferro.make_repo(tmp_path / "repo", {"mlp": None, "conv": None})
    # placed by hand: the first serve imports the folders
    shutil.copytree(MLP_CL, repo / "mlp_opencl" / "1")
    with no_platform(), pytest.raises(RuntimeError) as e:
        srv = ferro.Server(repo)
        srv.kill()
    text = str(e.value)
    assert "exited with code 1 before listening" in text, text[-3000:]
    assert re.search(r'mlp_opencl/default: model "mlp_opencl" version 1 does not load: .*no OpenCL runtime', text), \
        text[-3000:]

    repo = ferro.make_repo(tmp_path / "repo2", {"mlp": None, "conv": None})
    with no_platform():
        srv = ferro.Server(repo)
    try:
        resp = _upload(srv.addr, "mlp_opencl", MLP_CL)
        assert resp.status == 400, (resp.status, resp.body[:1000])
        assert "no OpenCL runtime" in resp.error_message(), resp.error_message()
        for k, model in enumerate(("mlp", "conv")):
            ferro.check_good_request(srv.addr, model, rows=3, seed=k)
        assert not (repo / "mlp_opencl").exists()
        _stop(srv, opencl_loaded=False)
    finally:
        srv.kill()


def test_no_platform_server_keeps_serving_when_an_opencl_model_arrives(device, tmp_path):
    """The server runs without OpenCL; mlp_opencl is registered (by a CLI
    that has OpenCL): its deployment fails with `no OpenCL runtime` (event
    and log), it is not served, and mlp/conv keep answering."""
    repo = ferro.make_repo(tmp_path / "repo", {"mlp": None, "conv": None})
    with no_platform():
        srv = ferro.Server(repo, ["--poll-interval-ms", "100"])
    events = None
    try:
        events = ferro.EventStream(srv.addr)
        assert ferro.register(repo, MLP_CL, "mlp_opencl") == 1
        ev = events.wait_for(lambda e: e.get("subject") == "mlp_opencl/default", timeout=60,
                             what="an event of mlp_opencl/default")
        assert ev["type"] == "io.ferroserve.deployment.failed", ev
        assert "no OpenCL runtime" in ev["data"]["error"], ev
        assert ev["data"]["model"] == "mlp_opencl" and ev["data"]["version"] == 1, ev
        _wait_log(srv, lambda l: "deployment failed" in l and "mlp_opencl" in l and "no OpenCL runtime" in l,
                  "the deployment failure in the log")

        resp = ferro.request(srv.addr, "GET", "/v2/models/mlp_opencl/ready")
        assert resp.status == 404, (resp.status, resp.body[:500])
        assert ferro.request(srv.addr, "GET", "/v2/health/ready").status == 200
        for k, model in enumerate(("mlp", "conv")):
            ferro.check_good_request(srv.addr, model, rows=2, seed=10 + k)
            ferro.check_good_grpc_request(srv.grpc_url, model, rows=2, seed=20 + k)
        events.close()
        events = None
        _stop(srv, opencl_loaded=False)
    finally:
        if events is not None:
            events.close()
        srv.kill()


# --------------------------------------------------------------------------
# 5. the opencl commands


def test_opencl_devices_and_source_commands(device, tmp_path):
    p = ferro.cli("opencl", "devices")
    assert re.search(rf"^opencl:0 {re.escape(device['name'])} \(", p.stdout, re.M), p.stdout

    p = ferro.cli("opencl", "source")
    source = p.stdout
    # the kernel may carry attributes between `__kernel` and `void`
    assert re.search(r"__kernel\s+(__attribute__\s*\(\(.*?\)\)\s*)?void\s+gemm\s*\(", source), source[:2000]
    for kernel in ("conv2d", "softmax", "global_average_pool", "unary"):
        assert re.search(rf"__kernel\s+(__attribute__\s*\(\(.*?\)\)\s*)?void\s+{kernel}\s*\(", source), kernel

    out = tmp_path / "kernels.cl"
    ferro.cli("opencl", "source", "--out", out)
    assert out.read_text() == source


# --------------------------------------------------------------------------
# graceful shutdown


def test_sigterm_with_an_opencl_model_loaded_shuts_down_cleanly(device, tmp_path, servers):
    repo = ferro.make_repo(tmp_path / "repo", {"mlp": None})
    assert ferro.register(repo, MLP_CL, "mlp_opencl") == 1
    srv = ferro.Server(repo)
    servers.append(srv)
    feeds = ferro.random_inputs(np.random.default_rng(3), "mlp", 2)
    _check_answer("mlp_opencl", _http_infer(srv.addr, "mlp_opencl", feeds, True), ferro.model_ref("mlp").run(feeds),
                  "before SIGTERM")
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with {rc} after SIGTERM\n{srv.log(20)}"
    assert any("shut down cleanly" in l for l in srv.lines), srv.log(20)


def test_binary_check_message_does_not_depend_on_rust_backtrace(device, tmp_path, monkeypatch):
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    repo = tmp_path / "repo"
    name, bundle, want = _bad_bundle("random_binary", tmp_path, device)
    p = ferro.cli("register", bundle, "--repo", repo, "--name", name, check=False)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    error = next((l for l in p.stderr.splitlines() if l.startswith("error: ")), p.stderr[-2000:])
    for part in want:
        assert part in error, f"{part!r} not in {error!r}"

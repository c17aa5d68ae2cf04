"""Shared helpers for ferroserve's Python protocol tests.

Everything here talks to a real `ferroserve` process over real sockets:
starting and stopping the binary, raw HTTP requests with `http.client`,
encoding/decoding inference bodies (through tritonclient's own encoder and
decoder, so the reference client's wire format is what the server sees),
running the same model in-process with ONNX Runtime for the expected answers,
the same over gRPC (tritonclient.grpc and hand-built protobuf messages sent
through the generated stub), and parsing the Prometheus text of `/metrics`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "models"
GENERATE = REPO_ROOT / "examples" / "generate.py"
# Every example bundle (test_grpc_conformance checks this against the folder,
# so a new bundle cannot be left out silently). New ones go at the end: the
# tests derive seeds from the position.
MODELS = ("mlp", "multi_io", "conv", "strings", "dtypes", "seq_sum")
# Entry-script bundles (backend = "python"), covered by test_python_backend.py.
PYTHON_MODELS = ("iris", "text_stats")

READY_RE = re.compile(r"HTTP server listening on (\S+):(\d+)")
GRPC_READY_RE = re.compile(r"gRPC server listening on (\S+):(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------
# the binary and the example repository


def server_binary() -> Path:
    """FERROSERVE_BIN if set, else the newest of target/{release,debug}/ferroserve."""
    env = os.environ.get("FERROSERVE_BIN")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"FERROSERVE_BIN={env} does not exist")
        return p
    candidates = [REPO_ROOT / "target" / kind / "ferroserve" for kind in ("release", "debug")]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise FileNotFoundError(
            "no ferroserve binary: run `cargo build -p ferroserve` (or set FERROSERVE_BIN); "
            f"looked for {', '.join(str(c) for c in candidates)}"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def examples_complete() -> bool:
    onnx = all((EXAMPLES / m / "1" / f).is_file() for m in MODELS for f in ("model.onnx", "bundle.toml", "sample.json"))
    python = all((EXAMPLES / m / "1" / f).is_file() for m in PYTHON_MODELS for f in ("score.py", "bundle.toml", "sample.json"))
    return onnx and python


def ensure_examples() -> Path:
    """Generates the example bundles if any is missing; returns the repository folder."""
    if not examples_complete():
        subprocess.run([sys.executable, str(GENERATE)], cwd=REPO_ROOT, check=True, timeout=300)
    assert examples_complete(), f"examples/generate.py did not produce every bundle under {EXAMPLES}"
    return EXAMPLES


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def make_repo(root: Path, bundles: dict[str, dict | None]) -> Path:
    """Copies example bundles into ROOT/NAME/1 and rewrites top-level keys of
    their bundle.toml (`{"conv": {"max_queue_size": 1}}`). Every key must
    occur exactly once in the file, so an edit can never silently miss."""
    ensure_examples()
    root.mkdir(parents=True, exist_ok=True)
    for name, edits in bundles.items():
        dst = root / name / "1"
        shutil.copytree(EXAMPLES / name / "1", dst)
        manifest = dst / "bundle.toml"
        text = manifest.read_text()
        for key, value in (edits or {}).items():
            pattern = re.compile(rf"^{re.escape(key)} = .*$", re.M)
            text, n = pattern.subn(f"{key} = {toml_value(value)}", text)
            assert n == 1, f"{manifest}: key {key!r} found {n} times"
        manifest.write_text(text)
    return root


TYPED_DTYPES = "dtypes_typed"


def make_typed_dtypes_repo(root: Path) -> Path:
    """ROOT/dtypes_typed/1: the dtypes bundle without its FP16 input and
    output (model graph and manifest both), so that every input can travel in
    typed `contents` over gRPC. Returns ROOT."""
    import onnx

    ensure_examples()
    src = EXAMPLES / "dtypes" / "1"
    dst = Path(root) / TYPED_DTYPES / "1"
    dst.mkdir(parents=True)
    model = onnx.load(str(src / "model.onnx"))
    g = model.graph
    fp16 = onnx.TensorProto.FLOAT16
    dropped = {v.name for v in list(g.input) + list(g.output) if v.type.tensor_type.elem_type == fp16}
    assert dropped == {"in_fp16", "out_fp16"}, dropped
    for field_name in ("input", "output"):
        keep = [v for v in getattr(g, field_name) if v.name not in dropped]
        del getattr(g, field_name)[:]
        getattr(g, field_name).extend(keep)
    keep_nodes = [n for n in g.node if not (set(n.input) | set(n.output)) & dropped]
    del g.node[:]
    g.node.extend(keep_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst / "model.onnx"))
    # the manifest: same blocks, minus the FP16 tensors, under the new name
    blocks = (src / "bundle.toml").read_text().split("\n\n")
    blocks = [b for b in blocks if 'datatype = "FP16"' not in b]
    text = "\n\n".join(blocks)
    text, n = re.subn(r'\Aname = "dtypes"$', f'name = "{TYPED_DTYPES}"', text, flags=re.M)
    assert n == 1, text[:200]
    (dst / "bundle.toml").write_text(text)
    return Path(root)


def bundle_manifest(model: str) -> dict:
    import tomllib

    return tomllib.loads((EXAMPLES / model / "1" / "bundle.toml").read_text())


# --------------------------------------------------------------------------
# a running server


class Server:
    """A `ferroserve serve` process on an ephemeral loopback port.

    Its combined stdout/stderr is read by a background thread (so the pipe
    never fills) and kept for failure messages."""

    def __init__(self, repo: Path, extra_args: tuple[str, ...] | list[str] = (), ready_timeout: float = 120.0):
        self.repo = Path(repo)
        self.binary = server_binary()
        self.cmd = [
            str(self.binary), "serve", "--repo", str(self.repo),
            "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", *extra_args,
        ]
        env = dict(os.environ)
        env.setdefault("NO_COLOR", "1")
        env.setdefault("RUST_LOG", "info")
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.host: str | None = None
        self.port: int | None = None
        self.grpc_host: str | None = None
        self.grpc_port: int | None = None
        self.returncode: int | None = None
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, name="ferroserve-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise RuntimeError(
                    f"ferroserve exited with code {self.proc.returncode} before listening\n"
                    f"command: {' '.join(self.cmd)}\n{self.log()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"ferroserve did not log its HTTP and gRPC listening addresses within {ready_timeout} s\n{self.log()}"
                )

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._lock:
                self.lines.append(line)
            if not self._ready.is_set():
                m = READY_RE.search(line)
                if m:
                    self.host, self.port = m.group(1), int(m.group(2))
                m = GRPC_READY_RE.search(line)
                if m:
                    self.grpc_host, self.grpc_port = m.group(1), int(m.group(2))
                if self.port is not None and self.grpc_port is not None:
                    self._ready.set()
        self.proc.stdout.close()

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        """host:port, the form tritonclient takes."""
        return f"{self.host}:{self.port}"

    @property
    def grpc_addr(self) -> tuple[str, int]:
        return self.grpc_host, self.grpc_port

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC listener (tritonclient.grpc, grpc.insecure_channel)."""
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int | None:
        """The process's resident set size (VmRSS), None once it has exited."""
        return rss_bytes(self.proc.pid)

    def log(self, last: int = 200) -> str:
        with self._lock:
            lines = self.lines[-last:]
        return "---- ferroserve log (last %d lines) ----\n%s" % (len(lines), "\n".join(lines))

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self):
        """Sends SIGTERM (once) without waiting."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ferroserve did not exit within {timeout} s of SIGTERM\n{self.log()}")
        self._reader.join(5)
        return self.returncode

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait up to `timeout` seconds; returns the exit code."""
        if self.returncode is not None:
            return self.returncode
        self.terminate()
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------
# raw HTTP


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    reason: str = ""

    def json(self):
        return json.loads(self.body)

    def error_message(self) -> str:
        """The protocol's error body, `{"error": "..."}`; asserts its form."""
        ctype = self.headers.get("content-type", "")
        assert "application/json" in ctype, f"error response content-type {ctype!r}, body {self.body[:500]!r}"
        doc = self.json()
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], (
            f"error body is not {{\"error\": \"...\"}}: {self.body[:500]!r}"
        )
        return doc["error"]


def read_response(conn: http.client.HTTPConnection) -> Response:
    r = conn.getresponse()
    body = r.read()
    return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, body, r.reason)


def request(addr, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0) -> Response:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return read_response(conn)
    finally:
        conn.close()


def raw_exchange(addr, method: str, path: str, body_parts: list[bytes], headers: dict[str, str],
                 chunked: bool = False, timeout: float = 60.0) -> Response:
    """Writes a whole request with one sendall and then reads the answer.

    A server may answer early (413) and close before reading the rest of the
    body; HTTP allows that, and a client must still read the response. Unlike
    http.client (which raises on the failed write), this tolerates a write
    error and reads what the server sent."""
    import socket

    head = [f"{method} {path} HTTP/1.1", f"Host: {addr[0]}:{addr[1]}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in body_parts if p) + b"0\r\n\r\n"
    else:
        payload = b"".join(body_parts)
        head.append(f"Content-Length: {len(payload)}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    sock = socket.create_connection(addr, timeout=timeout)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading; its answer may still be there
        r = http.client.HTTPResponse(sock, method=method)
        r.begin()
        body = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, body, r.reason)
    finally:
        sock.close()


def post_json(addr, path: str, doc, timeout: float = 60.0) -> Response:
    return request(addr, "POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json"}, timeout)


# --------------------------------------------------------------------------
# model signatures and ONNX Runtime as the reference

ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

NP_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


@dataclass
class TensorSig:
    name: str
    datatype: str
    shape: list[int]  # -1 for a free dim


@dataclass
class ModelRef:
    """A model run in-process by ONNX Runtime: the expected answers."""

    name: str
    session: object
    inputs: list[TensorSig] = field(default_factory=list)
    outputs: list[TensorSig] = field(default_factory=list)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or [o.name for o in self.outputs]
        with _ORT_LOCK:
            results = self.session.run(names, feeds)
        return dict(zip(names, results))

    def output(self, name: str) -> TensorSig:
        return next(o for o in self.outputs if o.name == name)

    def input(self, name: str) -> TensorSig:
        return next(i for i in self.inputs if i.name == name)


_ORT_LOCK = threading.Lock()
_REFS: dict[str, ModelRef] = {}


def _sig(arg) -> TensorSig:
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]
    return TensorSig(arg.name, ORT_TYPES[arg.type], dims)


def model_ref(name: str, repo: Path | None = None) -> ModelRef:
    """The model REPO/NAME/1/model.onnx (default: the example repository)
    loaded into onnxruntime (cached)."""
    path = Path(repo or EXAMPLES) / name / "1" / "model.onnx"
    key = name if repo is None else str(path)
    with _ORT_LOCK:
        if key not in _REFS:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            _REFS[key] = ModelRef(
                name, sess, [_sig(i) for i in sess.get_inputs()], [_sig(o) for o in sess.get_outputs()]
            )
        return _REFS[key]


WORDS = ["cat", "dog", "bird", "fish", "", "ünïcødé", "a b", "🐍 snake", "CAT", "dog "]


def random_tensor(rng: np.random.Generator, model: str, sig: TensorSig, rows: int,
                  free_dim: int | None = None) -> np.ndarray:
    """Deterministic random data that fits SIG with `rows` in the batch dim
    and `free_dim` (drawn from RNG when not given) in any other free dim."""
    if free_dim is None and -1 in sig.shape[1:]:
        free_dim = int(rng.integers(1, 9))
    shape = [rows] + [free_dim if d == -1 else d for d in sig.shape[1:]]
    assert all(d >= 0 for d in shape), (model, sig)
    dt = sig.datatype
    if model == "multi_io" and sig.name == "index":
        return rng.integers(0, 8, size=shape, dtype=np.int64)  # the table has 8 rows
    if dt == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dt in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"):
        t = NP_TYPES[dt]
        info = np.iinfo(t)
        return rng.integers(info.min, info.max, size=shape, dtype=t, endpoint=True)
    if dt == "FP16":
        return (rng.standard_normal(shape) * 100).astype(np.float16)
    if dt == "FP32":
        if model == "conv":
            return rng.random(shape, dtype=np.float32)
        return rng.standard_normal(shape).astype(np.float32)
    if dt == "FP64":
        return rng.standard_normal(shape) * 1e3
    if dt == "BYTES":
        flat = [WORDS[i] for i in rng.integers(0, len(WORDS), size=int(np.prod(shape)))]
        return np.array(flat, dtype=np.object_).reshape(shape)
    raise AssertionError(f"no generator for {dt}")


def random_inputs(rng: np.random.Generator, model: str, rows: int, repo: Path | None = None) -> dict[str, np.ndarray]:
    """One request's inputs; free non-batch dims (seq_sum's sequence length)
    get one length shared by every input of the request."""
    sigs = model_ref(model, repo).inputs
    free_dim = int(rng.integers(1, 9)) if any(-1 in s.shape[1:] for s in sigs) else None
    return {s.name: random_tensor(rng, model, s, rows, free_dim) for s in sigs}


def _as_bytes(x) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, np.bytes_):
        return bytes(x)
    return str(x).encode("utf-8")


def assert_tensor(datatype: str, got, want: np.ndarray, what: str = ""):
    """Floats: rtol 1e-5 / atol 1e-6; FP16, integers, bools and bytes: exact."""
    assert got is not None, f"{what}: output missing from the response"
    got = np.asarray(got)
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {got.shape}, expected {want.shape}"
    if datatype == "BYTES":
        g = [_as_bytes(x) for x in got.reshape(-1)]
        w = [_as_bytes(x) for x in want.reshape(-1)]
        assert g == w, f"{what}: BYTES differ\n got  {g}\n want {w}"
        return
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    if datatype in ("FP32", "FP64"):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


# --------------------------------------------------------------------------
# inference bodies through tritonclient's encoder/decoder (no gevent I/O)


def encode_infer(inputs: dict[str, np.ndarray], model: str, binary_in: bool, binary_out: bool,
                 outputs: list[str] | None = None, request_id: str = "", parameters: dict | None = None,
                 timeout_us: int | None = None) -> tuple[bytes, dict[str, str]]:
    """Request body and headers, as tritonclient would send them."""
    import tritonclient.http as httpclient

    ref = model_ref(model)
    infer_inputs = []
    for name, arr in inputs.items():
        i = httpclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr, binary_data=binary_in)
        infer_inputs.append(i)
    names = outputs if outputs is not None else [o.name for o in ref.outputs]
    requested = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in names]
    body, header_len = httpclient.InferenceServerClient.generate_request_body(
        infer_inputs, outputs=requested, request_id=request_id, parameters=parameters, timeout=timeout_us
    )
    headers = {"Content-Type": "application/octet-stream" if header_len else "application/json"}
    if header_len:
        headers["Inference-Header-Content-Length"] = str(header_len)
    return body, headers


def decode_infer(resp: Response):
    """A tritonclient InferResult from a raw 200 response."""
    import tritonclient.http as httpclient

    n = resp.headers.get("inference-header-content-length")
    return httpclient.InferenceServerClient.parse_response_body(
        resp.body, header_length=int(n) if n is not None else None
    )


def infer_path(model: str, version: str | None = None) -> str:
    return f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"


def check_good_request(addr, model: str = "mlp", rows: int = 2, seed: int = 7, binary: bool = True):
    """Sends one valid request and checks every output against ONNX Runtime:
    the server still serves correctly after whatever came before."""
    rng = np.random.default_rng(seed)
    feeds = random_inputs(rng, model, rows)
    body, headers = encode_infer(feeds, model, binary, binary)
    resp = request(addr, "POST", infer_path(model), body, headers)
    assert resp.status == 200, f"good request after an error: {resp.status} {resp.body[:500]!r}"
    result = decode_infer(resp)
    ref = model_ref(model)
    want = ref.run(feeds)
    for o in ref.outputs:
        assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"{model}.{o.name}")


# --------------------------------------------------------------------------
# gRPC: tritonclient.grpc, and hand-built messages through the generated stub

GRPC_SERVICE = "inference.GRPCInferenceService"

# The typed field of InferTensorContents each datatype travels in (FP16 has
# none: it must go in raw_input_contents).
TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def grpc_client(url: str):
    """A tritonclient.grpc client; close it when done."""
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=url)


class GrpcStub:
    """`with GrpcStub(url) as stub:` the generated GRPCInferenceServiceStub on
    its own insecure channel, for messages tritonclient will not build."""

    def __init__(self, url: str):
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        self.channel = grpc.insecure_channel(url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def __enter__(self):
        return self.stub

    def __exit__(self, *exc):
        self.channel.close()


def grpc_inputs(model: str, feeds: dict[str, np.ndarray], repo: Path | None = None):
    """tritonclient.grpc InferInputs (raw_input_contents, as tritonclient sends them)."""
    import tritonclient.grpc as grpcclient

    ref = model_ref(model, repo)
    inputs = []
    for name, arr in feeds.items():
        i = grpcclient.InferInput(name, list(arr.shape), ref.input(name).datatype)
        i.set_data_from_numpy(arr)
        inputs.append(i)
    return inputs


def grpc_outputs(names: list[str]):
    import tritonclient.grpc as grpcclient

    return [grpcclient.InferRequestedOutput(n) for n in names]


def raw_bytes(datatype: str, arr: np.ndarray) -> bytes:
    """A tensor's raw_input_contents entry (BYTES: 4-byte little-endian
    length before each element)."""
    if datatype == "BYTES":
        return b"".join(len(b).to_bytes(4, "little") + b for b in (_as_bytes(x) for x in arr.reshape(-1)))
    return np.asarray(arr).astype(np.dtype(NP_TYPES[datatype]).newbyteorder("<"), copy=False).tobytes()


def infer_request(model: str, feeds: dict[str, np.ndarray], typed: bool, *, version: str = "",
                  request_id: str = "", outputs: list[str] | None = None, repo: Path | None = None,
                  datatypes: dict[str, str] | None = None):
    """A ModelInferRequest built by hand: every input in its typed
    `contents` field (typed=True) or in raw_input_contents. `datatypes`
    overrides an input's declared datatype (the data is sent as given)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, arr in feeds.items():
        dt = (datatypes or {}).get(name) or model_ref(model, repo).input(name).datatype
        t = req.inputs.add(name=name, datatype=dt, shape=list(arr.shape))
        if typed:
            field_name = TYPED_FIELDS.get(dt)
            if field_name is None:
                raise ValueError(f"{dt} has no typed contents field; send it raw")
            flat = arr.reshape(-1)
            if dt == "BYTES":
                values = [_as_bytes(x) for x in flat]
            elif dt == "BOOL":
                values = [bool(x) for x in flat]
            elif dt in ("FP32", "FP64"):
                values = [float(x) for x in flat]
            else:
                values = [int(x) for x in flat]
            getattr(t.contents, field_name).extend(values)
        else:
            req.raw_input_contents.append(raw_bytes(dt, arr))
    for n in outputs or []:
        req.outputs.add(name=n)
    return req


def grpc_result(response):
    """A tritonclient.grpc InferResult from a ModelInferResponse."""
    from tritonclient.grpc import InferResult

    return InferResult(response)


def check_grpc_outputs(model: str, response, feeds: dict[str, np.ndarray], names: list[str] | None = None,
                       repo: Path | None = None, what: str = ""):
    """RESPONSE (a ModelInferResponse) holds exactly the outputs NAMES (default:
    all, in the model's order) with ONNX Runtime's values for FEEDS."""
    ref = model_ref(model, repo)
    names = names or [o.name for o in ref.outputs]
    want = ref.run(feeds, names)
    assert response.model_name == model, response.model_name
    assert response.model_version == "1", response.model_version
    assert [o.name for o in response.outputs] == names, [o.name for o in response.outputs]
    # outputs always come back raw, one entry per output
    assert len(response.raw_output_contents) == len(names), (len(response.raw_output_contents), names)
    result = grpc_result(response)
    for o in response.outputs:
        sig = ref.output(o.name)
        assert o.datatype == sig.datatype, (o.name, o.datatype, sig.datatype)
        assert list(o.shape) == list(want[o.name].shape), (o.name, list(o.shape), want[o.name].shape)
        assert_tensor(sig.datatype, result.as_numpy(o.name), want[o.name], f"{what}{model}.{o.name}")


def check_good_grpc_request(url: str, model: str = "mlp", rows: int = 2, seed: int = 7, typed: bool = False):
    """One valid gRPC request whose every output is checked against ONNX
    Runtime: the server still serves correctly after whatever came before."""
    feeds = random_inputs(np.random.default_rng(seed), model, rows)
    with GrpcStub(url) as stub:
        response = stub.ModelInfer(infer_request(model, feeds, typed, request_id=f"good-{seed}"), timeout=60)
    assert response.id == f"good-{seed}"
    check_grpc_outputs(model, response, feeds, what="good request after an error: ")


def grpc_code_name(e) -> str:
    """The status code's name ("NOT_FOUND") of a grpc.RpcError or of a
    tritonclient InferenceServerException (whose status() is "StatusCode.X")."""
    code = e.code() if hasattr(e, "code") and callable(e.code) else None
    if code is not None:
        return code.name
    return str(e.status() or "").removeprefix("StatusCode.")


# --------------------------------------------------------------------------
# process memory


def rss_bytes(pid: int) -> int | None:
    """VmRSS of process PID from /proc, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# --------------------------------------------------------------------------
# Prometheus text

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics(dict):
    """{(name, ((label, value), ...)): float} from the text exposition format."""

    @classmethod
    def parse(cls, text: str) -> "Metrics":
        m = cls()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE_RE.match(line)
            assert match, f"unparseable metrics line: {line!r}"
            name, labels, value = match.groups()
            key = (name, tuple(sorted(_LABEL_RE.findall(labels or ""))))
            m[key] = float(value)
        return m

    def get_value(self, name: str, **labels) -> float | None:
        """NAME's samples whose labels include LABELS, summed (series also
        carry endpoint and deployment labels); None if there is none."""
        want = set(labels.items())
        found = [v for (n, lbl), v in self.items() if n == name and want <= set(lbl)]
        return sum(found) if found else None

    def value(self, name: str, **labels) -> float:
        """The sample NAME{labels}, 0 if absent (a counter not yet touched)."""
        return self.get_value(name, **labels) or 0.0

    def names(self) -> set[str]:
        return {k[0] for k in self}


def scrape(addr) -> Metrics:
    resp = request(addr, "GET", "/metrics")
    assert resp.status == 200, resp
    assert resp.headers.get("content-type", "").startswith("text/plain"), resp.headers
    return Metrics.parse(resp.body.decode())


# --------------------------------------------------------------------------
# registry CLI, management API and lifecycle events (endpoints and deployments)


def cli(*args, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `ferroserve ARGS...`; returns the CompletedProcess (text output).
    With check, a non-zero exit fails with the command's output."""
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    p = subprocess.run([str(server_binary()), *map(str, args)], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, (
            f"ferroserve {' '.join(map(str, args))} exited with {p.returncode}\n"
            f"stdout: {p.stdout}\nstderr: {p.stderr}"
        )
    return p


def register(repo: Path, bundle: Path, name: str, timeout: float = 120.0) -> int:
    """`ferroserve register BUNDLE --repo REPO --name NAME`; returns the new version."""
    p = cli("register", bundle, "--repo", repo, "--name", name, timeout=timeout)
    return int(p.stdout.strip().splitlines()[-1])


def admin(addr, method: str, path: str, body=None, timeout: float = 120.0) -> Response:
    """A management request with a JSON body (none when BODY is None)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    return request(addr, method, path, data, headers, timeout=timeout)


def put_deployment(addr, endpoint: str, deployment: str, spec: dict) -> Response:
    return admin(addr, "PUT", f"/v2/admin/endpoints/{endpoint}/deployments/{deployment}", spec)


def set_traffic(addr, endpoint: str, weights: dict[str, int], mirror="absent") -> Response:
    """PUT .../traffic; MIRROR left out unless given (None removes it)."""
    body: dict = {"weights": weights}
    if mirror != "absent":
        body["mirror"] = mirror
    return admin(addr, "PUT", f"/v2/admin/endpoints/{endpoint}/traffic", body)


def endpoint_view(addr, endpoint: str) -> dict:
    r = admin(addr, "GET", f"/v2/admin/endpoints/{endpoint}")
    assert r.status == 200, (r.status, r.body[:500])
    return r.json()


def live_weights(view: dict) -> dict[str, int]:
    return {d["name"]: d["weight"] for d in view["deployments"]}


class EventStream:
    """`GET /v2/admin/events` read by a background thread: every CloudEvent
    (parsed `data:` JSON of each server-sent event) lands in `events`.
    `wait_for(pred)` blocks until one matches. Close it before stopping the
    server."""

    def __init__(self, addr, timeout: float = 300.0):
        self.conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
        self.conn.request("GET", "/v2/admin/events", headers={"accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, (self.resp.status, self.resp.read()[:500])
        ctype = self.resp.getheader("content-type", "")
        assert ctype.startswith("text/event-stream"), ctype
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._read, name="sse-reader", daemon=True)
        self.thread.start()

    def _read(self):
        data: list[str] = []
        try:
            while True:
                raw = self.resp.readline()
                if not raw:
                    break
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        doc = json.loads("\n".join(data))
                        with self.cond:
                            self.events.append(doc)
                            self.cond.notify_all()
                    data = []
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
        except BaseException as e:  # noqa: BLE001 - reported by wait_for
            if not self.closed:
                self.error = e
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def snapshot(self) -> list[dict]:
        with self.cond:
            return list(self.events)

    def wait_for(self, pred, timeout: float = 30.0, what: str = "event") -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    types = [(e.get("type"), e.get("subject")) for e in self.events]
                    raise AssertionError(
                        f"no {what} within {timeout} s (stream closed={self.closed}, error={self.error!r}); "
                        f"events seen: {types}"
                    )
                self.cond.wait(min(left, 0.5))

    def close(self):
        import socket

        with self.cond:
            self.closed = True
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        self.thread.join(5)


def audit_log(repo: Path) -> list[tuple[str, str, dict]]:
    """(action, subject, detail) rows of REPO/registry.db's audit_log, oldest first."""
    import sqlite3

    db = sqlite3.connect(f"file:{Path(repo) / 'registry.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT action, subject, detail FROM audit_log ORDER BY id").fetchall()
    finally:
        db.close()
    return [(a, s, json.loads(d) if d else {}) for a, s, d in rows]


# --------------------------------------------------------------------------
# python entry-script bundles (test_python_backend.py)

BUNDLES = REPO_ROOT / "examples" / "bundles"


def python_interpreter() -> Path:
    """The interpreter the python bundles are served with in the tests: the
    project's .venv (absolute, so it does not depend on any working folder)."""
    return REPO_ROOT / ".venv" / "bin" / "python"


_SCRIPT_COUNTER = iter(range(1_000_000))


def load_entry_script(bundle_dir: Path, script: str = "score.py"):
    """Imports BUNDLE_DIR/SCRIPT in-process as a fresh module and calls its
    init() with AZUREML_MODEL_DIR (and FERROSERVE_MODEL_DIR) set to the
    bundle folder, as a worker does; the environment is restored after.
    Returns the module: call its run() for the expected answers."""
    import importlib.util

    bundle_dir = Path(bundle_dir).resolve()
    name = f"_ferro_entry_script_{next(_SCRIPT_COUNTER)}"
    spec = importlib.util.spec_from_file_location(name, bundle_dir / script)
    module = importlib.util.module_from_spec(spec)
    saved = {k: os.environ.get(k) for k in ("AZUREML_MODEL_DIR", "FERROSERVE_MODEL_DIR")}
    os.environ["AZUREML_MODEL_DIR"] = os.environ["FERROSERVE_MODEL_DIR"] = str(bundle_dir)
    no_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ inside the bundle folders
    try:
        spec.loader.exec_module(module)
        if callable(getattr(module, "init", None)):
            module.init()
    finally:
        sys.dont_write_bytecode = no_bytecode
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return module


def encode_tensors(tensors: list[tuple[str, str, np.ndarray]], outputs: list[str], binary: bool,
                   request_id: str = "") -> tuple[bytes, dict[str, str]]:
    """An inference body (and headers) as tritonclient.http would send it,
    for inputs given as (name, datatype, array): no model.onnx needed."""
    import tritonclient.http as httpclient

    infer_inputs = []
    for name, datatype, arr in tensors:
        i = httpclient.InferInput(name, list(arr.shape), datatype)
        i.set_data_from_numpy(arr, binary_data=binary)
        infer_inputs.append(i)
    requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    body, header_len = httpclient.InferenceServerClient.generate_request_body(
        infer_inputs, outputs=requested, request_id=request_id
    )
    headers = {"Content-Type": "application/octet-stream" if header_len else "application/json"}
    if header_len:
        headers["Inference-Header-Content-Length"] = str(header_len)
    return body, headers

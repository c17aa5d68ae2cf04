"""`ferroserve package`: the OCI image archive checked by real OCI tools from
Debian's packages. skopeo reads its manifest and config; umoci unpacks it
(rootless); the unpacked binary then runs from the unpacked root as a
container would: PID 1 of its own PID and mount namespaces, chrooted into a read-only
root with a tmpfs on /tmp, as the image's user, with the image's
entrypoint and environment and nothing from the host. It must answer
inference requests correctly and exit 0 on SIGTERM. Two runs on the same
inputs must write the same bytes, and a second image on the first as its
base must keep the base's layers and take glibc from it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ferro

EPOCH = "1700000000"


def _ensure_tools():
    missing = [t for t in ("skopeo", "umoci", "unshare", "chroot") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{', '.join(missing)} missing, and apt-get cannot install them here (not root or no apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    pkgs = ["skopeo", "umoci"]
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], env=env,
                           capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"apt-get install {' '.join(pkgs)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    still = [t for t in ("skopeo", "umoci", "unshare", "chroot") if shutil.which(t) is None]
    assert not still, f"still missing after apt-get: {still}"


@pytest.fixture(scope="module")
def tools():
    _ensure_tools()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package(*args, check=True):
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, NO_COLOR="1")
    p = subprocess.run([str(ferro.server_binary()), "package", *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, f"package {args} exited {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
    return p


def skopeo_json(*args):
    p = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"skopeo {args}: {p.stderr}"
    return json.loads(p.stdout)


def content_sha(version_dir: Path, unregistered: tuple[str, ...] = ()) -> str:
    """SHA-256 over `sha256  path` lines of every file, sorted by path: what
    the image's label must say (the registry records the same files)."""
    lines = []
    for f in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(version_dir).as_posix()
        if rel in unregistered:
            continue
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def unpack(archive: Path, work: Path, name: str) -> Path:
    layout = work / f"{name}-layout"
    bundle = work / f"{name}-bundle"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archive}", f"oci:{layout}:{name}"],
                   check=True, capture_output=True, timeout=300)
    r = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{name}", str(bundle)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"umoci unpack: {r.stderr}"
    return bundle


def isolation_mode() -> str:
    """How this machine lets the test run the image: a mount namespace as
    root, a rootless user namespace, or neither (a sandbox without
    namespaces): then the image's own dynamic loader runs its binary from
    the unpacked root, still with the image's libraries and environment.
    FERROSERVE_TEST_ISOLATION forces one (to check the fallbacks)."""
    forced = os.environ.get("FERROSERVE_TEST_ISOLATION")
    if forced:
        assert forced in ("namespace", "rootless", "loader"), forced
        return forced
    for mode, cmd in (("namespace", ["unshare", "--mount", "--pid", "--fork", "true"]),
                      ("rootless", ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "true"])):
        if mode == "namespace" and os.geteuid() != 0:
            continue
        if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
            return mode
    return "loader"


class Contained:
    """The unpacked image's entrypoint run as a container runtime would:
    a private mount namespace, the root read-only, tmpfs on /tmp, /proc,
    /sys and /dev mounted, the image's env only, the image's user."""

    def __init__(self, bundle: Path, ports: dict[str, int]):
        spec = json.loads((bundle / "config.json").read_text())
        proc = spec["process"]
        self.spec = spec
        args = list(proc["args"])
        for flag, port in ports.items():
            i = args.index(flag)
            args[i + 1] = str(port)  # what `docker run IMAGE ARGS` would override
        i = args.index("--host")
        args[i + 1] = "127.0.0.1"
        root = bundle / "rootfs"
        self.root = root
        self.mode = isolation_mode()
        self.lines: list[str] = []
        self.ready = threading.Event()
        if self.mode == "loader":
            print("no mount namespace here: running the image's binary through its own loader, without chroot")
            self._start_with_loader(root, proc, args)
        else:
            self._start_contained(root, proc, args)
        deadline = time.monotonic() + 120
        while not self.ready.wait(0.05):
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before listening\n{self.log()}"
            assert time.monotonic() < deadline, f"not listening after 120 s\n{self.log()}"

    def _start_with_loader(self, root: Path, proc: dict, args: list[str]):
        env = dict(e.split("=", 1) for e in proc["env"])
        lib_dir = root / env["LD_LIBRARY_PATH"].lstrip("/")
        env["ORT_DYLIB_PATH"] = str(root / env["ORT_DYLIB_PATH"].lstrip("/"))
        env["LD_LIBRARY_PATH"] = str(lib_dir)
        env["TMPDIR"] = env["HOME"] = env["XDG_CACHE_HOME"] = str(root / "tmp")
        interp = root / "lib64" / "ld-linux-x86-64.so.2"
        target = os.readlink(interp)
        loader = root / target.lstrip("/") if target.startswith("/") else interp.parent / target
        i = args.index("--repo")
        args[i + 1] = str(root / args[i + 1].lstrip("/"))
        cmd = [str(loader), "--library-path", str(lib_dir), str(root / args[0].lstrip("/")), *args[1:]]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _start_contained(self, root: Path, proc: dict, args: list[str]):
        user = f"{proc['user']['uid']}:{proc['user']['gid']}"
        env = " ".join(f"'{e}'" for e in proc["env"])
        chroot = shutil.which("chroot")
        if self.mode == "namespace":
            prefix = ["unshare", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--"]
            userspec = f"--userspec={user}"
        else:  # rootless: a user namespace maps us to root inside
            prefix = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--"]
            userspec = ""
        script = (
            f"set -e; R='{root}'; mount --bind \"$R\" \"$R\"; mount -o remount,bind,ro \"$R\" \"$R\"; "
            f"mount -t proc proc \"$R/proc\"; mount -t tmpfs -o mode=1777 tmpfs \"$R/tmp\"; "
            f"mount --rbind /sys \"$R/sys\"; mount --rbind /dev \"$R/dev\"; "
            f"cd /; exec env -i {env} {chroot} {userspec} \"$R\" "
            + " ".join(f"'{a}'" for a in args)
        )
        self.proc = subprocess.Popen([*prefix, "sh", "-c", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "HTTP server listening on" in line:
                self.ready.set()

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def server_pid(self) -> int:
        """unshare's child, which exec'd into ferroserve (or, through the
        loader, the process itself)."""
        if self.mode == "loader":
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        pid = int(children[0])
        exe = os.readlink(f"/proc/{pid}/exe")
        assert exe.endswith("/usr/local/bin/ferroserve"), exe
        return pid

    def stop(self) -> int:
        os.kill(self.server_pid(), signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def layer_tars(layout: Path):
    """The uncompressed tar of each layer of the layout's one image."""
    import gzip
    import io
    import tarfile

    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: (layout / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    for layer in manifest["layers"]:
        yield tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"]))))
    non_empty = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(non_empty) == len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]), config["history"]


def check_serving(c: Contained, http: int, metrics: int, models: list[str]):
    addr = ("127.0.0.1", http)
    assert ferro.request(addr, "GET", "/v2/health/ready").status == 200
    for k, model in enumerate(models):
        rng = np.random.default_rng(40 + k)
        feeds = ferro.random_inputs(rng, model, 3)
        body, headers = ferro.encode_infer(feeds, model, True, True)
        resp = ferro.request(addr, "POST", ferro.infer_path(model), body, headers)
        assert resp.status == 200, (model, resp.status, resp.body[:300], c.log())
        result = ferro.decode_infer(resp)
        ref = ferro.model_ref(model)
        want = ref.run(feeds)
        for o in ref.outputs:
            ferro.assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"{model}.{o.name}")
    m = ferro.request(("127.0.0.1", metrics), "GET", "/metrics")
    assert m.status == 200 and b"ferroserve_requests_total" in m.body
    # the server really ran as the image's user, from the image's files
    pid = c.server_pid()
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    if c.mode == "namespace":
        assert uid_line.split()[1] == "1000", uid_line
    maps = Path(f"/proc/{pid}/maps").read_text()
    rootfs = str(c.root)
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
        if ".so" in path:
            assert path.startswith(rootfs) or path.startswith("/usr/local/lib/ferroserve/"), \
                f"{path} is not one of the image's files"
    assert "/usr/local/lib/ferroserve/libonnxruntime.so" in maps, "ONNX Runtime not loaded from the image"
    assert "/.venv/" not in maps, "a library from the host's venv was loaded"


def test_package_is_reproducible_inspectable_and_runs(tools, tmp_path, make_repo):
    repo = make_repo({"mlp": None, "conv": None})
    ferro.cli("repo", "check", "--repo", repo, check=False)  # the registry, from the folders
    ferro.cli("models", "alias", "--repo", repo, "conv", "prod", "1")
    # a file nobody registered is not packaged
    (repo / "mlp" / "1" / "stray.txt").write_text("not registered\n")
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    out = json.loads(package("--repo", repo, "--model", "mlp", "--model", "conv@prod", "--out", a, "--json").stdout)
    out_b = json.loads(package("--repo", repo, "--model", "conv:1", "--model", "mlp:1", "--out", b, "--json").stdout)
    assert out["digest"] == out_b["digest"], "two runs on the same inputs gave different images"
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert not list(tmp_path.glob("*partial"))

    # skopeo reads it
    info = skopeo_json("inspect", f"oci-archive:{a}")
    assert info["Digest"] == out["digest"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Created"].startswith("2023-11-14T22:13:20")
    labels = info["Labels"]
    assert labels["dev.ferroserve.models"] == "conv:1,mlp:1"
    for model in ("mlp", "conv"):
        assert labels[f"dev.ferroserve.model.{model}.1.sha256"] == content_sha(repo / model / "1", ("stray.txt",)), model
    assert labels["org.opencontainers.image.title"] == "ferroserve"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert len(info["Layers"]) == 5, info["Layers"]  # system, libraries, binary, two models
    config = skopeo_json("inspect", "--config", f"oci-archive:{a}")["config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/usr/local/bin/ferroserve"]
    assert config["Cmd"][:3] == ["serve", "--repo", "/models"]
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    assert "/models" in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"
    # every flag of the image's command is one `serve` accepts
    help_text = ferro.cli("serve", "--help").stdout
    for flag in (x for x in config["Cmd"] if x.startswith("--")):
        assert flag in help_text, flag

    # umoci unpacks it, and it serves from the unpacked root alone
    bundle = unpack(a, tmp_path, "ferroserve")
    rootfs = bundle / "rootfs"
    assert (rootfs / "usr/local/bin/ferroserve").is_file()
    assert (rootfs / "models/mlp/1/model.onnx").read_bytes() == (repo / "mlp/1/model.onnx").read_bytes()
    assert not (rootfs / "models/registry.db").exists(), "the source registry must not be copied"
    assert not (rootfs / "models/mlp/1/stray.txt").exists(), "an unregistered file was packaged"
    # /models belongs to the server's user in every layer that lists it (the upper one wins)
    seen = 0
    for tar in layer_tars(tmp_path / "ferroserve-layout"):
        for m in tar.getmembers():
            if m.name.rstrip("/") == "models":
                assert (m.uid, m.gid) == (1000, 1000), (m.name, m.uid)
                seen += 1
            assert m.mtime == int(EPOCH), (m.name, m.mtime)
    assert seen == 3, seen  # the system layer and both model layers
    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--metrics-port": free_port()}
    c = Contained(bundle, ports)
    try:
        check_serving(c, ports["--http-port"], ports["--metrics-port"], ["mlp", "conv"])
        rc = c.stop()
        assert rc == 0, f"exit code {rc} after SIGTERM\n{c.log()}"
        assert "shut down cleanly" in c.log()
    finally:
        c.kill()

    # the first image as the base of a second: its layers kept, glibc taken from it
    base_layout = tmp_path / "base-layout"
    subprocess.run(["skopeo", "copy", f"oci-archive:{a}", f"oci:{base_layout}:base"], check=True,
                   capture_output=True, timeout=300)
    c_tar = tmp_path / "c.tar"
    out_c = json.loads(package("--repo", repo, "--model", "mlp", "--base", base_layout,
                               "--platform", "linux/amd64", "--out", c_tar, "--json").stdout)
    assert "libc.so.6" in out_c["libraries_from_base"], out_c
    info_c = skopeo_json("inspect", f"oci-archive:{c_tar}")
    assert info_c["Layers"][:5] == info["Layers"], "the base's layers must come first, unchanged"
    assert len(info_c["Layers"]) == 9
    assert info_c["Labels"]["dev.ferroserve.models"] == "mlp:1"
    bundle_c = unpack(c_tar, tmp_path, "derived")
    list(layer_tars(tmp_path / "derived-layout"))  # history adds up over base and own layers
    passwd = (bundle_c / "rootfs/etc/passwd").read_text()
    assert passwd.count(":1000:") == 1 and passwd.startswith("root:"), passwd  # the base's, not a second user
    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--metrics-port": free_port()}
    c2 = Contained(bundle_c, ports)
    try:
        check_serving(c2, ports["--http-port"], ports["--metrics-port"], ["mlp", "conv"])
        assert c2.stop() == 0, c2.log()
    finally:
        c2.kill()


def test_package_errors_are_one_clear_line(tools, tmp_path, make_repo):
    repo = make_repo({"mlp": None, "iris": None})
    out = tmp_path / "x.tar"
    cases = [
        (["--model", "mlp", "--platform", "linux/arm64"], "built for amd64"),
        (["--model", "mlp", "--platform", "amd64"], "OS/ARCH"),
        (["--model", "nosuch"], "nosuch"),
        (["--model", "mlp:7"], "mlp:7"),
        (["--model", "mlp@canary"], "no alias"),
        (["--model", "iris"], "python backend"),
        (["--model", "mlp", "--base", tmp_path / "nobase"], "OCI image layout"),
        (["--model", "mlp", "--label", "novalue"], "KEY=VALUE"),
        (["--model", "mlp", "--runtime-libs", tmp_path], "no shared library"),
        (["--model", "mlp", "--tag", "bad/tag"], "--tag"),
        (["--model", "mlp", "--label", "dev.ferroserve.models=lies"], "set by package itself"),
    ]
    for args, needle in cases:
        p = package("--repo", repo, "--out", out, *args, check=False)
        assert p.returncode != 0, (args, p.stdout)
        assert needle in p.stderr, (args, p.stderr)
        assert "panicked" not in p.stderr and "backtrace" not in p.stderr.lower(), p.stderr
        assert not out.exists()


def test_package_refuses_files_changed_since_registration(tools, tmp_path, make_repo):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert ferro.register(repo, ferro.ensure_examples() / "mlp" / "1", "mlp") == 1
    (repo / "mlp" / "1" / "labels.txt").write_text("tampered\n")
    p = package("--repo", repo, "--model", "mlp", "--out", tmp_path / "x.tar", check=False)
    assert p.returncode != 0
    assert "changed since it was registered" in p.stderr and "labels.txt" in p.stderr, p.stderr


def test_package_refuses_symlinks_out_of_the_bundle(tools, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert ferro.register(repo, ferro.ensure_examples() / "mlp" / "1", "mlp") == 1
    labels = repo / "mlp" / "1" / "labels.txt"
    outside = tmp_path / "outside.txt"
    shutil.copy(labels, outside)  # same bytes: the hash check alone would pass
    labels.unlink()
    labels.symlink_to(outside)
    p = package("--repo", repo, "--model", "mlp", "--out", tmp_path / "x.tar", check=False)
    assert p.returncode != 0
    assert "leads outside the version folder" in p.stderr, p.stderr

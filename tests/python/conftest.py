"""Fixtures for ferroserve's protocol tests: the example repository, one
shared server for the whole session, and a factory for dedicated servers
(special bundles, special flags) that are shut down with SIGTERM and must
exit with code 0.

Run from the repository root:

    .venv/bin/python -m pytest tests/python -q

The binary is FERROSERVE_BIN, or the newest of target/{release,debug}/ferroserve
(build it with `cargo build -p ferroserve`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ferro  # noqa: E402


@pytest.fixture(scope="session")
def examples_repo() -> Path:
    return ferro.ensure_examples()


@pytest.fixture(scope="session")
def server(examples_repo):
    """ferroserve serving every example bundle, shared by the session."""
    srv = ferro.Server(examples_repo)
    yield srv
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with code {rc} after SIGTERM\n{srv.log()}"


@pytest.fixture(scope="session")
def addr(server):
    return server.addr


@pytest.fixture(scope="session")
def triton(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url, connection_timeout=60, network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_url(server):
    """host:port of the shared server's gRPC listener."""
    return server.grpc_url


@pytest.fixture(scope="session")
def grpc_triton(server):
    """tritonclient.grpc client of the shared server (no stream: tests that
    stream open their own client, one stream per client)."""
    client = ferro.grpc_client(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def typed_dtypes(tmp_path_factory):
    """(server, repo) serving `dtypes_typed`: the dtypes bundle without its
    FP16 tensor, so a request can carry every input in typed `contents`
    (FP16 has no typed field, and the protocol forbids mixing typed and raw)."""
    repo = ferro.make_typed_dtypes_repo(tmp_path_factory.mktemp("typed_dtypes"))
    srv = ferro.Server(repo)
    yield srv, repo
    rc = srv.stop(timeout=30)
    assert rc == 0, f"ferroserve exited with code {rc} after SIGTERM\n{srv.log()}"


@pytest.fixture
def start_server():
    """`start_server(repo, *extra_args)` starts a dedicated server; at the end
    of the test each one still running gets SIGTERM and must exit with 0."""
    started: list[ferro.Server] = []

    def start(repo, *extra_args) -> ferro.Server:
        srv = ferro.Server(repo, extra_args)
        started.append(srv)
        return srv

    yield start
    failures = []
    for srv in started:
        try:
            rc = srv.stop(timeout=30)
        except AssertionError as e:
            failures.append(str(e))
            continue
        if rc != 0:
            failures.append(f"ferroserve exited with code {rc} after SIGTERM\n{srv.log()}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def make_repo(tmp_path):
    """`make_repo({"conv": {"max_queue_size": 1}})`: a repository in tmp_path
    holding copies of the named example bundles with edited settings."""
    counter = iter(range(1000))

    def make(bundles):
        return ferro.make_repo(tmp_path / f"repo{next(counter)}", bundles)

    return make

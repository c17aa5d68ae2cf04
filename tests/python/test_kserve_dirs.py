"""What KServe's storage initializer leaves in /mnt/models, served under
the InferenceService's name (`--model-name`, as KServe's runtimes take it):
a bare model.onnx (the folder, or the file itself), one bundle folder, one
Triton model folder, a ferroserve repository of one model, and a repository
of several that must hold the name. The model directory is never written
(KServe mounts it read-only): a staged repository under the temporary
folder is what gets the registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import ferro


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def check_served_as(srv, served: str, model: str, seed: int = 3):
    meta = ferro.request(srv.addr, "GET", f"/v2/models/{served}")
    assert meta.status == 200, (served, meta.status, meta.body[:300], srv.log(30))
    rng = np.random.default_rng(seed)
    feeds = ferro.random_inputs(rng, model, 2)
    body, headers = ferro.encode_infer(feeds, model, True, True)
    resp = ferro.request(srv.addr, "POST", ferro.infer_path(served), body, headers)
    assert resp.status == 200, (served, resp.status, resp.body[:300])
    result = ferro.decode_infer(resp)
    ref = ferro.model_ref(model)
    want = ref.run(feeds)
    for o in ref.outputs:
        ferro.assert_tensor(o.datatype, result.as_numpy(o.name), want[o.name], f"{served}.{o.name}")


def test_bare_model_file_and_folder(start_server, tmp_path):
    ex = ferro.ensure_examples()
    mnt = tmp_path / "mnt" / "models"
    mnt.mkdir(parents=True)
    shutil.copy(ex / "mlp" / "1" / "model.onnx", mnt / "model.onnx")
    before = snapshot(mnt)
    srv = start_server(mnt, "--model-name", "fraud-detector")
    check_served_as(srv, "fraud-detector", "mlp")
    assert ferro.request(srv.addr, "GET", "/v2/models/model").status == 404
    assert ferro.request(srv.addr, "GET", "/v2/health/ready").status == 200
    # the file itself, without a name: the file's stem
    srv2 = start_server(mnt / "model.onnx")
    check_served_as(srv2, "model", "mlp")
    assert srv.stop(timeout=30) == 0 and srv2.stop(timeout=30) == 0
    assert snapshot(mnt) == before, "the model directory was written to"


def test_one_bundle_folder_takes_the_name(start_server, tmp_path):
    ex = ferro.ensure_examples()
    mnt = tmp_path / "models"
    shutil.copytree(ex / "conv" / "1", mnt)
    before = snapshot(mnt)
    srv = start_server(mnt, "--model-name", "vision")
    check_served_as(srv, "vision", "conv")
    assert ferro.request(srv.addr, "GET", "/v2/models/conv").status == 404
    # without --model-name the bundle's own name
    srv2 = start_server(mnt)
    check_served_as(srv2, "conv", "conv")
    assert srv.stop(timeout=30) == 0 and srv2.stop(timeout=30) == 0
    assert snapshot(mnt) == before


def test_triton_model_folder_and_single_model_repositories(start_server, tmp_path):
    ex = ferro.ensure_examples()
    triton = tmp_path / "triton_mlp"
    (triton / "1").mkdir(parents=True)
    shutil.copy(ex / "mlp" / "1" / "model.onnx", triton / "1" / "model.onnx")
    (triton / "config.pbtxt").write_text(
        'name: "triton_mlp"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]\n'
        'output [ { name: "probabilities", data_type: TYPE_FP32, dims: [ 10 ] } ]\n'
    )
    before = snapshot(triton)
    srv = start_server(triton, "--model-name", "iris-t")
    check_served_as(srv, "iris-t", "mlp")

    # a Triton repository of one model, and a ferroserve repository of one
    troot = tmp_path / "troot"
    troot.mkdir()
    shutil.copytree(triton, troot / "triton_mlp")
    srv2 = start_server(troot, "--model-name", "renamed")
    check_served_as(srv2, "renamed", "mlp")
    froot = ferro.make_repo(tmp_path / "froot", {"conv": None})
    srv3 = start_server(froot, "--model-name", "renamed-conv")
    check_served_as(srv3, "renamed-conv", "conv")
    assert not (froot / "registry.db").exists(), "a renamed repository is staged, not written"
    for s in (srv, srv2, srv3):
        assert s.stop(timeout=30) == 0, s.log()
    assert snapshot(triton) == before


def test_bare_model_with_external_weights(start_server, tmp_path):
    """ONNX's external data (weights in a file beside model.onnx) is found."""
    import onnx

    mnt = tmp_path / "ext"
    mnt.mkdir()
    m = onnx.load(str(ferro.ensure_examples() / "mlp" / "1" / "model.onnx"))
    onnx.save_model(m, str(mnt / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    assert (mnt / "model.onnx.data").stat().st_size > 1000
    srv = start_server(mnt, "--model-name", "external")
    check_served_as(srv, "external", "mlp")


def test_names_from_the_files_are_checked(tmp_path):
    ex = ferro.ensure_examples()
    bundle = tmp_path / "b"
    shutil.copytree(ex / "mlp" / "1", bundle)
    toml = bundle / "bundle.toml"
    toml.write_text(toml.read_text().replace('name = "mlp"', 'name = "../../escape"', 1))
    p = ferro.cli("serve", "--repo", bundle, "--http-port", "0", "--grpc-port", "0", check=False, timeout=60)
    assert p.returncode != 0
    assert "give --model-name" in p.stderr and "escape" in p.stderr, p.stderr
    assert not (tmp_path.parent / "escape").exists()


def test_repository_of_several_models(start_server, tmp_path):
    repo = ferro.make_repo(tmp_path / "many", {"mlp": None, "conv": None})
    before = snapshot(repo)
    srv = start_server(repo, "--model-name", "mlp")
    check_served_as(srv, "mlp", "mlp")
    check_served_as(srv, "conv", "conv")
    assert srv.stop(timeout=30) == 0
    # served where it is, as always: only the registry appears
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if not k.startswith("registry.db")} == before
    p = ferro.cli("serve", "--repo", repo, "--model-name", "nosuch", "--http-port", "0", "--grpc-port", "0",
                  check=False, timeout=60)
    assert p.returncode != 0
    assert '--model-name "nosuch"' in p.stderr and "conv, mlp" in p.stderr, p.stderr
    assert "panicked" not in p.stderr


def test_bad_model_directories_are_clear_errors(tmp_path):
    ex = ferro.ensure_examples()
    two = tmp_path / "two"
    two.mkdir()
    for n in ("a.onnx", "b.onnx"):
        shutil.copy(ex / "mlp" / "1" / "model.onnx", two / n)
    (tmp_path / "notes.txt").write_text("x")
    cases = [
        ([two], "2 .onnx files"),
        ([tmp_path / "notes.txt"], "expected a folder or a .onnx file"),
        ([tmp_path / "absent"], "cannot read it"),
        ([two / "a.onnx", "--model-name", "Bad Name!"], "--model-name"),
    ]
    for args, needle in cases:
        p = ferro.cli("serve", "--repo", *args, "--http-port", "0", "--grpc-port", "0", check=False, timeout=60)
        assert p.returncode != 0, args
        assert needle in p.stderr, (args, p.stderr)
        assert "panicked" not in p.stderr

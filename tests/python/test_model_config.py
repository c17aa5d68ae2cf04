"""Triton's model configuration extension over HTTP: tritonclient's
get_model_config on every ONNX example, values checked against the bundle."""

import pytest

import ferro

TYPES = {"FP32": "TYPE_FP32", "FP16": "TYPE_FP16", "FP64": "TYPE_FP64", "BYTES": "TYPE_STRING",
         "INT64": "TYPE_INT64", "INT32": "TYPE_INT32", "INT8": "TYPE_INT8", "UINT8": "TYPE_UINT8",
         "BOOL": "TYPE_BOOL", "INT16": "TYPE_INT16", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
         "UINT64": "TYPE_UINT64"}


@pytest.mark.parametrize("model", ferro.MODELS)
def test_config_matches_the_bundle(triton, model):
    manifest = ferro.bundle_manifest(model)
    config = triton.get_model_config(model)
    b = manifest["batching"]
    assert config["name"] == model
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == b["max_batch_size"]
    batched = b["max_batch_size"] > 0
    for section, key in (("inputs", "input"), ("outputs", "output")):
        declared = {t["name"]: t for t in manifest.get(section, [])}
        got = {t["name"]: t for t in config[key]}
        for name, t in declared.items():
            assert got[name]["data_type"] == TYPES[t["datatype"]], (model, name, got[name])
            want_dims = t["shape"][1:] if batched else t["shape"]
            assert got[name]["dims"] == want_dims, (model, name, got[name])
            if t.get("labels"):
                assert got[name]["label_filename"] == t["labels"]
    assert config["instance_group"][0]["count"] == manifest["instances"]["count"]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    if batched:
        d = config["dynamic_batching"]
        assert d["preferred_batch_size"] == b.get("preferred_batch_sizes", [])
        assert d["max_queue_delay_microseconds"] == b.get("max_queue_delay_us", 0)
        assert d["default_queue_policy"]["max_queue_size"] == b["max_queue_size"]
        assert d["default_queue_policy"]["default_timeout_microseconds"] == b["timeout_ms"] * 1000
    else:
        assert "dynamic_batching" not in config
    # The versioned route answers the same.
    assert triton.get_model_config(model, model_version="1") == config


def test_config_of_an_unknown_model_is_404(server):
    resp = ferro.request(server.addr, "GET", "/v2/models/nope/config")
    assert resp.status == 404, resp

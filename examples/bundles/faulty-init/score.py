"""faulty_init: text_stats whose init() always fails, so no worker ever becomes ready."""

import numpy as np

N_VALUES = 16
STD_FLOOR = 1e-6


def _values(inputs):
    if "values" not in inputs:
        raise ValueError(f"values: missing input (got {sorted(inputs)})")
    values = np.asarray(inputs["values"])
    if values.ndim != 2 or values.shape[1] != N_VALUES:
        raise ValueError(f"values: expected shape [N, {N_VALUES}], got {list(values.shape)}")
    return values


def _stats(values):
    """Row-wise standardisation and summary, computed in float64, returned as float32."""
    x = values.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    normalized = (x - mean) / np.maximum(std, STD_FLOOR)
    summary = np.concatenate([mean, std, x.max(axis=1, keepdims=True)], axis=1)
    return {"normalized": normalized.astype(np.float32), "summary": summary.astype(np.float32)}


def init():
    raise RuntimeError("init failed on purpose: model file missing")


def run(inputs):
    return _stats(_values(inputs))

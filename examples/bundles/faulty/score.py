"""faulty: text_stats (same signature, same outputs) with three triggers, for tests.

A batch in which some row has values[:, 0] equal to
  777: the worker process exits at once (os._exit(3));
  888: run() never returns (sleeps forever; the manifest's timeout_ms is 2000);
  666: run() raises ValueError("row I: values[0] = 666 is the forbidden value"),
       I being the first such row's index within the batch.
Checked in that order, so a batch holding 777 exits whatever else it holds.
Any other batch is computed exactly as text_stats computes it.
"""

import os
import time

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


EXIT_VALUE = 777
HANG_VALUE = 888
RAISE_VALUE = 666


def init():
    pass


def run(inputs):
    values = _values(inputs)
    first = values[:, 0]
    if (first == EXIT_VALUE).any():
        os._exit(3)
    if (first == HANG_VALUE).any():
        while True:
            time.sleep(3600)
    if (first == RAISE_VALUE).any():
        row = int(np.flatnonzero(first == RAISE_VALUE)[0])
        raise ValueError(f"row {row}: values[0] = {RAISE_VALUE} is the forbidden value")
    return _stats(values)

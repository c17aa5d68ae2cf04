"""iris: a scikit-learn LogisticRegression served without scikit-learn.

Raw style (Azure ML scoring-script contract): run() gets one request body,
{"data": [[sepal length, sepal width, petal length, petal width], ...]} (cm),
and returns {"predictions": [class index, ...], "labels": [class name, ...],
"probabilities": [[p(setosa), p(versicolor), p(virginica)], ...]}.

examples/generate.py trained the model with scikit-learn and stored its
fitted parameters in model.json; the prediction is rebuilt here with numpy:
softmax(X @ coef.T + intercept), as LogisticRegression.predict_proba does.
"""

import json
import math
import os

import numpy as np

N_FEATURES = 4
_model = None


def init():
    global _model
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")
    with open(path, encoding="utf-8") as f:
        m = json.load(f)
    coef = np.array(m["coef"], dtype=np.float64)
    intercept = np.array(m["intercept"], dtype=np.float64)
    if coef.shape != (len(m["labels"]), N_FEATURES) or intercept.shape != (len(m["labels"]),):
        raise RuntimeError(f"{path}: coef {coef.shape} / intercept {intercept.shape} do not match {len(m['labels'])} classes")
    _model = {"coef": coef, "intercept": intercept, "labels": list(m["labels"])}


def _short(value, limit=80):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rows(raw_data):
    if isinstance(raw_data, (bytes, bytearray)):
        try:
            raw_data = raw_data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"request body is not UTF-8: {e}") from None
    if not isinstance(raw_data, str):
        raise ValueError(f"request body: expected a JSON string, got {type(raw_data).__name__}")
    try:
        body = json.loads(raw_data)
    except json.JSONDecodeError as e:
        raise ValueError(f"request body is not JSON: {e}") from None
    if not isinstance(body, dict) or "data" not in body:
        raise ValueError(f'data: missing; expected {{"data": [[{N_FEATURES} numbers], ...]}}, got {_short(body)}')
    data = body["data"]
    if not isinstance(data, list):
        raise ValueError(f"data: expected a list of rows of {N_FEATURES} numbers, got {_short(data)}")
    for i, row in enumerate(data):
        ok = (
            isinstance(row, list)
            and len(row) == N_FEATURES
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)
        )
        if not ok:
            raise ValueError(
                f"data[{i}]: expected a row of {N_FEATURES} finite numbers "
                f"(sepal length, sepal width, petal length, petal width), got {_short(row)}"
            )
    return np.array(data, dtype=np.float64).reshape(len(data), N_FEATURES)


def run(raw_data):
    if _model is None:
        init()
    x = _rows(raw_data)
    logits = x @ _model["coef"].T + _model["intercept"]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    classes = p.argmax(axis=1)
    return {
        "predictions": [int(c) for c in classes],
        "labels": [_model["labels"][c] for c in classes],
        "probabilities": [[float(v) for v in row] for row in p],
    }

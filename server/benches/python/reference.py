# The reference for the python benchmark (server/benches/python.rs): one
# entry script's run() called in a plain Python loop, with no server, queue,
# framing or copies around it.
#
# argv[1] is a JSON object: script, style ("tensor" or "raw"), inputs (tensor:
# [{name, dtype, shape, file}], the batch as little-endian bytes) or body
# (raw: a file holding the request body), warmup_s and measure_s. The script
# is imported and init() called as ferroserve's worker harness does (with
# AZUREML_MODEL_DIR set by the caller); then it prints "ready", waits for a
# line on stdin (so several of these start their clocks together), loops
# run() for warmup_s unmeasured and measure_s measured, and prints one JSON
# line: {"calls": N, "seconds": S}.
import importlib.util
import json
import os
import sys
import time

cfg = json.loads(sys.argv[1])
# As the harness does: the script's own prints go to stderr, so stdout
# carries only this protocol.
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr

script = cfg["script"]
folder = os.path.dirname(os.path.abspath(script))
if folder not in sys.path:
    sys.path.insert(0, folder)
spec = importlib.util.spec_from_file_location("score", script)
module = importlib.util.module_from_spec(spec)
sys.modules["score"] = module
spec.loader.exec_module(module)
run = module.run
init = getattr(module, "init", None)
if callable(init):
    init()

if cfg["style"] == "tensor":
    import numpy as np

    arg = {
        t["name"]: np.fromfile(t["file"], dtype=np.dtype(t["dtype"])).reshape(t["shape"])
        for t in cfg["inputs"]
    }
else:
    with open(cfg["body"], "rb") as f:
        arg = f.read().decode("utf-8")

# Once before the clock: a script that fails says so here, not as a rate.
run(arg)
print("ready", file=out, flush=True)
sys.stdin.readline()


def loop(seconds):
    calls = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        run(arg)
        calls += 1
        now = time.perf_counter()
        if now >= end:
            return calls, now - start


loop(cfg["warmup_s"])
calls, seconds = loop(cfg["measure_s"])
print(json.dumps({"calls": calls, "seconds": seconds}), file=out, flush=True)

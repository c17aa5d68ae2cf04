"""scripts/profile_summary.py: the per-request CPU breakdown that issue 16's
figures are read from. A wrong rule would send time to the wrong phase, so
each rule that the report leans on is checked on stacks shaped like perf's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_summary.py"

# Counts are nanoseconds of cpu-clock, as inferno sums perf's periods.
STACKS = {
    # A writev from hyper: kernel time is its own phase, whoever called.
    "ferroserve-io;hyper::proto::h1::io::Buffered<T>::poll_flush;__GI___writev;"
    "entry_SYSCALL_64_after_hwframe_[k];do_writev_[k];sock_write_iter_[k];tcp_sendmsg_[k]": 4_000_000,
    # JSON decoding; the inlined leaf's generic arguments name another
    # crate's types, which must not pull it into that crate's phase.
    "ferroserve-io;ferroserve_protocol::json::decode_request;"
    "from_iter<alloc::vec::Vec<ferroserve_backend_ort::convert::Item>>": 2_000_000,
    # ONNX Runtime's own frames, with no symbols.
    "mlp-worker-0;ferroserve_backend_ort::backend::OrtBackend::run;"
    "[libonnxruntime.so.1.31.1];[libonnxruntime.so.1.31.1]": 1_000_000,
    # The batcher parking on a futex.
    "mlp-worker-0;ferroserve_runtime::scheduler::batcher::Batcher::gather;"
    "crossbeam_channel::channel::Receiver<T>::recv;syscall;"
    "entry_SYSCALL_64_after_hwframe_[k];__x64_sys_futex_[k];futex_wait_[k]": 500_000,
    # malloc under the HTTP handler.
    "ferroserve-io;ferroserve_frontend::http::routes::infer;malloc": 500_000,
}


def run(tmp_path: Path, rate: float) -> str:
    folded = tmp_path / "load.folded"
    folded.write_text("".join(f"{s} {n}\n" for s, n in STACKS.items()))
    load = tmp_path / "load.json"
    load.write_text(json.dumps({"ok_per_second": rate}))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(folded), str(load)],
        env={**os.environ, "PROFILE_SECS": "2"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def rows(text: str) -> dict[str, float]:
    """The `name share us` rows of every table, by name (later tables win)."""
    found = {}
    for line in text.splitlines()[1:]:
        parts = line.rsplit(None, 2)
        if len(parts) == 3 and parts[1].endswith("%"):
            found[parts[0].strip()] = float(parts[2])
    return found


def test_each_stack_lands_in_its_phase_with_cpu_per_request(tmp_path):
    # 8 ms of CPU over 2 s at 1000 req/s: 4 us per request in all.
    text = run(tmp_path, rate=1000.0)
    assert "0.00 server cores busy" in text, text
    phase = rows(text.split("innermost kind")[0])
    assert phase["kernel: socket send/recv"] == 2.0, text
    assert phase["decode: JSON / binary request"] == 1.0, text
    assert phase["backend: ONNX Runtime"] == 0.5, text
    assert phase["kernel: futex, scheduling"] == 0.25, text
    assert phase["http: routes, handler"] == 0.25, text
    assert phase["total"] == 4.0, text


def test_innermost_kinds_tell_the_allocator_and_onnx_runtime_apart(tmp_path):
    text = run(tmp_path, rate=1000.0)
    kind = rows(text.split("innermost kind")[1].split("thread")[0])
    assert kind["allocator (malloc/free)"] == 0.25, text
    assert kind["ONNX Runtime code"] == 0.5, text
    assert kind["user code"] == 1.0, text
    assert kind["kernel: socket send/recv"] == 2.0, text


def test_threads_are_grouped_without_their_numbers(tmp_path):
    text = run(tmp_path, rate=1000.0)
    thread = rows(text.split("  thread")[1])
    assert thread["mlp-worker"] == 0.75, text
    assert thread["ferroserve-io"] == 3.25, text

#!/usr/bin/env python3
"""Where the server's CPU went, per request, from a folded perf profile.

Usage: profile_summary.py LOAD.folded LOAD.load.json

Each stack is put in one phase (what the server was doing: the first frame
from the leaf up that matches a rule) and one kind (what the innermost frame
is: the kernel in a system call, the allocator, a copy, ONNX Runtime, code).
perf samples the cpu-clock event, whose period is in nanoseconds, and
inferno sums periods, so a stack's count is nanoseconds of CPU; divided by
the requests answered in the same window, CPU per request.
"""

import json
import os
import re
import sys

# (phase, pattern) in no particular order: the match nearest the leaf wins.
PHASES = [
    ("backend: ONNX Runtime", r"libonnxruntime|onnxruntime::|OrtBackend|ort::session"),
    ("backend: input/output conversion", r"ferroserve_backend_ort::convert"),
    ("batching: stack/split, worker", r"ferroserve_runtime::scheduler::worker|Tensor::concat|Tensor::split"),
    ("batching: queue, batcher", r"ferroserve_runtime::scheduler::batcher|crossbeam_channel"),
    ("request: validate, submit", r"ferroserve_runtime::(model|validate|infer)"),
    ("decode: JSON / binary request", r"ferroserve_protocol::json|serde_json::de|ferroserve_protocol::request"),
    ("encode: response", r"ferroserve_protocol::.*(encode|reply|response)|serde_json::ser|ferroserve_frontend::http::reply"),
    ("grpc: convert", r"ferroserve_protocol::grpc"),
    ("grpc: tonic/h2/prost", r"tonic::|h2::|prost::"),
    ("routing, endpoints", r"ferroserve_frontend::endpoints"),
    ("http: routes, handler", r"ferroserve_frontend::http|ferroserve_frontend::grpc::service"),
    ("http: hyper parse/encode", r"hyper::proto|httparse|hyper::body|http::header"),
    ("connection: listener, front", r"ferroserve_frontend::listener|hyper_util::server|hyper::server"),
    ("metrics, stats", r"prometheus::|ferroserve_runtime::(metrics|infer_stats)|ferroserve_frontend::(metrics|endpoints::stats)"),
    ("socket read/write", r"tokio::net|tokio::io|mio::net|tokio_rustls"),
    ("tokio: scheduler, timers, I/O driver", r"tokio::runtime|tokio::time|mio::"),
    ("thread: park/wake", r"std::thread::park|parking_lot|futex|std::sys::sync"),
]

# The innermost frame's kind. Kernel stacks are told apart by the system
# call they are in; user frames by the leaf's name.
KERNEL_KINDS = [
    ("kernel: socket send/recv", r"__x64_sys_(sendto|recvfrom|write|read|writev|readv|sendmsg|recvmsg)|tcp_|sock_"),
    ("kernel: epoll", r"epoll"),
    ("kernel: futex, scheduling", r"futex|__schedule|try_to_wake_up|sched_yield"),
]
USER_KINDS = [
    ("allocator (malloc/free)", r"^(malloc|free|realloc|calloc|cfree|_int_malloc|_int_free|_int_realloc|malloc_consolidate|unlink_chunk|tcache_\w+|__libc_\w*alloc\w*)$"),
    ("memcpy/memmove/memset", r"mem(cpy|move|set)"),
    ("ONNX Runtime code", r"libonnxruntime"),
    ("locks (pthread)", r"pthread_mutex|__lll_lock|pthread_cond"),
]


def compiled(rules):
    return [(name, re.compile(pattern)) for name, pattern in rules]


def kind_of(frames):
    if frames[-1].endswith("_[k]"):
        kernel = ";".join(f for f in frames if f.endswith("_[k]"))
        for name, pattern in compiled(KERNEL_KINDS):
            if pattern.search(kernel):
                return name
        return "kernel: other (interrupts, page faults)"
    for name, pattern in compiled(USER_KINDS):
        if pattern.search(frames[-1]):
            return name
    return "user code"


def strip_generics(frame):
    """`collect<core::iter::Map<…>>` -> `collect`: generic arguments name
    other crates' types and would match their rules. A leading qualified
    path (`<hyper::… as Trait>::call`) is kept, without its own generics."""
    out, depth, keep = [], 0, []
    for i, c in enumerate(frame):
        if c == "<":
            # After an identifier: generic arguments, dropped.
            drop = i > 0 and (frame[i - 1].isalnum() or frame[i - 1] in "_}")
            keep.append(not drop and all(keep))
            depth += 1
            if keep[-1]:
                out.append(c)
        elif c == ">" and depth:
            depth -= 1
            if keep.pop():
                out.append(c)
        elif all(keep):
            out.append(c)
    return "".join(out)


def classify(frames, rules, default):
    for frame in reversed(frames):
        for name, pattern in rules:
            if pattern.search(frame):
                return name
    return default


def main():
    folded, load = sys.argv[1], sys.argv[2]
    phases = compiled(PHASES)
    by_phase, by_kind, by_thread = {}, {}, {}
    total = 0
    for line in open(folded):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [strip_generics(f) for f in stack.split(";")]
        total += n
        thread = re.sub(r"[-_]?\d+$", "", frames[0])
        by_thread[thread] = by_thread.get(thread, 0) + n
        kind = kind_of(frames)
        # A system call is its own phase: whoever made it, the kernel's time
        # is what it costs.
        phase = kind if kind.startswith("kernel") else classify(frames, phases, "other")
        by_phase[phase] = by_phase.get(phase, 0) + n
        by_kind[kind] = by_kind.get(kind, 0) + n

    rate = json.load(open(load))["ok_per_second"]
    print(f"{folded}: {total / 1e9 / SECS:.2f} server cores busy, {rate:.0f} ok req/s")

    def table(title, counts):
        print(f"  {title:<40} {'share':>7} {'us CPU/req':>11}")
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            # Samples cover PROFILE_SECS; scale by the load's rate.
            us = n / 1e3 / SECS / rate if rate else float("nan")
            print(f"  {name:<40} {n / total:7.1%} {us:11.2f}")
        us_total = total / 1e3 / SECS / rate if rate else float("nan")
        print(f"  {'total':<40} {1:7.1%} {us_total:11.2f}")

    table("phase", by_phase)
    table("innermost kind", by_kind)
    table("thread", by_thread)


# How long perf recorded, as profile-serving.sh ran it.
SECS = float(os.environ.get("PROFILE_SECS", "8"))

if __name__ == "__main__":
    main()

# ferroserve Python worker harness. Written out by the ferroserve binary and run
# as `python harness.py SCRIPT STYLE`; users install nothing of ferroserve.
#
# It imports the entry script once, calls init() once, then answers run
# requests framed on its original stdin/stdout. Both are moved away from fds
# 0 and 1 first, so nothing the script (or a C library) prints can corrupt the
# protocol: fd 1 becomes a copy of stderr, which the server logs.
#
# Frame: u32 LE length, then u8 kind, then the body.
#   server -> worker  1 RUN     tensors
#   worker -> server  2 READY   (empty)
#                     3 INIT_ERROR  str type, str message, str traceback
#                     4 RESULT  tensors
#                     5 RUN_ERROR   str type, str message, str traceback
# tensors: u32 count, then per tensor: str name, str datatype, u32 ndim,
#          i64 dims..., u64 nbytes, raw bytes (BYTES: u32 LE length + bytes
#          per element). str: u32 LE length + UTF-8.

import importlib.util
import json
import os
import select
import struct
import sys
import time
import traceback

RUN, READY, INIT_ERROR, RESULT, RUN_ERROR = 1, 2, 3, 4, 5

_proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
# Non-blocking, so that the wait for the next frame can spin briefly before
# it sleeps: on a virtual machine, being woken from sleep by the server's
# write costs about 20 us, more than many run() calls.
os.set_blocking(_proto_in.fileno(), False)
_readable = select.poll()
_readable.register(_proto_in.fileno(), select.POLLIN)
_SPIN_S = 50e-6
_proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
os.dup2(2, 1)
sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
sys.stdin = open(os.devnull)

_np = None
_DTYPE_NAMES = None  # numpy dtype -> protocol name, once numpy is loaded

_DTYPES = {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}


def _numpy():
    global _np, _DTYPE_NAMES
    if _np is None:
        import numpy
        _np = numpy
        _DTYPE_NAMES = {numpy.dtype(v): k for k, v in _DTYPES.items()}
    return _np


def _read_exact(n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    spin_until = time.perf_counter() + _SPIN_S
    while got < n:
        k = _proto_in.readinto(view[got:])
        if k is None:  # nothing yet
            if time.perf_counter() >= spin_until:
                _readable.poll()
            else:
                os.sched_yield()  # the core to whoever is runnable, if anyone
            continue
        if not k:
            sys.exit(0)  # the server closed the pipe: it is done with us
        got += k
    return buf


def _send(kind, body=b""):
    # One write per frame: the server's reader wakes once, with all of it.
    _proto_out.write(struct.pack("<IB", len(body) + 1, kind) + body)


def _str(s):
    b = s.encode("utf-8", "replace")
    return struct.pack("<I", len(b)) + b


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        # A view: tensor data is not copied out of the frame.
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def str(self):
        return bytes(self.take(self.u32())).decode("utf-8")


def _split_bytes(raw, count):
    out, pos = [], 0
    for _ in range(count):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(bytes(raw[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def _decode_tensors(body):
    r = _Reader(memoryview(body))
    tensors = {}
    for _ in range(r.u32()):
        name, dtype = r.str(), r.str()
        ndim = r.u32()
        shape = list(struct.unpack("<%dq" % ndim, r.take(8 * ndim)))
        (nbytes,) = struct.unpack("<Q", r.take(8))
        raw = r.take(nbytes)
        tensors[name] = (dtype, shape, raw)
    return tensors


def _to_array(dtype, shape, raw):
    np = _numpy()
    if dtype == "BYTES":
        count = 1
        for d in shape:
            count *= d
        arr = np.empty(count, dtype=object)
        arr[:] = _split_bytes(raw, count)
        return arr.reshape(shape)
    return np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape)


def _from_array(name, value):
    np = _numpy()
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        flat = []
        for x in arr.reshape(-1):
            if isinstance(x, str):
                x = x.encode("utf-8")
            elif not isinstance(x, (bytes, bytearray)):
                x = str(x).encode("utf-8")
            flat.append(struct.pack("<I", len(x)) + bytes(x))
        dtype, raw = "BYTES", b"".join(flat)
    else:
        dtype = _DTYPE_NAMES.get(arr.dtype)
        if dtype is None:
            raise TypeError("output %r has numpy dtype %s, which the v2 protocol cannot carry" % (name, arr.dtype))
        raw = np.ascontiguousarray(arr, dtype=_DTYPES[dtype]).data
    nbytes = raw.nbytes if isinstance(raw, memoryview) else len(raw)
    head = _str(name) + _str(dtype) + struct.pack("<I%dqQ" % arr.ndim, arr.ndim, *arr.shape, nbytes)
    return head, raw


def _error_body(exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _str(type(exc).__name__) + _str(str(exc)) + _str(tb)


def _run_raw(run, tensors):
    dtype, shape, raw = tensors["raw"]
    count = 1
    for d in shape:
        count *= d
    results = []
    for body in _split_bytes(raw, count):
        answer = run(body.decode("utf-8"))
        # As Azure ML does: whatever run() returns is sent as JSON (a str
        # becomes a JSON string).
        b = json.dumps(answer).encode("utf-8")
        results.append(struct.pack("<I", len(b)) + b)
    data = b"".join(results)
    return (struct.pack("<I", 1) + _str("result") + _str("BYTES") + struct.pack("<I", len(shape))
            + struct.pack("<%dq" % len(shape), *shape) + struct.pack("<Q", len(data)) + data)


def _run_tensor(run, tensors):
    inputs = {name: _to_array(*t) for name, t in tensors.items()}
    outputs = run(inputs)
    if not isinstance(outputs, dict):
        raise TypeError("run() must return a dict of output name -> numpy array, got %s" % type(outputs).__name__)
    parts = [struct.pack("<I", len(outputs))]
    for k, v in outputs.items():
        parts.extend(_from_array(str(k), v))
    return b"".join(parts)


def main():
    script, style = sys.argv[1], sys.argv[2]
    try:
        folder = os.path.dirname(os.path.abspath(script))
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location("score", script)
        module = importlib.util.module_from_spec(spec)
        sys.modules["score"] = module
        spec.loader.exec_module(module)
        run = getattr(module, "run", None)
        if not callable(run):
            raise AttributeError("%s defines no run() function" % script)
        init = getattr(module, "init", None)
        if callable(init):
            init()
        if style == "tensor":
            _numpy()
    except BaseException as exc:  # noqa: BLE001 - everything is reported
        _send(INIT_ERROR, _error_body(exc))
        return
    _send(READY)
    handler = _run_raw if style == "raw" else _run_tensor
    while True:
        (length,) = struct.unpack("<I", _read_exact(4))
        frame = _read_exact(length)
        if frame[0] != RUN:
            continue
        try:
            body = handler(run, _decode_tensors(memoryview(frame)[1:]))
        except Exception as exc:  # noqa: BLE001 - the request fails, the worker goes on
            _send(RUN_ERROR, _error_body(exc))
            continue
        _send(RESULT, body)


if __name__ == "__main__":
    main()

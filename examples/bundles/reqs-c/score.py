"""reqs: reports which interpreter environment runs it (raw style).

Its requirements.txt pins six, so the server installs it into a venv keyed by
the file's hash; run() ignores the request body and returns
{"six": six.__version__, "prefix": sys.prefix, "pid": os.getpid()}.
Bundles whose requirements.txt are byte-identical share one venv (one prefix).
"""

import os
import sys

import six


def init():
    pass


def run(raw_data):
    return {"six": six.__version__, "prefix": sys.prefix, "pid": os.getpid()}

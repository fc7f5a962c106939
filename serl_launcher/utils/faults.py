"""Fault points: named places where a test can freeze a process so that it dies exactly there.

With ``SERL_FAULT_PAUSE=<name>`` (or ``<name>:<n>`` for the n-th time the point is reached) in
the environment, the thread that reaches the point prints ``[fault] paused at <name>`` to stderr
and sleeps for good; the test waits for the line and kills the process (kill -9). Without the
variable a fault point costs one dictionary lookup. Used by the learner's crash tests: in the
middle of an insert (a message logged, not yet acknowledged), of a buffer snapshot and of a
checkpoint.
"""

from __future__ import annotations

import os
import sys
import threading
import time

ENV_VAR = "SERL_FAULT_PAUSE"
_counts: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] == int(nth or 1)
    if hit:
        print(f"[fault] paused at {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)

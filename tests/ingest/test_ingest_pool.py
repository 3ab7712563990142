"""The parse pool: hard per-task time limit, crash isolation, errors reported per task."""

from __future__ import annotations

import os
import time

from ingest.pool import TaskTimeout, TimeoutPool, WorkerDied


def task(item):
    """Runs inside the worker process (imported by name)."""
    kind, value = item
    if kind == "sleep":
        time.sleep(value)
        return value
    if kind == "crash":
        os._exit(3)
    if kind == "raise":
        raise ValueError(value)
    return value * 2


def test_timeouts_crashes_and_errors_do_not_stop_the_run():
    tasks = [("ok", 1), ("sleep", 60), ("crash", 0), ("raise", "bad input"), ("ok", 2), ("ok", 3)]
    with TimeoutPool(task, workers=2, timeout_s=3) as pool:
        out = {t: (ok, v) for t, ok, v in pool.imap_unordered(tasks)}
    assert out[("ok", 1)] == (True, 2)
    assert out[("ok", 2)] == (True, 4) and out[("ok", 3)] == (True, 6)
    ok, v = out[("sleep", 60)]
    assert not ok and isinstance(v, TaskTimeout)
    ok, v = out[("crash", 0)]
    assert not ok and isinstance(v, WorkerDied) and "exit code 3" in str(v)
    ok, v = out[("raise", "bad input")]
    assert not ok and "ValueError: bad input" in str(v)

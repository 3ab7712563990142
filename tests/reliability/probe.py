"""Peak memory of parsing one file, measured inside the parse worker process.

The kernel keeps each process's peak resident set (VmHWM in /proc/self/status) and
lets a process reset it (writing 5 to /proc/self/clear_refs), so one warm parse worker
can report the peak of each file on its own.
"""

from __future__ import annotations

from pathlib import Path


def _hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def parse_measured(job):
    """`ingest.parse.parse_job` with this process's peak RSS during the call (MiB)."""
    from ingest.parse import parse_job

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # older kernels: the peak then covers the worker's life so far
        pass
    result = parse_job(job)
    return result, _hwm_kb() / 1024

"""The audit log: one JSON line per change made in the console (who, what, when, result).

``<data_dir>/console/audit.log``, appended with one ``O_APPEND`` write per event and
fsynced, so lines from several console processes never interleave and a crash loses at
most the line being written. Sign-ins (and refused ones) are recorded too. Every line is
also logged at INFO.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Longest value kept for one field (a pasted answer can be long; the log stays readable).
FIELD_CHARS = 500


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > FIELD_CHARS:
        return value[:FIELD_CHARS] + "…"
    return value


class AuditLog:
    """Append-only JSON lines; :meth:`tail` reads the newest for the console's own page."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, who: str, action: str, *, result: str = "ok", **detail: Any) -> None:
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": who,
            "action": action,
            "result": result,
            **{k: _short(v) for k, v in detail.items() if v is not None},
        }
        line = json.dumps(entry, ensure_ascii=False, default=str)
        log.info("audit %s", line)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def tail(self, n: int = 100) -> list[dict[str, Any]]:
        """The newest ``n`` entries, newest first (reads at most the last 256 KiB)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - (256 << 10)))
                data = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        out = []
        for line in reversed(data.splitlines()):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # the first, cut line of the window, or a torn last one
            if len(out) >= n:
                break
        return out

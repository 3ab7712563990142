"""What an ingest run did, per file and in total, for people (a table) and machines (JSON)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lorebot import contracts

Status = Literal["ok", "failed", "skipped", "unchanged"]


@dataclass
class FileResult:
    """The outcome for one file.

    ``status``: ok (parsed and indexed), unchanged (same content hash as the previous
    version: reused without parsing), skipped (by policy: unsupported type, too large,
    empty), failed (tried and could not: encrypted, corrupt, timed out, no text).
    """

    path: str
    collection: str
    status: Status
    reason: str | None = None
    chunks: int = 0
    seconds: float = 0.0
    kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestReport:
    """The result of one build_index run."""

    version: str | None
    files: list[FileResult] = field(default_factory=list)
    chunks_total: int = 0
    duration_s: float = 0.0
    previous_version: str | None = None
    new_version: bool = False
    removed: list[str] = field(default_factory=list)
    chunks_new: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    index_type: str | None = None

    def _count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``lorebot ingest --json``)."""
        return {
            "version": self.version,
            "previous_version": self.previous_version,
            "new_version": self.new_version,
            "index_type": self.index_type,
            "counts": {
                "files": len(self.files),
                "ok": self.ok,
                "unchanged": self.unchanged,
                "failed": self.failed,
                "skipped": self.skipped,
                "removed": len(self.removed),
            },
            "chunks_total": self.chunks_total,
            "chunks_new": self.chunks_new,
            "duration_s": round(self.duration_s, 3),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "removed": self.removed,
            "files": [f.to_dict() for f in self.files],
        }

    def summary(self) -> str:
        """One line: what changed and where the index is now."""
        where = f"index {self.version}" if self.version else "no index written"
        if self.version and not self.new_version:
            where += " (nothing changed)"
        return (
            f"{len(self.files)} files: {self.ok} ok, {self.unchanged} unchanged, "
            f"{self.failed} failed, "
            f"{self.skipped} skipped, {len(self.removed)} removed; {self.chunks_total} chunks; "
            f"{where}; {self.duration_s:.1f}s"
        )

    def table(self):
        """A rich Table: ok / unchanged / failed / skipped / chunks per file type, with reasons."""
        from rich.table import Table

        by_kind: dict[str, Counter] = defaultdict(Counter)
        reasons: dict[str, Counter] = defaultdict(Counter)
        for f in self.files:
            kind = f.kind or "?"
            by_kind[kind][f.status] += 1
            by_kind[kind]["chunks"] += f.chunks
            if f.reason and f.status in ("failed", "skipped"):
                reasons[kind][_short_reason(f.reason)] += 1
        table = Table(title=self.summary(), title_justify="left", show_footer=True)
        table.add_column("type", footer="total")
        for col, total in (
            ("ok", self.ok),
            ("unchanged", self.unchanged),
            ("failed", self.failed),
            ("skipped", self.skipped),
            ("chunks", sum(f.chunks for f in self.files)),
        ):
            table.add_column(col, justify="right", footer=str(total))
        table.add_column("reasons", overflow="fold")
        for kind in sorted(by_kind):
            c = by_kind[kind]
            why = "; ".join(f"{r} ×{n}" if n > 1 else r for r, n in reasons[kind].most_common())
            table.add_row(
                kind,
                str(c["ok"]),
                str(c["unchanged"]),
                _style(c["failed"], "red"),
                _style(c["skipped"], "yellow"),
                str(c["chunks"]),
                why,
            )
        return table

    def problems_table(self):
        """A rich Table of each failed or skipped file with its reason."""
        from rich.table import Table

        table = Table(title="files not indexed", title_justify="left")
        table.add_column("status")
        table.add_column("file", overflow="fold")
        table.add_column("reason", overflow="fold")
        for f in self.files:
            if f.status in ("failed", "skipped"):
                table.add_row(
                    _style(f.status, "red" if f.status == "failed" else "yellow"),
                    f.path,
                    f.reason or "",
                )
        return table


# --------------------------------------------------------------------------- fleet progress
#: How a batch run by the building process itself is named (ingest.distributed's holder).
COORDINATOR_SUFFIX = ":coordinator"
#: A progress line names at most this many workers (then "and N more").
MAX_WORKERS_NAMED = 8


def worker_label(holder: str) -> str:
    """'host:pid' of a batch's worker; the building process's own runs say so."""
    if holder.endswith(COORDINATOR_SUFFIX):
        return holder[: -len(COORDINATOR_SUFFIX)] + " (coordinator)"
    return holder


def _named(labels: list[str]) -> str:
    """'a, b, c' or 'a, …, h and 4 more' for a long fleet."""
    if len(labels) <= MAX_WORKERS_NAMED:
        return ", ".join(labels)
    return ", ".join(labels[:MAX_WORKERS_NAMED]) + f" and {len(labels) - MAX_WORKERS_NAMED} more"


@dataclass
class FleetSnapshot:
    """Where a distributed build's batches are: done (by whom), running (where), queued."""

    batches: int = 0
    done_by: Counter = field(default_factory=Counter)  # worker holder -> batches done
    running: list[str] = field(default_factory=list)  # holders running a batch now
    queued_again: int = 0

    @property
    def done(self) -> int:
        return sum(self.done_by.values())

    def workers_text(self) -> str:
        """'h:12 ×2, h:13 ×1' (most batches first), then who is working now."""
        parts = []
        if self.done_by:
            parts.append("done by " + self._by())
        if self.running:
            parts.append("running on " + _named([worker_label(w) for w in self.running]))
        if self.queued_again:
            parts.append(f"{self.queued_again} queued again")
        return "; ".join(parts)

    def _by(self) -> str:
        by = sorted(self.done_by.items(), key=lambda kv: (-kv[1], kv[0]))
        return _named([f"{worker_label(w)} ×{n}" for w, n in by])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: batches, done, done_by {worker: batches}, running, queued_again."""
        return {
            "batches": self.batches,
            "done": self.done,
            "done_by": dict(sorted(self.done_by.items())),
            "running": list(self.running),
            "queued_again": self.queued_again,
        }

    def summary(self) -> str:
        """'3 batches on 2 ingest workers (h:12 ×2, h:13 ×1)' for the end of a build."""
        n = len(self.done_by)
        text = f"{self.done} batch{'es' if self.done != 1 else ''} on {n} worker{'s' * (n != 1)}"
        text += f" ({self._by()})" if self.done_by else ""
        if self.queued_again:
            text += f", {self.queued_again} queued again"
        return text


class FleetProgress:
    """Follows a distributed build's batches across the fleet, for progress lines.

    Hand :meth:`dispatch` to ``build_index(dispatch=...)``: it learns the build's id and
    batches from the specs it queues (through ``queue``, the real dispatch), then
    :meth:`snapshot` reads the batches' claims and results from Redis, where every
    worker records them (``contracts.build_claim`` / ``build_done``). Reading never
    raises: a progress line is not worth a failed build.
    """

    def __init__(self, redis_client: Any, queue: Callable[[dict[str, Any]], None]) -> None:
        self.redis = redis_client
        self.queue = queue
        self.build: str | None = None
        self.batches: list[str] = []
        self.dispatched = 0
        self.last = FleetSnapshot()

    def dispatch(self, spec: dict[str, Any]) -> None:
        if spec.get("build") != self.build:  # a new build: forget the last one
            self.build, self.batches, self.dispatched = spec.get("build"), [], 0
            self.last = FleetSnapshot()
        if spec.get("batch") not in self.batches:
            self.batches.append(spec.get("batch"))
        self.dispatched += 1
        self.queue(spec)

    def __call__(self, stage: str, done: int, total: int) -> None:
        """A build_index progress callback: at the end of the fleet stage, a last snapshot
        (the build clears the batches' records in Redis right after)."""
        if stage == "fleet" and 0 < total <= done:
            self.snapshot()

    def snapshot(self) -> FleetSnapshot:
        """The batches now (the last snapshot when Redis cannot be read)."""
        if self.build is None:
            return self.last
        try:
            done = self.redis.hgetall(contracts.build_done(self.build))
            pipe = self.redis.pipeline()
            for b in self.batches:
                pipe.get(contracts.build_claim(self.build, b))
            claims = pipe.execute()
        except Exception:  # noqa: BLE001 - the previous snapshot still says something
            return self.last
        snap = FleetSnapshot(
            batches=len(self.batches), queued_again=self.dispatched - len(self.batches)
        )
        for raw in done.values():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and "name" in record:  # a result, not an error
                snap.done_by[str(record.get("worker"))] += 1
        snap.running = sorted({c.decode() if isinstance(c, bytes) else str(c) for c in claims if c})
        self.last = snap
        return snap

    def line(self, files_done: int, files_total: int) -> str:
        """'3/5 batches, 9/14 files (64%); done by h:12 ×2, h:13 ×1; running on h:13'."""
        snap = self.snapshot()
        pct = int(100 * files_done / files_total) if files_total > 0 else 100
        text = (
            f"{snap.done:,}/{snap.batches:,} batches, {files_done:,}/{files_total:,} files ({pct}%)"
        )
        who = snap.workers_text()
        return f"{text}; {who}" if who else text


def _short_reason(reason: str) -> str:
    """Group reasons in the summary table: drop the detail after the first colon."""
    return reason.split(":", 1)[0].strip()


def _style(value: Any, color: str) -> str:
    text = str(value)
    return f"[{color}]{text}[/{color}]" if value not in (0, "0") else text

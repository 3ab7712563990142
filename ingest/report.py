"""What an ingest run did, per file and in total, for people (a table) and machines (JSON)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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


def _short_reason(reason: str) -> str:
    """Group reasons in the summary table: drop the detail after the first colon."""
    return reason.split(":", 1)[0].strip()


def _style(value: Any, color: str) -> str:
    text = str(value)
    return f"[{color}]{text}[/{color}]" if value not in (0, "0") else text

"""The incremental diff of a build: what happens to each file before anything is parsed.

Every discovered file is checked (readable, supported, not empty, not too large) and
hashed, then compared with the serving version's manifest: unchanged files keep their
rows, changed and new files are parsed, files gone from a source root are removed, and
files of other sources and collections are carried over untouched. When the previous
version was built with other rules (format, parser, chunk sizes, embedding model) nothing
is reused: every file still on disk is parsed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import store
from ingest.parse import PARSER_VERSION
from ingest.parse.detect import kind_of, unsupported_reason
from ingest.report import FileResult, IngestReport
from ingest.sources import FoundFile, Source
from ingest.store import FileRecord
from lorebot.files import sha256_file as file_hash
from lorebot.settings import Settings

# Failures worth retrying on the next run even when the file did not change: the
# environment may have been fixed (a converter installed, permissions corrected).
RETRY_REASONS = ("needs ", "missing dependency", "unreadable: permission")


@dataclass
class Plan:
    """A build's decisions: the files of the new version and what must be parsed for it."""

    previous: str | None  # the serving version
    prev_manifest: dict[str, Any] | None
    fingerprint: dict[str, Any]
    compatible: bool  # built with the same rules: its rows and vectors can be reused
    full: bool
    results: dict[str, FileResult] = field(default_factory=dict)  # every file reported on
    records: dict[str, FileRecord] = field(default_factory=dict)  # the new version's files
    to_parse: list[tuple[FoundFile, FileRecord]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # sources of files that disappear
    metadata_changed: bool = False  # an unchanged file moved or was touched

    @property
    def prev_files(self) -> dict[str, dict[str, Any]]:
        return self.prev_manifest["files"] if self.prev_manifest else {}

    @property
    def nothing_changed(self) -> bool:
        """Whether the serving version already is this build (then nothing is written)."""
        prev_ok = {k for k, v in self.prev_files.items() if v["status"] == "ok"}
        now_ok = {k for k, r in self.records.items() if r.status == "ok"}
        return (
            self.compatible
            and not self.to_parse
            and prev_ok == now_ok
            and not self.metadata_changed
            and not self.full
        )

    def report(self, timings: dict[str, float]) -> IngestReport:
        """The run's report as planned (parsing and writing fill in the rest)."""
        return IngestReport(
            version=self.previous,
            files=list(self.results.values()),
            previous_version=self.previous,
            removed=sorted(self.removed),
            timings_s=timings,
        )

    def total_chunks(self) -> int:
        return sum(r.chunks for r in self.records.values() if r.status == "ok")


def fingerprint(settings: Settings, model_dir: Path, variant: str = "torch") -> dict[str, Any]:
    """The rules a version was built with; a version with other rules is not reused.

    ``variant`` is how the embedder ran the model (:attr:`ingest.embed.Embedder.variant`):
    vectors of int8 and of torch weights must not share an index. Torch, the variant of
    every index built before variants existed, is left out so those stay compatible.
    """
    rules = {
        "format": store.FORMAT,
        "parser": PARSER_VERSION,
        "chunk_tokens": settings.index.chunk_tokens,
        "chunk_overlap_tokens": settings.index.chunk_overlap_tokens,
        "embedding_model": str(model_dir),
        # Which front-matter URLs became links: a version built with another list (or
        # before the list existed) is parsed again, so its links follow the list.
        "link_hosts": sorted(h.strip().lower() for h in settings.index.link_hosts),
    }
    if variant != "torch":
        rules["embedding_variant"] = variant
    return rules


def plan_build(
    settings: Settings,
    sources: list[Source],
    files: list[FoundFile],
    model_dir: Path,
    *,
    full: bool = False,
    variant: str = "torch",
) -> Plan:
    """Decide what the build of ``files`` (discovered in ``sources``) does with each file."""
    previous = store.current_version(settings)
    prev_manifest: dict[str, Any] | None = None
    if previous and (store.version_path(settings, previous) / store.MANIFEST).is_file():
        prev_manifest = store.read_manifest(store.version_path(settings, previous))
    rules = fingerprint(settings, model_dir, variant)
    plan = Plan(
        previous=previous,
        prev_manifest=prev_manifest,
        fingerprint=rules,
        compatible=prev_manifest is not None and prev_manifest.get("fingerprint") == rules,
        full=full,
    )
    planner = _Planner(settings, plan)
    for f in files:
        planner.plan_file(f)
    planner.plan_leftovers(sources, {f.key for f in files})
    return plan


def in_scope(entry: dict[str, Any], sources: list[Source]) -> bool:
    """Does a previously indexed file belong to one of this run's sources?

    It does when it lies under a source's root, or was found under that root (a link that
    an index built before links were checked followed out of the folder: it goes now).
    """
    path = Path(entry["path"])
    for src in sources:
        if entry["collection"] != src.collection:
            continue
        root = src.root
        if path == root or root in path.parents or entry.get("root") == str(root):
            return True
    return False


class _Planner:
    """Fills a `Plan` file by file."""

    def __init__(self, settings: Settings, plan: Plan) -> None:
        self.plan = plan
        self.max_file_mb = settings.index.max_file_mb
        self.max_bytes = int(settings.index.max_file_mb * 1024 * 1024)

    def plan_file(self, f: FoundFile) -> None:
        """Check and hash a discovered file; reuse it, record its old failure, or parse it."""
        plan = self.plan
        kind = kind_of(f.path) or (f.path.suffix.lower().lstrip(".") or "none")
        res = FileResult(path=f.source, collection=f.collection, status="ok", kind=kind)
        plan.results[f.key] = res
        if f.refused:  # a link out of the source folder: nothing behind it is opened
            res.status, res.reason = "skipped", f.refused
            return
        try:
            st = f.path.stat()
        except OSError as exc:
            res.status, res.reason = "failed", f"unreadable: {exc.strerror}"
            return
        if kind_of(f.path) is None:
            res.status, res.reason = "skipped", unsupported_reason(f.path)
            return
        if st.st_size == 0:
            res.status, res.reason = "skipped", "empty file"
            return
        if st.st_size > self.max_bytes:
            res.status = "skipped"
            limit_mb = self.max_file_mb
            res.reason = f"too large: {st.st_size / 2**20:.1f} MB > {limit_mb:g} MB limit"
            return
        try:
            digest = file_hash(f.path)
        except OSError as exc:
            res.status, res.reason = "failed", f"unreadable: {exc.strerror or exc}"
            return
        record = FileRecord(
            key=f.key,
            collection=f.collection,
            path=str(f.path),
            source=f.source,
            root=str(f.root),
            kind=kind,
            content_hash=digest,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            status="ok",
        )
        old = plan.prev_files.get(f.key) if plan.compatible and not plan.full else None
        if old and old["content_hash"] == digest:
            if old["status"] == "ok":
                record.status, record.title, record.url = "ok", old["title"], old.get("url")
                record.chunks, record.carry_rows = old["chunks"], tuple(old["rows"])
                plan.records[f.key] = record
                res.status, res.chunks = "unchanged", old["chunks"]
                if old["mtime_ns"] != st.st_mtime_ns or old["source"] != f.source:
                    plan.metadata_changed = True
                return
            if not (old.get("reason") or "").startswith(RETRY_REASONS):
                # Failed before with this very content: the same parser fails again.
                res.status, res.reason = old["status"], old.get("reason")
                record.status, record.reason = old["status"], old.get("reason")
                plan.records[f.key] = record
                return
        plan.to_parse.append((f, record))

    def plan_leftovers(self, sources: list[Source], seen: set[str]) -> None:
        """Previously indexed files not discovered now: removed, kept, or parsed again."""
        plan = self.plan
        for key, old in plan.prev_files.items():
            if key in seen:
                continue
            if in_scope(old, sources):
                if old["status"] == "ok":
                    plan.removed.append(old["source"])
                continue
            if plan.compatible:  # another source's file: keep it as it is
                plan.records[key] = FileRecord.from_manifest(key, old)
            elif old["status"] != "ok":
                continue
            elif Path(old["path"]).is_file():
                # Settings or model changed: other sources' files must be rebuilt too.
                rel = old["source"] if not old.get("url") else Path(old["path"]).name
                other = FoundFile(Path(old["path"]), rel, old["collection"], Path(old["root"]))
                self.plan_file(other)
            else:
                plan.removed.append(old["source"])

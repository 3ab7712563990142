"""Build a new index version from sources: discover → hash → parse → embed → write → publish.

Incremental by default: a file whose content hash matches the serving version is neither
parsed nor embedded again (its rows and vectors are copied); a changed file replaces
only its own chunks; a file gone from a source root disappears; files of other sources
and collections are carried over untouched. ``full=True`` re-parses and re-embeds the
given sources. If the chunking rules, chunk sizes or embedding model differ from the
serving version's, everything still on disk is rebuilt (vectors of two models or two
chunkings must never be mixed).

The run takes a lock on the index directory (one build at a time per data dir), builds in
``tmp/`` and publishes atomically (see ingest.store); a build killed at any point leaves
the previous version serving and the next build clears the litter.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest import store
from ingest.report import FileResult, IngestReport
from ingest.sources import FoundFile, Source, discover_all
from ingest.tokens import normalise
from lorebot.assets import embedding_model_path
from lorebot.errors import IndexBusyError, IngestError
from lorebot.files import atomic_write_text
from lorebot.files import sha256_file as file_hash
from lorebot.settings import Settings, cpu_count
from lorebot.text import units

if TYPE_CHECKING:
    from ingest.embed import Embedder
    from ingest.pool import TimeoutPool

log = logging.getLogger(__name__)

DEFAULT_FILE_TIMEOUT_S = 180.0
EMBED_GROUP = 512  # texts per encode call: large enough for length-sorted batching

# Failures worth retrying on the next run even when the file did not change: the
# environment may have been fixed (a converter installed, permissions corrected).
RETRY_REASONS = ("needs ", "missing dependency", "unreadable: permission")


@dataclass
class _Entry:
    """One file's state in the version being built."""

    key: str
    collection: str
    path: str
    source: str
    root: str
    kind: str
    content_hash: str
    size: int
    mtime_ns: int
    status: str
    reason: str | None = None
    title: str = ""
    url: str | None = None
    chunks: int = 0
    # where the rows come from: the previous version's row range, or freshly parsed
    carry_rows: tuple[int, int] | None = None
    new_chunks: list[dict[str, Any]] | None = None
    vectors: np.ndarray | None = None
    sentence_vectors: list[np.ndarray] | None = None  # per new chunk: one row per unit
    rows: tuple[int, int] | None = None

    @property
    def modified(self) -> str:
        return iso_time(self.mtime_ns)

    def manifest(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "path": self.path,
            "source": self.source,
            "root": self.root,
            "kind": self.kind,
            "content_hash": self.content_hash,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "modified": self.modified,
            "status": self.status,
            "reason": self.reason,
            "title": self.title,
            "url": self.url,
            "chunks": self.chunks,
            "rows": list(self.rows) if self.rows else None,
        }


def iso_time(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC).isoformat(timespec="seconds")


def _norm_hash(text: str) -> str:
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()[:16]


@contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """One build per index directory at a time (an flock, released if the process dies)."""
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        fh = open(index_dir / ".build.lock", "a+")
    except OSError as exc:
        raise IngestError(
            f"cannot write the index directory {index_dir}: {exc.strerror}",
            fix="set LOREBOT_DATA_DIR to a writable directory",
        ) from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexBusyError(
                    f"another ingest is already building the index in {index_dir}",
                    fix="wait for it to finish, then run this again",
                ) from None
            raise
        yield
    finally:
        fh.close()


def _fingerprint(settings: Settings, model_dir: Path) -> dict[str, Any]:
    from ingest.parse import PARSER_VERSION

    return {
        "format": store.FORMAT,
        "parser": PARSER_VERSION,
        "chunk_tokens": settings.index.chunk_tokens,
        "chunk_overlap_tokens": settings.index.chunk_overlap_tokens,
        "embedding_model": str(model_dir),
    }


def _in_scope(entry: dict[str, Any], sources: list[Source]) -> bool:
    """Does a previously indexed file belong to one of this run's sources?"""
    path = Path(entry["path"])
    for src in sources:
        if entry["collection"] != src.collection:
            continue
        root = src.root
        if path == root or root in path.parents:
            return True
    return False


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    class _Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task):
            from rich.text import Text

            speed = task.finished_speed or task.speed
            unit = task.fields.get("unit", "it")
            return Text(f"{speed:.1f} {unit}/s" if speed else "", style="cyan")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def build_index(
    settings: Settings,
    sources: list[Source],
    *,
    full: bool = False,
    progress: bool = True,
    embedder: Embedder | None = None,
    workers: int | None = None,
    file_timeout_s: float | None = None,
    index_type: str | None = None,
    pool: TimeoutPool | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Ingest `sources` into a new index version and make it current.

    Returns the report (one FileResult per discovered file). Raises IngestError for a
    missing path, an empty source, a locked index or when no file at all could be
    indexed (the report is then on the exception as ``.report``); a bad individual file
    never raises.
    ``workers`` parse processes (default: all cores) each get ``file_timeout_s`` per file.
    ``index_type`` forces "flat" or "hnsw" (default: by size). ``pool`` lends an open
    parse pool (ingest.pool.TimeoutPool over ingest.parse.parse_job) whose warm workers
    outlive this call: a long-running process (the ingest worker, the tests) then pays the
    parsers' start-up (~4 s per worker) once instead of on every build. ``on_progress``
    is called as ``(stage, done, total)`` with stage "parse", "embed" or "write" (a Celery
    task reports it back with update_state).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    files = discover_all(sources, skip=[settings.data_dir])
    if not files:
        where = ", ".join(str(s.path) for s in sources)
        raise IngestError(
            f"no files found in {where}",
            fix="point lorebot ingest at a folder that holds documents",
        )
    model_dir = embedding_model_path(settings.index.embedding_model)
    timings["discover"] = time.perf_counter() - started
    timeout = file_timeout_s or settings.index.file_timeout_s
    n_workers = workers or settings.index.parse_workers or cpu_count()

    def progress_cb(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            try:
                on_progress(stage, done, total)
            except Exception:  # a reporting hiccup must not fail the build
                log.warning("progress callback failed", exc_info=True)

    with build_lock(settings.index_dir):
        shutil.rmtree(store.tmp_dir(settings), ignore_errors=True)
        prev_version = store.current_version(settings)
        prev: dict[str, Any] | None = None
        if prev_version and (store.version_path(settings, prev_version) / store.MANIFEST).is_file():
            prev = store.read_manifest(store.version_path(settings, prev_version))
        fingerprint = _fingerprint(settings, model_dir)
        compatible = prev is not None and prev.get("fingerprint") == fingerprint
        prev_files: dict[str, dict[str, Any]] = prev["files"] if prev else {}

        t = time.perf_counter()
        results: dict[str, FileResult] = {}
        entries: dict[str, _Entry] = {}
        to_parse: list[tuple[FoundFile, _Entry]] = []
        metadata_changed = False
        max_bytes = int(settings.index.max_file_mb * 1024 * 1024)

        def plan(f: FoundFile, *, report: bool = True) -> None:
            nonlocal metadata_changed
            from ingest.parse import kind_of, unsupported_reason

            kind = kind_of(f.path) or (f.path.suffix.lower().lstrip(".") or "none")
            res = FileResult(path=f.source, collection=f.collection, status="ok", kind=kind)
            if report:
                results[f.key] = res
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
            if st.st_size > max_bytes:
                res.status = "skipped"
                limit_mb = settings.index.max_file_mb
                res.reason = f"too large: {st.st_size / 2**20:.1f} MB > {limit_mb:g} MB limit"
                return
            try:
                digest = file_hash(f.path)
            except OSError as exc:
                res.status, res.reason = "failed", f"unreadable: {exc.strerror or exc}"
                return
            entry = _Entry(
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
            old = prev_files.get(f.key) if compatible and not full else None
            if old and old["content_hash"] == digest:
                if old["status"] == "ok":
                    entry.status, entry.title, entry.url = "ok", old["title"], old.get("url")
                    entry.chunks, entry.carry_rows = old["chunks"], tuple(old["rows"])
                    entries[f.key] = entry
                    res.status, res.chunks = "unchanged", old["chunks"]
                    if old["mtime_ns"] != st.st_mtime_ns or old["source"] != f.source:
                        metadata_changed = True
                    return
                if not (old.get("reason") or "").startswith(RETRY_REASONS):
                    # Failed before with this very content: the same parser fails again.
                    res.status, res.reason = old["status"], old.get("reason")
                    entry.status, entry.reason = old["status"], old.get("reason")
                    entries[f.key] = entry
                    return
            to_parse.append((f, entry))

        for f in files:
            plan(f)
        seen = {f.key for f in files}
        removed: list[str] = []
        for key, old in prev_files.items():
            if key in seen:
                continue
            if _in_scope(old, sources):
                if old["status"] == "ok":
                    removed.append(old["source"])
                continue
            if compatible:  # another source's file: keep it as it is
                entries[key] = _Entry(
                    key=key,
                    collection=old["collection"],
                    path=old["path"],
                    source=old["source"],
                    root=old["root"],
                    kind=old["kind"],
                    content_hash=old["content_hash"],
                    size=old["size"],
                    mtime_ns=old["mtime_ns"],
                    status=old["status"],
                    reason=old.get("reason"),
                    title=old["title"],
                    url=old.get("url"),
                    chunks=old["chunks"],
                    carry_rows=tuple(old["rows"]) if old.get("rows") else None,
                )
            elif old["status"] != "ok":
                continue
            elif Path(old["path"]).is_file():
                # Settings or model changed: other sources' files must be rebuilt too.
                rel = old["source"] if not old.get("url") else Path(old["path"]).name
                other = FoundFile(Path(old["path"]), rel, old["collection"], Path(old["root"]))
                plan(other, report=True)
            else:
                removed.append(old["source"])
        timings["hash"] = time.perf_counter() - t

        report = IngestReport(
            version=prev_version,
            files=list(results.values()),
            previous_version=prev_version,
            removed=sorted(removed),
            timings_s=timings,
        )
        prev_ok = {k for k, v in prev_files.items() if v["status"] == "ok"}
        now_ok = {k for k, e in entries.items() if e.status == "ok"}
        if compatible and not to_parse and prev_ok == now_ok and not metadata_changed and not full:
            # Nothing to do: the serving version already is this build.
            report.chunks_total = prev["counts"]["chunks"] if prev else 0
            report.index_type = prev.get("index_type") if prev else None
            report.duration_s = time.perf_counter() - started
            log.info("ingest: nothing changed; index %s still current", prev_version)
            return report

        with _progress(progress) as bar:
            t = time.perf_counter()
            _parse_all(
                to_parse,
                results,
                entries,
                settings,
                model_dir,
                n_workers,
                timeout,
                bar,
                pool,
                progress_cb,
            )
            timings["parse"] = time.perf_counter() - t
            t = time.perf_counter()
            report.chunks_new = _embed_all(entries, settings, model_dir, embedder, bar, progress_cb)
            timings["embed"] = time.perf_counter() - t

        total = sum(e.chunks for e in entries.values() if e.status == "ok")
        if total == 0:
            report.duration_s = time.perf_counter() - started
            err = IngestError(
                f"nothing to index: none of the {len(files)} files produced any text",
                fix="check the reasons in the report (lorebot ingest --json shows each file)",
            )
            err.report = report  # type: ignore[attr-defined]
            raise err

        t = time.perf_counter()
        progress_cb("write", 0, 1)
        version = store.new_version_id(
            store.list_versions(settings) + ([prev_version] if prev_version else [])
        )
        chosen = index_type or store.choose_index_type(total)
        prev_dir = store.version_path(settings, prev_version) if prev_version else None
        build_dir = store.tmp_dir(settings) / version
        try:
            build_dir.mkdir(parents=True)
            manifest = _write_version(
                build_dir,
                version,
                prev_version,
                prev_dir,
                entries,
                fingerprint,
                chosen,
                settings,
                model_dir,
            )
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            if not disk_full(exc):
                raise
            shutil.rmtree(build_dir, ignore_errors=True)  # give back what the attempt took
            raise IngestError(
                f"the disk holding {settings.index_dir} is full (writing version {version})"
                + (f"; version {prev_version} keeps serving" if prev_version else ""),
                fix="free disk space, or set LOREBOT_DATA_DIR to a larger disk",
            ) from None
        store.publish(settings, build_dir, version)
        store.prune_versions(settings, settings.index.keep_versions)
        timings["write"] = time.perf_counter() - t
        progress_cb("write", 1, 1)

    report.version = version
    report.new_version = True
    report.index_type = chosen
    report.chunks_total = manifest["counts"]["chunks"]
    report.duration_s = time.perf_counter() - started
    log.info(
        "ingest: version %s: %d files ok, %d unchanged, %d failed, %d skipped, %d removed, "
        "%d chunks (%d new) in %.1fs",
        version,
        report.ok,
        report.unchanged,
        report.failed,
        report.skipped,
        len(report.removed),
        report.chunks_total,
        report.chunks_new,
        report.duration_s,
    )
    return report


def _parse_all(
    to_parse: list[tuple[FoundFile, _Entry]],
    results: dict[str, FileResult],
    entries: dict[str, _Entry],
    settings: Settings,
    model_dir: Path,
    n_workers: int,
    timeout: float,
    bar: Any,
    pool: TimeoutPool | None = None,
    progress_cb: Callable[[str, int, int], None] = lambda *a: None,
) -> None:
    """Parse and chunk files in worker processes; record each outcome."""
    if not to_parse:
        return
    from ingest.parse import ParseFailure, ParseJob, ParseOutput
    from ingest.pool import TaskTimeout, WorkerDied

    by_path = {}
    jobs = []
    for f, entry in to_parse:
        job = ParseJob(
            path=entry.path,
            source=f.source,
            collection=f.collection,
            kind=entry.kind,
            content_hash=entry.content_hash,
            modified=entry.modified,
            model_dir=str(model_dir),
            chunk_tokens=settings.index.chunk_tokens,
            overlap_tokens=settings.index.chunk_overlap_tokens,
        )
        by_path[(job.collection, job.path)] = entry
        jobs.append(job)
    # Big files first: the longest task should not start last.
    jobs.sort(key=lambda j: -by_path[(j.collection, j.path)].size)
    task = bar.add_task("parsing", total=len(jobs), unit="files")
    own = pool is None
    if pool is None:
        pool = make_parse_pool(min(n_workers, len(jobs)), timeout)
    progress_cb("parse", 0, len(jobs))
    try:
        for done, (job, ok, value) in enumerate(
            pool.imap_unordered(jobs, timeout_s=timeout), start=1
        ):
            entry = by_path[(job.collection, job.path)]
            res = results[entry.key]
            if ok and isinstance(value, ParseOutput):
                entry.title, entry.url = value.title, value.url
                if entry.url:
                    entry.source = entry.url
                entry.new_chunks = value.chunks
                entry.chunks = len(value.chunks)
                entries[entry.key] = entry
                res.status, res.chunks, res.seconds = "ok", entry.chunks, value.seconds
            elif ok and isinstance(value, ParseFailure):
                res.status, res.reason = value.status, value.reason
            elif isinstance(value, TaskTimeout):
                res.status, res.reason, res.seconds = "failed", f"timeout: parsing {value}", timeout
            elif isinstance(value, WorkerDied):
                res.status, res.reason = "failed", f"crashed: {value}"
            else:
                res.status, res.reason = "failed", f"parse error: {value}"
            if res.status != "ok":
                entry.status, entry.reason, entry.chunks = res.status, res.reason, 0
                entries[entry.key] = entry
                log.info("ingest: %s %s: %s", res.status, job.path, res.reason)
            bar.advance(task)
            progress_cb("parse", done, len(jobs))
    finally:
        if own:
            pool.close()


def make_parse_pool(
    workers: int | None = None, timeout_s: float = DEFAULT_FILE_TIMEOUT_S
) -> TimeoutPool:
    """A pool of parse workers (all cores by default) to lend to several build_index calls."""
    from ingest.parse import parse_job, worker_init
    from ingest.pool import TimeoutPool

    return TimeoutPool(
        parse_job, workers=workers or cpu_count(), timeout_s=timeout_s, init=worker_init
    )


def disk_full(exc: BaseException) -> bool:
    """Whether an error from writing (OS, SQLite, FAISS) means the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text or "quota exceeded" in text


def _embed_all(
    entries: dict[str, _Entry],
    settings: Settings,
    model_dir: Path,
    embedder: Embedder | None,
    bar: Any,
    progress_cb: Callable[[str, int, int], None] = lambda *a: None,
) -> int:
    """Embed every freshly parsed chunk (batched, length-sorted by sentence-transformers).

    The same model pass also gives each chunk's sentence units their vectors (pooled
    from the chunk's token embeddings, see :meth:`Embedder.encode_with_spans`), which the
    answer path compares with the question to choose its evidence quote.
    """
    fresh = [e for e in entries.values() if e.new_chunks]
    chunks = [c for e in fresh for c in e.new_chunks or []]
    if not chunks:
        return 0
    if embedder is None:
        from ingest.embed import Embedder

        embedder = Embedder.from_settings(settings, exclusive=True)
    texts = [c["embed_text"] for c in chunks]
    spans = [unit_spans(c["text"], c["embed_text"]) for c in chunks]
    task = bar.add_task("embedding", total=len(texts), unit="chunks")
    parts = []
    pooled: list[np.ndarray] = []
    for start in range(0, len(texts), EMBED_GROUP):
        group = slice(start, start + EMBED_GROUP)
        vectors, sentence_vectors = embedder.encode_with_spans(texts[group], spans[group])
        parts.append(vectors)
        pooled += sentence_vectors
        bar.advance(task, len(texts[group]))
        progress_cb("embed", min(start + EMBED_GROUP, len(texts)), len(texts))
    vectors = np.concatenate(parts)
    at = 0
    for e in fresh:
        n = len(e.new_chunks or [])
        e.vectors = vectors[at : at + n]
        e.sentence_vectors = pooled[at : at + n]
        at += n
    return len(texts)


def unit_spans(text: str, embed_text: str) -> list[tuple[int, int]]:
    """Where each sentence unit of a chunk's ``text`` lies in the ``embed_text`` the model reads.

    The embedded text is the chunk's text after a title/heading line; when it is not (a
    chunk shape this function does not know), no unit gets a span and the answer path
    embeds that chunk's sentences itself.
    """
    if not embed_text.endswith(text):
        return []
    offset = len(embed_text) - len(text)
    return [(offset + u.start, offset + u.end) for u in units(text)]


def _write_version(
    build_dir: Path,
    version: str,
    prev_version: str | None,
    prev_dir: Path | None,
    entries: dict[str, _Entry],
    fingerprint: dict[str, Any],
    index_type: str,
    settings: Settings,
    model_dir: Path,
) -> dict[str, Any]:
    """Write chunks.sqlite, embeddings.npy, sentences.npy, faiss.index, bm25/ and manifest.json."""
    ordered = sorted(
        (e for e in entries.values() if e.status == "ok" and e.chunks > 0),
        key=lambda e: (e.collection, e.key),
    )
    total = sum(e.chunks for e in ordered)
    db = sqlite3.connect(build_dir / store.CHUNKS_DB)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(store.SCHEMA)
    carrying = prev_dir is not None and any(e.carry_rows for e in ordered)
    old_vecs = None
    if carrying:
        db.execute("ATTACH DATABASE ? AS old", (f"file:{prev_dir / store.CHUNKS_DB}?mode=ro",))
        old_vecs = np.load(prev_dir / store.EMBEDDINGS, mmap_mode="r")
    vecs = np.lib.format.open_memmap(
        build_dir / store.EMBEDDINGS, mode="w+", dtype=np.float32, shape=(total, 384)
    )
    old_sentences = store.load_sentence_vectors(prev_dir) if carrying else None
    sentence_parts: list[np.ndarray] = []  # in row order, one (units, 384) block per chunk run
    sentence_counts = np.zeros(total, dtype=np.int64)
    cols = ",".join(store.CHUNK_COLUMNS)
    marks = ",".join("?" * len(store.CHUNK_COLUMNS))
    collections: dict[str, dict[str, Any]] = {}
    at = 0
    for e in ordered:
        start = at
        if e.carry_rows is not None:
            s, end = e.carry_rows
            # Same rows, new position; the file's mtime and display path may have moved.
            db.execute(
                f"INSERT INTO chunks ({cols}) "
                "SELECT row - ? + ?, chunk_id, file_key, ordinal, collection, "
                "CASE WHEN url IS NOT NULL THEN source ELSE ? END, title, heading, page, url, ?, "
                "content_hash, text, embed_text, norm_hash, kind, extra "
                "FROM old.chunks WHERE row >= ? AND row < ? ORDER BY row",
                (s, start, e.source, e.modified, s, end),
            )
            vecs[start : start + (end - s)] = old_vecs[s:end]  # type: ignore[index]
            if old_sentences is not None:
                old_rows, old_units = old_sentences
                sentence_parts.append(
                    old_units[old_rows[s] : old_rows[end]]
                )  # a view, read on write
                sentence_counts[start : start + (end - s)] = np.diff(old_rows[s : end + 1])
            at += end - s
        else:
            chunks = e.new_chunks or []
            db.executemany(
                f"INSERT INTO chunks ({cols}) VALUES ({marks})",
                [
                    (
                        start + i,
                        c["chunk_id"],
                        e.key,
                        c["ordinal"],
                        e.collection,
                        e.source,
                        e.title,
                        c["heading"],
                        c["page"],
                        e.url,
                        e.modified,
                        e.content_hash,
                        c["text"],
                        c["embed_text"],
                        _norm_hash(c["text"]),
                        c.get("kind", "text"),
                        json.dumps({"file_kind": e.kind, "tokens": c.get("tokens")}),
                    )
                    for i, c in enumerate(chunks)
                ],
            )
            vecs[start : start + len(chunks)] = e.vectors
            for i, block in enumerate(e.sentence_vectors or []):
                sentence_parts.append(block.astype(np.float16))
                sentence_counts[start + i] = len(block)
            at += len(chunks)
        e.rows = (start, at)
        col = collections.setdefault(
            e.collection, {"documents": 0, "chunks": 0, "rows": [start, at]}
        )
        col["documents"] += 1
        col["chunks"] += at - start
        col["rows"][1] = at
    if at != total:
        raise IngestError(
            f"index build is inconsistent ({at} rows written, {total} expected)",
            fix="run `lorebot ingest PATH --full`",
        )
    db.commit()
    if carrying:
        db.execute("DETACH DATABASE old")
    db.executescript(store.INDEXES)
    texts = [r[0] for r in db.execute("SELECT embed_text FROM chunks ORDER BY row")]
    db.commit()
    db.close()
    vecs.flush()
    store.write_search_indexes(build_dir, vecs, texts, index_type)
    del vecs
    n_units = store.write_sentence_vectors(build_dir, sentence_counts, sentence_parts)
    del old_sentences, sentence_parts
    manifest = {
        "format": store.FORMAT,
        "version": version,
        "previous": prev_version,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "index_type": index_type,
        "embedding_model": Path(model_dir).parent.name
        if Path(model_dir).name == "model"
        else Path(model_dir).name,
        "dim": 384,
        "fingerprint": fingerprint,
        "settings": {
            "chunk_tokens": settings.index.chunk_tokens,
            "chunk_overlap_tokens": settings.index.chunk_overlap_tokens,
            "max_file_mb": settings.index.max_file_mb,
        },
        "counts": {"documents": len(ordered), "chunks": total, "sentences": n_units},
        "collections": collections,
        "files": {e.key: e.manifest() for e in sorted(entries.values(), key=lambda e: e.key)},
    }
    atomic_write_text(build_dir / store.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest

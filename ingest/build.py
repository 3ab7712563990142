"""Build a new index version from sources: discover → plan → parse → embed → write → publish.

Incremental by default: a file whose content hash matches the serving version is neither
parsed nor embedded again (its rows and vectors are copied); a changed file replaces
only its own chunks; a file gone from a source root disappears; files of other sources
and collections are carried over untouched (the decisions are ingest.plan's). ``full=True``
re-parses and re-embeds the given sources. If the chunking rules, chunk sizes or embedding
model differ from the serving version's, everything still on disk is rebuilt (vectors of
two models or two chunkings must never be mixed).

The run takes a lock on the index directory (one build at a time per data dir), builds in
``tmp/`` and publishes atomically (the format is ingest.store's); a build killed at any
point leaves the previous version serving and the next build clears the litter.

Memory does not grow with the corpus: each parsed file's chunks go straight to the build's
spool on disk (ingest.spool), the embedding pass reads them back EMBED_GROUP at a time and
appends the vectors there, and the version is written from the spool slice by slice.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest import store
from ingest.markup import citation_url
from ingest.plan import Plan, fingerprint, plan_build
from ingest.report import IngestReport
from ingest.sources import FoundFile, Source, discover_all
from ingest.spool import Spool
from ingest.store import FileRecord
from lorebot.assets import embedding_model_path
from lorebot.errors import IndexBusyError, IngestError
from lorebot.settings import IndexSettings, Settings, cpu_count
from lorebot.text import units

if TYPE_CHECKING:
    from ingest.embed import Embedder
    from ingest.pool import TimeoutPool

log = logging.getLogger(__name__)

DEFAULT_FILE_TIMEOUT_S = 180.0
DEFAULT_PARSE_MEMORY_MB = IndexSettings().parse_memory_mb
EMBED_GROUP = 512  # texts per encode call: large enough for length-sorted batching

ProgressFn = Callable[[str, int, int], None]


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
    on_progress: ProgressFn | None = None,
    dispatch: Callable[[dict[str, Any]], None] | None = None,
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

    With ``index.distributed`` set, the new and changed files are parsed and embedded by
    the fleet's ingest workers in batches (ingest.distributed; progress stage "fleet");
    ``dispatch`` queues one batch's task (default: by name on the ingest queue). This
    process merges the batches and publishes the version, once, as a local build does.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    files = _discover(settings, sources)
    model_dir = embedding_model_path(settings.index.embedding_model)
    timings["discover"] = time.perf_counter() - started
    timeout = file_timeout_s or settings.index.file_timeout_s
    n_workers = workers or settings.index.parse_workers or cpu_count()
    progress_cb = _guarded(on_progress)

    if embedder is None:  # lazy: a build with nothing to embed never loads the model
        from ingest.embed import Embedder

        embedder = Embedder.from_settings(settings, exclusive=True)

    with build_lock(settings.index_dir):
        store.clear_unfinished(settings)
        t = time.perf_counter()
        planned = variant_of(embedder)
        plan = plan_build(settings, sources, files, model_dir, full=full, variant=planned)
        timings["hash"] = time.perf_counter() - t
        report = plan.report(timings)
        if plan.nothing_changed:
            # Nothing to do: the serving version already is this build.
            prev = plan.prev_manifest
            report.chunks_total = prev["counts"]["chunks"] if prev else 0
            report.index_type = prev.get("index_type") if prev else None
            report.duration_s = time.perf_counter() - started
            log.info("ingest: nothing changed; index %s still current", plan.previous)
            return report

        spool = _open_spool(settings, plan.previous)
        try:
            return _build_spooled(
                settings,
                plan,
                report,
                spool,
                files=files,
                started=started,
                timings=timings,
                progress=progress,
                embedder=embedder,
                planned=planned,
                n_workers=n_workers,
                timeout=timeout,
                index_type=index_type,
                pool=pool,
                progress_cb=progress_cb,
                dispatch=dispatch,
                model_dir=model_dir,
            )
        finally:
            spool.close()
            shutil.rmtree(spool.path, ignore_errors=True)


def _open_spool(settings: Settings, previous: str | None) -> Spool:
    """The build's spool in tmp/ (a full disk becomes the usual IngestError)."""
    path = store.tmp_dir(settings) / "spool"
    try:
        return Spool(path)
    except (OSError, sqlite3.Error) as exc:
        shutil.rmtree(path, ignore_errors=True)
        if not disk_full(exc):
            raise
        raise _disk_full_error(settings, "spooling chunks", previous) from None


def _disk_full_error(settings: Settings, doing: str, previous: str | None) -> IngestError:
    return IngestError(
        f"the disk holding {settings.index_dir} is full ({doing})"
        + (f"; version {previous} keeps serving" if previous else ""),
        fix="free disk space, or set LOREBOT_DATA_DIR to a larger disk",
    )


def _build_spooled(
    settings: Settings,
    plan: Plan,
    report: IngestReport,
    spool: Spool,
    *,
    files: list[FoundFile],
    started: float,
    timings: dict[str, float],
    progress: bool,
    embedder: Embedder,
    planned: str,
    n_workers: int,
    timeout: float,
    index_type: str | None,
    pool: TimeoutPool | None,
    progress_cb: ProgressFn,
    dispatch: Callable[[dict[str, Any]], None] | None,
    model_dir: Path,
) -> IngestReport:
    """Parse and embed into ``spool``, then write and publish the version (under the lock)."""
    try:
        with _progress(progress) as bar:
            t = time.perf_counter()
            if settings.index.distributed and plan.to_parse:
                from ingest.distributed import build_batches

                stats = build_batches(
                    plan,
                    settings,
                    embedder,
                    variant=planned,
                    bar=bar,
                    progress_cb=progress_cb,
                    dispatch=dispatch,
                    pool=pool,
                    spool=spool,
                )
                report.chunks_new = stats.chunks
                timings["batches"] = time.perf_counter() - t
                used = stats.variants or {planned}
            else:
                _parse_all(
                    plan, settings, model_dir, n_workers, timeout, bar, pool, progress_cb, spool
                )
                timings["parse"] = time.perf_counter() - t
                t = time.perf_counter()
                report.chunks_new = _embed_all(spool, embedder, bar, progress_cb)
                timings["embed"] = time.perf_counter() - t
                used = {variant_of(embedder)}
    except (OSError, sqlite3.Error) as exc:
        if not disk_full(exc):
            raise
        raise _disk_full_error(settings, "spooling chunks", plan.previous) from None
    if used != {planned}:
        # The graph was refused and torch embedded instead: say so in the version,
        # so that the next build embeds everything again with one variant.
        other = sorted(used - {planned})[0]
        log.warning("ingest: embedded with %s, not %s", ", ".join(sorted(used)), planned)
        rules = fingerprint(settings, model_dir, other)
        plan.fingerprint = {**rules, "mixed_variants": True}

    total = plan.total_chunks()
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
    chosen = index_type or store.choose_index_type(total)
    version, manifest = _write_and_publish(settings, plan, chosen, model_dir, spool)
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


def _discover(settings: Settings, sources: list[Source]) -> list[FoundFile]:
    """Every file under the sources (the data dir itself excluded); IngestError if none."""
    files = discover_all(sources, skip=[settings.data_dir])
    if not files:
        where = ", ".join(str(s.path) for s in sources)
        raise IngestError(
            f"no files found in {where}",
            fix="point lorebot ingest at a folder that holds documents",
        )
    return files


def _guarded(on_progress: ProgressFn | None) -> ProgressFn:
    """``on_progress`` made safe to call: a reporting hiccup must not fail the build."""

    def report(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            try:
                on_progress(stage, done, total)
            except Exception:
                log.warning("progress callback failed", exc_info=True)

    return report


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


def _parse_all(
    plan: Plan,
    settings: Settings,
    model_dir: Path,
    n_workers: int,
    timeout: float,
    bar: Any,
    pool: TimeoutPool | None,
    progress_cb: ProgressFn,
    spool: Spool,
) -> None:
    """Parse and chunk the planned files in worker processes; record each outcome.

    Each file's chunks go to ``spool`` as the file arrives: none stays in memory.
    """
    if not plan.to_parse:
        return
    from ingest.parse import ParseJob, ParseOutput

    by_path = {}
    jobs = []
    for f, entry in plan.to_parse:
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
        pool = make_parse_pool(
            min(n_workers, len(jobs)), timeout, memory_mb=settings.index.parse_memory_mb
        )
    progress_cb("parse", 0, len(jobs))
    try:
        for done, (job, ok, value) in enumerate(
            pool.imap_unordered(jobs, timeout_s=timeout), start=1
        ):
            entry = by_path[(job.collection, job.path)]
            if ok and isinstance(value, ParseOutput):
                record_parsed(
                    plan, entry, settings, value.title, value.url, value.chunks, spool=spool
                )
                plan.results[entry.key].seconds = value.seconds
            else:
                status, reason, seconds = parse_outcome(ok, value, timeout)
                record_failed(plan, entry, status, reason, seconds)
            bar.advance(task)
            progress_cb("parse", done, len(jobs))
    finally:
        if own:
            pool.close()


def parse_outcome(ok: bool, value: Any, timeout: float) -> tuple[str, str, float]:
    """(status, reason, seconds) of a parse that gave no chunks (a pool's failed outcome)."""
    from ingest.parse import ParseFailure
    from ingest.pool import TaskTimeout, WorkerDied

    if ok and isinstance(value, ParseFailure):
        return value.status, value.reason, 0.0
    if isinstance(value, TaskTimeout):
        return "failed", f"timeout: parsing {value}", timeout
    if isinstance(value, WorkerDied):
        return "failed", f"crashed: {value}", 0.0
    return "failed", f"parse error: {value}", 0.0


def record_parsed(
    plan: Plan,
    entry: FileRecord,
    settings: Settings,
    title: str,
    url: str | None,
    chunks: list[dict[str, Any]],
    *,
    spool: Spool,
) -> None:
    """A file parsed into ``chunks`` joins the new version; the chunks go to ``spool``.

    Their vectors follow in spool order (the embedding pass, or the batch result's).
    """
    # Front matter is the document author's: only allowed hosts become links.
    entry.title = title
    entry.url = citation_url(url, settings.index.link_hosts)
    if entry.url:
        entry.source = entry.url
    entry.spooled = spool.add_chunks(chunks, entry.kind)
    entry.chunks = len(chunks)
    plan.records[entry.key] = entry
    res = plan.results[entry.key]
    res.status, res.chunks = "ok", entry.chunks


def record_failed(
    plan: Plan, entry: FileRecord, status: str, reason: str | None, seconds: float = 0.0
) -> None:
    """A file that gave no chunks: its failure (or skip) is recorded in the new version."""
    res = plan.results[entry.key]
    res.status, res.reason = status, reason
    if seconds:
        res.seconds = seconds
    entry.status, entry.reason, entry.chunks = status, reason, 0
    plan.records[entry.key] = entry
    log.info("ingest: %s %s: %s", status, entry.path, reason)


def make_parse_pool(
    workers: int | None = None,
    timeout_s: float = DEFAULT_FILE_TIMEOUT_S,
    *,
    memory_mb: int | None = DEFAULT_PARSE_MEMORY_MB,
) -> TimeoutPool:
    """A pool of parse workers (all cores by default) to lend to several build_index calls.

    Each worker gets a scrubbed environment and at most ``memory_mb`` MiB of address
    space (the ``index.parse_memory_mb`` default; None = unlimited).
    """
    from ingest.parse import parse_job, worker_init
    from ingest.pool import TimeoutPool

    return TimeoutPool(
        parse_job,
        workers=workers or cpu_count(),
        timeout_s=timeout_s,
        init=worker_init,
        memory_mb=memory_mb,
    )


def disk_full(exc: BaseException) -> bool:
    """Whether an error from writing (OS, SQLite, FAISS) means the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text or "quota exceeded" in text


def variant_of(embedder: Any) -> str:
    """How ``embedder`` makes its vectors (an embedder that does not say runs torch)."""
    return str(getattr(embedder, "variant", "torch"))


def _embed_all(
    spool: Spool,
    embedder: Embedder,
    bar: Any,
    progress_cb: ProgressFn,
) -> int:
    """Embed every spooled chunk, EMBED_GROUP at a time, appending the vectors to the spool.

    The same model pass also gives each chunk's sentence units their vectors (pooled
    from the chunk's token embeddings, see :meth:`Embedder.encode_with_spans`), which the
    answer path compares with the question to choose its evidence quote. Memory holds one
    group's texts and vectors, however many chunks the build has.
    """
    first, total = spool.embedded, spool.rows
    if total == first:
        return 0
    task = bar.add_task("embedding", total=total - first, unit="chunks")
    for start in range(first, total, EMBED_GROUP):
        end = min(total, start + EMBED_GROUP)
        rows = spool.texts(start, end)
        texts = [embed_text for _text, embed_text in rows]
        spans = [unit_spans(text, embed_text) for text, embed_text in rows]
        vectors, pooled = embedder.encode_with_spans(texts, spans)
        spool.add_vectors(start, vectors, pooled)
        bar.advance(task, end - start)
        progress_cb("embed", end - first, total - first)
    return total - first


def embed_chunks(
    chunks: list[dict[str, Any]],
    embedder: Embedder,
    on_group: Callable[[int, int, int], None] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The chunks' vectors and each chunk's sentence-unit vectors, in groups of EMBED_GROUP.

    ``on_group(done, total, group)`` follows each group.
    """
    texts = [c["embed_text"] for c in chunks]
    spans = [unit_spans(c["text"], c["embed_text"]) for c in chunks]
    parts = []
    pooled: list[np.ndarray] = []
    for start in range(0, len(texts), EMBED_GROUP):
        group = slice(start, start + EMBED_GROUP)
        vectors, sentence_vectors = embedder.encode_with_spans(texts[group], spans[group])
        parts.append(vectors)
        pooled += sentence_vectors
        if on_group is not None:
            on_group(min(start + EMBED_GROUP, len(texts)), len(texts), len(texts[group]))
    return np.concatenate(parts), pooled


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


def _write_and_publish(
    settings: Settings, plan: Plan, index_type: str, model_dir: Path, spool: Spool | None = None
) -> tuple[str, dict[str, Any]]:
    """Write the planned version in tmp/, publish it and prune old ones: (version, manifest).

    A full disk becomes an IngestError after the attempt's files are removed; the previous
    version keeps serving.
    """
    prev_version = plan.previous
    version = store.new_version_id(
        store.list_versions(settings) + ([prev_version] if prev_version else [])
    )
    build_dir = store.tmp_dir(settings) / version
    try:
        build_dir.mkdir(parents=True)
        manifest = store.write_version(
            build_dir,
            version,
            prev_version,
            plan.records.values(),
            plan.fingerprint,
            index_type,
            settings,
            model_dir,
            spool,
        )
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        if not disk_full(exc):
            raise
        shutil.rmtree(build_dir, ignore_errors=True)  # give back what the attempt took
        raise _disk_full_error(settings, f"writing version {version}", prev_version) from None
    store.publish(settings, build_dir, version)
    store.prune_versions(settings, settings.index.keep_versions)
    return version, manifest

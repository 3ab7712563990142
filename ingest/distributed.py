"""Distributed builds: a build's new and changed files as batch tasks on the ingest queue.

The process that runs :func:`ingest.build.build_index` with ``index.distributed`` set is the
coordinator. It plans as always, then copies each file to parse into the batch store
(``<build>/inputs/<sha256>``), queues one ``lorebot.ingest_batch`` task per batch of
``index.batch_files`` files (largest batches first) and waits. Any ingest worker of the
fleet takes a batch (:func:`run_batch`): it claims it in Redis under a key it renews
every ``lease/3`` s, fetches the inputs (each checked against its planned hash), parses,
chunks and embeds them as a single-process build would (same chunk ids: they are made
from the file's original path), writes the batch result (chunks, vectors, sentence
vectors, per-file failures) to ``<build>/batches/<batch>-<key>.npz`` and records the
result's SHA-256 in Redis. The coordinator merges each result once, as it is recorded,
into the build's spool on disk (ingest.spool: chunks, vectors and sentence vectors leave
memory batch by batch); writing and publishing the one new version stay build_index's.

The batch store is the fleet's sync location (``<sync.url>/builds``, a shared path or an
S3 bucket) when one is configured, else ``<data_dir>/builds`` (ingest workers on this
machine with the same data dir).

A worker that dies mid-batch stops renewing its claim. Celery requeues the message of a
killed pool process (acks_late + reject_on_worker_lost); a machine gone whole keeps its
message until the broker's visibility timeout, so the coordinator does not wait for
that: once a claim it saw has expired without a result, it queues the batch again. A
result's name is its batch id and key (a hash of its files' content hashes and the
chunking rules), so a batch done twice overwrites one file, and the coordinator merges a
batch once, whoever finished it. When no batch has been claimed for ``help_after_s`` (no
ingest worker runs, or the coordinator is itself the only one: a re-index task on a
single ingest worker), the coordinator runs the next unclaimed batch itself.

Trust: a result is merged only when its SHA-256 matches the digest its worker recorded
in Redis, so whoever can write the store but not Redis cannot slip chunks into the
index; inputs are checked against the hashes the coordinator planned.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lorebot import contracts, sync
from lorebot.errors import IngestError
from lorebot.settings import Settings, mask_url

if TYPE_CHECKING:
    from ingest.embed import Embedder
    from ingest.plan import Plan
    from ingest.pool import TimeoutPool
    from ingest.spool import Spool
    from ingest.store import FileRecord

log = logging.getLogger(__name__)

#: How often the coordinator looks at Redis for claims and results.
POLL_S = 0.25
#: With no batch claimed for this long, the coordinator runs one itself.
HELP_AFTER_S = 15.0
#: A batch whose run failed (an exception, not a bad file) this many times fails the build.
MAX_ATTEMPTS = 3

Dispatch = Callable[[dict[str, Any]], None]
ProgressFn = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- the store
class BatchStore:
    """Where a distributed build's inputs and batch results live (a sync.Location)."""

    def __init__(self, loc: sync.Location) -> None:
        self.loc = loc

    @classmethod
    def for_settings(cls, settings: Settings) -> BatchStore:
        if sync.enabled(settings):
            url = str(settings.sync.url).rstrip("/") + "/builds"
            return cls(sync.Location(url, sync.storage_options(settings)))
        return cls(sync.Location(str(settings.data_dir / "builds")))

    @property
    def name(self) -> str:
        """What a batch task names its store by (a worker refuses a store other than its own)."""
        return mask_url(self.loc.url)

    def put(self, data: bytes, *parts: str) -> None:
        self.loc.write_bytes(data, *parts)

    def get(self, *parts: str) -> bytes:
        return self.loc.fs.cat_file(self.loc.path(*parts))

    def remove(self, build: str) -> None:
        try:
            self.loc.fs.rm(self.loc.path(build), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - litter, not a failed build
            log.warning("could not remove build %s from the batch store: %s", build, exc)


# --------------------------------------------------------------------------- batch results
def pack_result(
    variant: str, files: list[dict[str, Any]], vectors: np.ndarray, sentences: list[np.ndarray]
) -> bytes:
    """One batch result as an .npz (no pickles: a reader loads it with allow_pickle=False)."""
    dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 384
    blocks = [np.asarray(b, dtype=np.float32).reshape(-1, dim) for b in sentences]
    counts = np.array([len(b) for b in blocks], dtype=np.int64)
    flat = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    meta = json.dumps({"variant": variant, "files": files}, ensure_ascii=False).encode()
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(meta, dtype=np.uint8),
        vectors=np.asarray(vectors, dtype=np.float32).reshape(-1, dim),
        sentences=flat,
        counts=counts,
    )
    return buf.getvalue()


def unpack_result(data: bytes) -> tuple[str, list[dict[str, Any]], np.ndarray, list[np.ndarray]]:
    """(variant, files, vectors, per-chunk sentence vectors) of :func:`pack_result`'s bytes."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        vectors = z["vectors"]
        flat = z["sentences"]
        counts = z["counts"]
    ends = np.cumsum(counts)
    sentences = [flat[e - c : e] for c, e in zip(counts, ends, strict=True)]
    return meta["variant"], meta["files"], vectors, sentences


def batch_key(files: list[dict[str, Any]], chunk_tokens: int, overlap: int, variant: str) -> str:
    """A batch's content: what it parses (by hash) and the rules it chunks and embeds with."""
    what = [[f["collection"], f["path"], f["content_hash"]] for f in files]
    text = json.dumps([what, chunk_tokens, overlap, variant])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the worker side
def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Claim:
    """A batch claimed in Redis, renewed by a thread every lease/3 s until released."""

    def __init__(self, r: Any, key: str, holder: str, lease_s: float) -> None:
        self.r, self.key, self.holder = r, key, holder
        self.ttl_ms = max(1000, int(lease_s * 1000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="batch-claim")

    def acquire(self) -> bool:
        if not self.r.set(self.key, self.holder, nx=True, px=self.ttl_ms):
            return False
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                current = self.r.get(self.key)
                if current is None or current.decode() == self.holder:
                    self.r.set(self.key, self.holder, px=self.ttl_ms)
            except Exception as exc:  # noqa: BLE001 - the next renewal tries again
                log.warning("could not renew the claim %s: %s", self.key, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            current = self.r.get(self.key)
            if current is not None and current.decode() == self.holder:
                self.r.delete(self.key)
        except Exception:  # noqa: BLE001 - it expires by itself
            pass


def run_batch(
    settings: Settings,
    spec: dict[str, Any],
    *,
    redis_client: Any,
    embedder: Callable[[], Embedder],
    pool: Callable[[], TimeoutPool],
    holder: str | None = None,
) -> dict[str, Any]:
    """Run one batch of a distributed build (an ingest worker's task, or the coordinator's).

    Returns {"status": ...}: "ok", or why it did nothing ("stale": the build is over,
    "done": another run finished it, "claimed": another run holds it, "other_store").
    ``embedder`` and ``pool`` are called for the process's embedder and parse pool when
    the batch needs them. An exception (the store unwritable, say) is recorded for the
    coordinator and raised.
    """
    build, batch = spec["build"], spec["batch"]
    r = redis_client
    if not r.exists(contracts.build_alive(build)):
        return {"status": "stale"}
    store = BatchStore.for_settings(settings)
    if spec["store"] != store.name:
        log.warning(
            "batch %s of build %s is for the store %s; this worker's is %s",
            batch,
            build,
            spec["store"],
            store.name,
        )
        return {"status": "other_store"}
    if r.hexists(contracts.build_done(build), batch):
        return {"status": "done"}
    holder = holder or holder_name()
    claim = _Claim(r, contracts.build_claim(build, batch), holder, float(spec["lease_s"]))
    if not claim.acquire():
        return {"status": "claimed"}
    started = time.perf_counter()
    try:
        log.info("batch %s of build %s: %d files", batch, build, len(spec["files"]))
        data, n_chunks = _run(settings, spec, store, embedder, pool)
        name = f"{batch}-{spec['key']}.npz"
        store.put(data, build, "batches", name)
        record = {
            "name": name,
            "digest": hashlib.sha256(data).hexdigest(),
            "worker": holder,
            "seconds": round(time.perf_counter() - started, 3),
            "chunks": n_chunks,
        }
    except Exception as exc:
        record = {"error": f"{type(exc).__name__}: {exc}", "worker": holder}
        raise
    finally:
        # The result is recorded before the claim goes: a coordinator that finds neither
        # knows the batch's run died.
        try:
            r.hset(contracts.build_done(build), batch, json.dumps(record))
            r.expire(contracts.build_done(build), contracts.BUILD_TTL_S)
        finally:
            claim.release()
    log.info("batch %s of build %s: %d chunks in %.1fs", batch, build, n_chunks, record["seconds"])
    return {"status": "ok", "chunks": n_chunks}


def _run(
    settings: Settings,
    spec: dict[str, Any],
    store: BatchStore,
    get_embedder: Callable[[], Embedder],
    get_pool: Callable[[], TimeoutPool],
) -> tuple[bytes, int]:
    """Parse, chunk and embed a batch's files: (the packed result, chunks)."""
    from ingest.build import embed_chunks, parse_outcome, variant_of
    from ingest.chunking import chunk_id
    from ingest.parse import ParseJob, ParseOutput
    from lorebot.assets import embedding_model_path

    model_dir = embedding_model_path(settings.index.embedding_model)
    timeout = settings.index.file_timeout_s
    files = spec["files"]
    outcomes: list[dict[str, Any]] = [{} for _ in files]
    with tempfile.TemporaryDirectory(prefix="lorebot-batch-") as tmp:
        jobs = []
        for i, f in enumerate(files):
            data = store.get(spec["build"], "inputs", f["content_hash"])
            if hashlib.sha256(data).hexdigest() != f["content_hash"]:
                outcomes[i] = {"status": "failed", "reason": "changed in the batch store"}
                continue
            # The original name: a title may come from it, and a parser from its suffix.
            local = Path(tmp).resolve() / str(i) / Path(f["path"]).name
            local.parent.mkdir()
            local.write_bytes(data)
            job = ParseJob(
                path=str(local),
                source=f["source"],
                collection=f["collection"],
                kind=f["kind"],
                content_hash=f["content_hash"],
                modified=f["modified"],
                model_dir=str(model_dir),
                chunk_tokens=spec["chunk_tokens"],
                overlap_tokens=spec["overlap_tokens"],
            )
            jobs.append((i, job))
        by_path = {job.path: i for i, job in jobs}
        if jobs:
            parsed = get_pool().imap_unordered([j for _, j in jobs], timeout_s=timeout)
            for job, ok, value in parsed:
                i = by_path[job.path]
                if ok and isinstance(value, ParseOutput):
                    f = files[i]
                    for c in value.chunks:  # the id a single-process build gives
                        ordinal = c["ordinal"]
                        c["chunk_id"] = chunk_id(f["collection"], f["path"], ordinal, c["text"])
                    outcomes[i] = {
                        "status": "ok",
                        "title": value.title,
                        "url": value.url,
                        "seconds": value.seconds,
                        "chunks": value.chunks,
                    }
                else:
                    status, reason, seconds = parse_outcome(ok, value, timeout)
                    outcomes[i] = {"status": status, "reason": reason, "seconds": seconds}
    chunks = [c for o in outcomes if o.get("status") == "ok" for c in o["chunks"]]
    embedder = get_embedder()
    if chunks:
        vectors, sentences = embed_chunks(chunks, embedder)
    else:
        vectors, sentences = np.zeros((0, 384), dtype=np.float32), []
    return pack_result(variant_of(embedder), outcomes, vectors, sentences), len(chunks)


# --------------------------------------------------------------------------- the coordinator
@dataclass
class BatchStats:
    """What a distributed build's batches did."""

    build: str = ""
    batches: int = 0
    chunks: int = 0
    resubmitted: int = 0
    by_coordinator: int = 0
    workers: set[str] = field(default_factory=set)
    variants: set[str] = field(default_factory=set)


def celery_dispatch(settings: Settings) -> Dispatch:
    """Queue a batch task on the ingest queue (by name: no worker code is imported)."""
    from celery import Celery

    app = Celery("lorebot-build")
    url = settings.redis.effective_url
    app.conf.update(
        broker_url=url,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=4,
        redis_socket_connect_timeout=4,
    )

    def dispatch(spec: dict[str, Any]) -> None:
        app.send_task(
            contracts.TASK_INGEST_BATCH,
            kwargs={"spec": spec},
            queue=contracts.QUEUE_INGEST,
            ignore_result=True,
        )

    return dispatch


def split_batches(
    to_parse: list[tuple[Any, FileRecord]], batch_files: int
) -> list[list[tuple[Any, FileRecord]]]:
    """Files into batches of at most ``batch_files``, balanced by size, largest batch first.

    Deterministic: the same files give the same batches (and so the same batch keys).
    """
    items = sorted(to_parse, key=lambda fr: (-fr[1].size, fr[1].key))
    n = max(1, math.ceil(len(items) / batch_files))
    bins: list[list[tuple[Any, FileRecord]]] = [[] for _ in range(n)]
    sizes = [0] * n
    for item in items:  # longest first, into the lightest batch that has room
        open_bins = [b for b in range(n) if len(bins[b]) < batch_files]
        b = min(open_bins, key=lambda k: (sizes[k], k))
        bins[b].append(item)
        sizes[b] += item[1].size
    order = sorted(range(n), key=lambda k: (-sizes[k], k))
    return [bins[k] for k in order if bins[k]]


def build_batches(
    plan: Plan,
    settings: Settings,
    embedder: Embedder,
    *,
    variant: str,
    bar: Any,
    progress_cb: ProgressFn,
    dispatch: Dispatch | None = None,
    pool: TimeoutPool | None = None,
    redis_client: Any = None,
    help_after_s: float | None = None,
    spool: Spool,
) -> BatchStats:
    """Have the fleet parse, chunk and embed ``plan.to_parse``; merge the results into ``plan``.

    Each file ends as build_index's own parse and embed would leave it: a record whose
    chunks and vectors are in ``spool``, or a recorded failure.
    Progress goes to ``progress_cb`` as ``("fleet", files done, files)``.
    """
    import redis

    from ingest.build import make_parse_pool

    help_after_s = HELP_AFTER_S if help_after_s is None else help_after_s
    r = redis_client or redis.Redis.from_url(settings.redis.effective_url)
    dispatch = dispatch or celery_dispatch(settings)
    store = BatchStore.for_settings(settings)
    lease = settings.index.batch_lease_s
    build = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
    stats = BatchStats(build=build)
    # Renewed by a thread while this process lives: batches of a coordinator that died
    # are not run.
    alive = _Claim(r, contracts.build_alive(build), holder_name(), lease)
    alive.acquire()
    try:
        specs, members = _upload(plan, settings, store, build, variant, lease)
    except BaseException:
        alive.release()
        store.remove(build)
        raise
    stats.batches = len(specs)
    total_files = sum(len(m) for m in members.values())
    for spec in specs.values():
        dispatch(spec)
    log.info(
        "ingest: build %s: %d files in %d batches queued on %s (store %s)",
        build,
        total_files,
        len(specs),
        contracts.QUEUE_INGEST,
        store.name,
    )

    task = bar.add_task("parsing + embedding (fleet)", total=total_files, unit="files")
    progress_cb("fleet", 0, total_files)
    remaining = set(specs)
    seen_claimed: set[str] = set()
    attempts = dict.fromkeys(specs, 1)
    files_done = 0
    last_claimed = time.monotonic()  # by a worker (the coordinator's own runs do not count)
    own_pool: TimeoutPool | None = None

    def coordinator_pool() -> TimeoutPool:
        nonlocal own_pool
        if pool is not None:
            return pool
        if own_pool is None:
            own_pool = make_parse_pool(
                settings.index.parse_workers or 1,
                settings.index.file_timeout_s,
                memory_mb=settings.index.parse_memory_mb,
            )
        return own_pool

    def retry(b: str, why: str) -> None:
        r.hdel(contracts.build_done(build), b)
        if attempts[b] >= MAX_ATTEMPTS:
            raise IngestError(
                f"batch {b} of the build failed {attempts[b]} times; last: {why}",
                fix="see the ingest workers' logs; the previous version keeps serving",
            )
        log.warning("ingest: batch %s: %s; queued again", b, why)
        attempts[b] += 1
        seen_claimed.discard(b)
        stats.resubmitted += 1
        dispatch(specs[b])

    try:
        while remaining:
            order = sorted(remaining)
            # Claims first, results second: a run that finished recorded its result
            # before it let its claim go, so "neither" means the run died.
            pipe = r.pipeline()
            for b in order:
                pipe.exists(contracts.build_claim(build, b))
            claimed = {b for b, c in zip(order, pipe.execute(), strict=True) if c}
            done = {
                k.decode(): json.loads(v)
                for k, v in r.hgetall(contracts.build_done(build)).items()
                if k.decode() in remaining
            }
            if claimed:
                last_claimed = time.monotonic()
            seen_claimed |= claimed
            for b, record in sorted(done.items()):
                if "error" in record:
                    retry(b, f"failed on {record.get('worker')}: {record['error']}")
                    continue
                why = _merge(
                    plan, settings, store, build, specs[b], members[b], record, stats, spool
                )
                if why:
                    retry(b, why)
                    continue
                remaining.discard(b)
                files_done += len(members[b])
                bar.advance(task, len(members[b]))
                progress_cb("fleet", files_done, total_files)
            for b in sorted(remaining - claimed - set(done)):
                if b in seen_claimed:  # its claim expired without a result: the run died
                    retry(b, "its worker stopped (the claim expired without a result)")
            idle = time.monotonic() - last_claimed > help_after_s
            b = next((b for b in sorted(remaining) if b not in done), None)
            if b is not None and not claimed and idle:
                # Nobody is working on this build: do the next batch here.
                log.info("ingest: no ingest worker took a batch; running %s here", b)
                try:
                    outcome = run_batch(
                        settings,
                        specs[b],
                        redis_client=r,
                        embedder=lambda: embedder,
                        pool=coordinator_pool,
                        holder=holder_name() + ":coordinator",
                    )
                except Exception:  # recorded in Redis: the next round retries it
                    log.warning("ingest: batch %s failed here", b, exc_info=True)
                    outcome = {"status": "failed"}
                if outcome["status"] == "ok":
                    stats.by_coordinator += 1
                continue
            time.sleep(POLL_S)
    finally:
        if own_pool is not None:
            own_pool.close()
        alive.release()
        try:
            r.delete(contracts.build_done(build))
        except Exception:  # noqa: BLE001, S110 - both expire
            pass
        store.remove(build)
    log.info(
        "ingest: build %s: %d batches, %d chunks, by %d worker(s); %d queued again, "
        "%d run by the coordinator",
        build,
        stats.batches,
        stats.chunks,
        len(stats.workers),
        stats.resubmitted,
        stats.by_coordinator,
    )
    return stats


def _upload(
    plan: Plan, settings: Settings, store: BatchStore, build: str, variant: str, lease: float
) -> tuple[dict[str, dict[str, Any]], dict[str, list[FileRecord]]]:
    """Copy the files to parse into the store and make the batches' specs (and members)."""
    from ingest.build import record_failed

    specs: dict[str, dict[str, Any]] = {}
    members: dict[str, list[FileRecord]] = {}
    for n, group in enumerate(split_batches(plan.to_parse, settings.index.batch_files)):
        files, entries = [], []
        for f, entry in group:
            try:
                data = Path(entry.path).read_bytes()
            except OSError as exc:  # gone or unreadable since it was planned
                record_failed(plan, entry, "failed", f"unreadable: {exc.strerror or exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.content_hash:  # changed since it was planned: index what is read
                entry.content_hash = digest
            store.put(data, build, "inputs", digest)
            files.append(
                {
                    "path": entry.path,
                    "source": f.source,
                    "collection": f.collection,
                    "kind": entry.kind,
                    "content_hash": digest,
                    "modified": entry.modified,
                }
            )
            entries.append(entry)
        if not files:
            continue
        batch = f"b{n:05d}"
        spec = {
            "build": build,
            "batch": batch,
            "store": store.name,
            "lease_s": lease,
            "chunk_tokens": settings.index.chunk_tokens,
            "overlap_tokens": settings.index.chunk_overlap_tokens,
            "variant": variant,
            "files": files,
        }
        spec["key"] = batch_key(files, spec["chunk_tokens"], spec["overlap_tokens"], variant)
        specs[batch] = spec
        members[batch] = entries
    return specs, members


def _merge(
    plan: Plan,
    settings: Settings,
    store: BatchStore,
    build: str,
    spec: dict[str, Any],
    entries: list[FileRecord],
    record: dict[str, Any],
    stats: BatchStats,
    spool: Spool,
) -> str | None:
    """Merge one recorded batch result into ``plan`` and ``spool``; why it cannot be used, or None.

    Only this batch's result is in memory, while it is spooled.
    """
    from ingest.build import record_failed, record_parsed

    if record.get("name") != f"{spec['batch']}-{spec['key']}.npz":
        return f"an unexpected result was recorded: {record.get('name')}"
    try:
        data = store.get(build, "batches", record["name"])
    except FileNotFoundError:
        return "its result is missing from the batch store"
    if hashlib.sha256(data).hexdigest() != record["digest"]:
        return "its result does not match the digest its worker recorded"
    variant, outcomes, vectors, sentences = unpack_result(data)
    if len(outcomes) != len(entries):
        return f"its result has {len(outcomes)} files, not {len(entries)}"
    n_ok = sum(len(o["chunks"]) for o in outcomes if o.get("status") == "ok")
    if n_ok != len(vectors) or len(sentences) != len(vectors):
        raise IngestError(
            f"batch {spec['batch']}'s result has {len(vectors)} vectors for {n_ok} chunks",
            fix="run the ingest again",
        )
    at = 0
    for entry, outcome in zip(entries, outcomes, strict=True):
        if outcome.get("status") == "ok":
            chunks = outcome["chunks"]
            record_parsed(
                plan, entry, settings, outcome["title"], outcome.get("url"), chunks, spool=spool
            )
            plan.results[entry.key].seconds = float(outcome.get("seconds") or 0.0)
            start = entry.spooled[0]  # type: ignore[index]
            spool.add_vectors(
                start, vectors[at : at + len(chunks)], sentences[at : at + len(chunks)]
            )
            at += len(chunks)
        else:
            record_failed(
                plan,
                entry,
                outcome.get("status") or "failed",
                outcome.get("reason"),
                float(outcome.get("seconds") or 0.0),
            )
    stats.chunks += at
    stats.variants.add(variant)
    stats.workers.add(str(record.get("worker")))
    return None

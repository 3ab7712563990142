"""The index format: one module writes and reads a version directory, and moves CURRENT.

Layout under ``settings.index_dir``::

    CURRENT                      the serving version's id (replaced atomically)
    versions/<version>/          complete, immutable once published
        manifest.json            counts, settings, per-file hashes and row ranges
        chunks.sqlite            chunk text + metadata; row number = FAISS id
        faiss.index              dense vectors (Flat, or above FLAT_MAX_CHUNKS an HNSW graph
                                 over float16 codes, whose hits are re-scored from
                                 embeddings.npy; see `load_dense`)
        bm25/                    bm25s keyword index over the same rows
        embeddings.npy           the vectors again, so the next incremental build can
                                 reuse unchanged files' vectors without re-embedding
                                 (and the flat faiss.index is written from it)
        sentences.npy            a float16 vector per sentence unit of every chunk (pooled
                                 from the chunk's MiniLM pass), for the evidence quote
        sentence_rows.npy        where each chunk's sentence vectors start (rows + 1 offsets)
    tmp/                         builds in progress and their spool of fresh chunks
                                 (ingest.spool; a killed build leaves litter here,
                                 removed by the next build; never read)

A version is written in ``tmp/`` (`write_version`, from the `FileRecord` of every file),
renamed into ``versions/`` and only then named in ``CURRENT`` (`publish`), so a reader
sees the old version or the new one, never half of one. Rows are ordered by collection,
so a collection is a contiguous row range: the collection filter is a range selector
applied inside the searches (ingest.search), before anything is ranked. `IndexReader`
opens one version for searching, chunk lookup and stats.

Writing streams: rows are copied into the new version a file and a slice at a time, from
the previous version (carried files) or from the build's spool (fresh files); FAISS and
BM25 are built from the written files in slices (ingest.keyword for BM25). No step holds
all chunks, texts or vectors of the version at once, except an HNSW graph index, which
faiss builds in memory: its links and a float16 copy of the vectors (about 1 KB a chunk,
half of what float32 vectors made it), never the float32 vectors themselves.
"""

from __future__ import annotations

import calendar
import functools
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.rank import Ranker

# Read through ingest.store by the store's unit tests; they live in ingest.search.
from ingest.search import BM25_STOPWORDS, HybridSearch, hnsw_ef_search
from ingest.spool import (
    DIM,
    NpyWriter,
    Spool,
    iter_npy_slices,
    norm_hash,  # noqa: F401 - the store's name for it
    npy_layout,
)
from lorebot.errors import IndexMissingError, IngestError
from lorebot.files import atomic_write_text, fsync_tree
from lorebot.files import fsync_dir as _fsync_dir
from lorebot.settings import Settings
from lorebot.types import Chunk, SearchHit
from lorebot.versioned import VersionedDir

if TYPE_CHECKING:
    from ingest.embed import Embedder

log = logging.getLogger(__name__)

# 2: sentence vectors. A version of another format is rebuilt in full by the next ingest
# (the fingerprint differs); until then it serves, and the answer path embeds sentences itself.
FORMAT = 2
MANIFEST = "manifest.json"
CHUNKS_DB = "chunks.sqlite"
FAISS_FILE = "faiss.index"
BM25_DIR = "bm25"
EMBEDDINGS = "embeddings.npy"
SENTENCES = "sentences.npy"
SENTENCE_ROWS = "sentence_rows.npy"
#: Query vectors an index reader remembers (the evidence quote re-uses the search's).
QUERY_CACHE = 16
FLAT_MAX_CHUNKS = 100_000
INGEST_FIX = "run `lorebot ingest PATH`"

_VERSION_RE = re.compile(r"^v\d{8}-\d{6}-[0-9a-f]{4}$")

CHUNK_COLUMNS = (
    "row",
    "chunk_id",
    "file_key",
    "ordinal",
    "collection",
    "source",
    "title",
    "heading",
    "page",
    "url",
    "modified",
    "content_hash",
    "text",
    "embed_text",
    "norm_hash",
    "kind",
    "extra",
)

SCHEMA = """
CREATE TABLE chunks (
    row INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    file_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    heading TEXT NOT NULL,
    page INTEGER,
    url TEXT,
    modified TEXT,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    embed_text TEXT NOT NULL,
    norm_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    extra TEXT NOT NULL
);
"""
INDEXES = """
CREATE UNIQUE INDEX chunks_id ON chunks(chunk_id);
CREATE INDEX chunks_file ON chunks(file_key);
"""


# -- one file's record ------------------------------------------------------------------


@dataclass
class FileRecord:
    """One file's entry in a version: its manifest record and where its rows come from.

    A file's rows are either carried over from the previous version (``carry_rows``, that
    version's row range) or freshly parsed into the build's spool (``spooled``, the spool
    rows of its chunks and vectors); `write_version` sets ``rows``, the range in the new
    version.
    """

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
    carry_rows: tuple[int, int] | None = None
    spooled: tuple[int, int] | None = None
    rows: tuple[int, int] | None = None

    @classmethod
    def from_manifest(cls, key: str, old: dict[str, Any]) -> FileRecord:
        """A previous version's record of a file, kept as it is (its rows carried over)."""
        return cls(
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


# -- paths and the pointer ------------------------------------------------------------


def _versioned(settings: Settings) -> VersionedDir:
    return VersionedDir(settings.index_dir, lambda p: (p / MANIFEST).is_file())


def versions_dir(settings: Settings) -> Path:
    return _versioned(settings).versions_dir


def tmp_dir(settings: Settings) -> Path:
    return _versioned(settings).tmp_dir


def version_path(settings: Settings, version: str) -> Path:
    return versions_dir(settings) / version


def current_version(settings: Settings) -> str | None:
    """The serving version id, or None. Cheap (one small file read): call it between tasks."""
    return _versioned(settings).current()


def list_versions(settings: Settings) -> list[str]:
    """Complete versions on disk, oldest first."""
    return _versioned(settings).versions()


def set_current(settings: Settings, version: str) -> None:
    """Point CURRENT at a complete version (atomic)."""
    if not (version_path(settings, version) / MANIFEST).is_file():
        raise IndexMissingError(f"index version {version} is not complete on disk", fix=INGEST_FIX)
    _versioned(settings).set_current(version)


def new_version_id(existing: Iterable[str], now: float | None = None) -> str:
    """A sortable id like v20261123-034501-3f2a, later than every existing one."""
    ts = int(time.time() if now is None else now)
    latest = max((v for v in existing if _VERSION_RE.match(v)), default=None)
    if latest is not None:
        latest_ts = calendar.timegm(time.strptime(latest[1:16], "%Y%m%d-%H%M%S"))
        ts = max(ts, latest_ts + 1)
    return time.strftime("v%Y%m%d-%H%M%S", time.gmtime(ts)) + "-" + secrets.token_hex(2)


def clear_unfinished(settings: Settings) -> None:
    """Remove the litter of builds that never finished (tmp/); run under the build lock."""
    shutil.rmtree(tmp_dir(settings), ignore_errors=True)


def prune_versions(settings: Settings, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions; never the current one. Returns the deleted."""
    current = current_version(settings)
    versions = list_versions(settings)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in doomed:
        shutil.rmtree(version_path(settings, v), ignore_errors=True)
        log.info("deleted old index version %s", v)
    return doomed


def read_manifest(path: Path) -> dict[str, Any]:
    with open(path / MANIFEST, encoding="utf-8") as fh:
        return json.load(fh)


# -- writing a version ----------------------------------------------------------------


def quiet_libraries() -> None:
    """faiss logs its CPU-feature probing at INFO and bm25s sets itself to DEBUG."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("bm25s").setLevel(logging.WARNING)


def bm25_tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords=BM25_STOPWORDS, show_progress=False)


def build_faiss(vectors: np.ndarray, index_type: str):
    """A FAISS inner-product index over unit vectors (so scores are cosines), in memory."""
    index = _empty_faiss(vectors.shape[1] if vectors.ndim == 2 else DIM, index_type, len(vectors))
    for start in range(0, len(vectors), HNSW_ADD_ROWS):
        index.add(np.ascontiguousarray(vectors[start : start + HNSW_ADD_ROWS], dtype=np.float32))
    return index


#: Links per node of the HNSW graph (2x that on its bottom layer), and its build breadth.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: Vectors handed to faiss per add while a graph is built (12 MiB of float32).
HNSW_ADD_ROWS = 8192


def _empty_faiss(dim: int, index_type: str, n: int):
    """An empty index for ``n`` vectors: flat float32, or an HNSW graph over float16 codes.

    The graph stores each vector as float16 (faiss's scalar quantiser, no training): half
    the memory of float32 while it is built and served, and a cosine off by ~1e-4 at
    most, which only moves near-ties. A reader re-scores the graph's hits with the float32
    vectors of embeddings.npy (`RescoredIndex`), so scores stay exact.
    """
    import faiss

    if index_type == "hnsw":
        index = faiss.IndexHNSWSQ(
            dim, faiss.ScalarQuantizer.QT_fp16, HNSW_M, faiss.METRIC_INNER_PRODUCT
        )
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = hnsw_ef_search(n)
        _reserve_graph(index, n)
        return index
    return faiss.IndexFlatIP(dim)


def _reserve_graph(index: Any, n: int) -> None:
    """Size an empty HNSW index's code and link arrays for ``n`` vectors up front.

    faiss grows them add by add, and a growing array is briefly held twice (the old copy
    and the larger new one), so the peak came near the end of the build at well above the
    final size. Resizing to the final size and back to empty keeps the capacity (a
    shrinking array is never reallocated), so the adds fill it in place. Only memory
    depends on this: where faiss's arrays offer no ``resize``, they grow as before.
    """
    import faiss

    storage = faiss.downcast_index(index.storage)
    # Links: 2*M on the bottom layer for every node, M per upper layer; a node has 1/(M-1)
    # upper layers on average, so 2 slots a node more than the bottom layer is ample.
    slots = n * (2 * HNSW_M + 2)
    try:
        storage.codes.resize(n * storage.code_size)
        storage.codes.resize(0)
        index.hnsw.neighbors.resize(slots, -1)
        index.hnsw.neighbors.resize(0, -1)
    except (AttributeError, TypeError):  # pragma: no cover - another faiss
        log.debug("faiss arrays cannot be reserved; the HNSW build grows them as it goes")


@functools.cache
def _flat_layout(dim: int = DIM) -> bytes | None:
    """What faiss writes before an IndexFlatIP's vectors (ntotal and length zeroed), or None.

    faiss stores a flat index as a small header and the raw float32 vectors, so a flat
    index can be written from embeddings.npy a slice at a time instead of being built in
    memory first. The layout is checked against faiss's own output for a one-vector
    index; with any other faiss the index is built in memory as before.
    """
    import faiss

    head = faiss.serialize_index(faiss.IndexFlatIP(dim)).tobytes()
    if len(head) < 24 or head[:4] != b"IxFI" or head[8:16] != bytes(8) or head[-8:] != bytes(8):
        return None
    one = np.linspace(-1, 1, dim, dtype=np.float32).reshape(1, dim)
    probe = faiss.IndexFlatIP(dim)
    probe.add(one)
    if faiss.serialize_index(probe).tobytes() != _flat_header(head, 1, dim) + one.tobytes():
        return None
    return head


def _flat_header(head: bytes, n: int, dim: int) -> bytes:
    out = bytearray(head)
    out[8:16] = struct.pack("<q", n)  # ntotal
    out[-8:] = struct.pack("<Q", n * dim)  # the codes' length, in floats
    return bytes(out)


def write_faiss(vdir: Path, index_type: str) -> None:
    """faiss.index of a version being built, from its embeddings.npy read in slices.

    A flat index streams straight to disk; an HNSW graph is built in memory by faiss
    (its float16 codes and links are the index itself), fed HNSW_ADD_ROWS vectors at a time.
    """
    import faiss

    source = vdir / EMBEDDINGS
    shape, _dtype, _offset = npy_layout(source)
    n, dim = shape
    head = _flat_layout(dim) if index_type != "hnsw" else None
    if head is not None:
        with open(vdir / FAISS_FILE, "wb") as fh:
            fh.write(_flat_header(head, n, dim))
            for block in iter_npy_slices(source, 0, n):
                fh.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        return
    index = _empty_faiss(dim, index_type, n)
    for block in iter_npy_slices(source, 0, n, step=HNSW_ADD_ROWS):
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    faiss.write_index(index, str(vdir / FAISS_FILE))


def choose_index_type(n_chunks: int) -> str:
    """Exact search while it is cheap; a graph index above ~100k chunks."""
    return "flat" if n_chunks <= FLAT_MAX_CHUNKS else "hnsw"


def _embedded_texts(db_path: Path) -> Iterator[str]:
    """Every chunk's embedded text in row order, read a page at a time."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        cur = db.execute("SELECT embed_text FROM chunks ORDER BY row")
        while page := cur.fetchmany(1024):
            for (text,) in page:
                yield text
    finally:
        db.close()


def write_search_indexes(vdir: Path, index_type: str) -> None:
    """faiss.index and bm25/ of a version directory being built (from its written rows)."""
    quiet_libraries()
    from ingest.keyword import write_bm25

    write_faiss(vdir, index_type)
    # A version always has >= 1 chunk (bm25s cannot load an empty corpus).
    write_bm25(vdir / BM25_DIR, _embedded_texts(vdir / CHUNKS_DB), vdir / "bm25.pairs")


def load_dense(vdir: Path) -> Any:
    """A version's FAISS index, ready to search, with as little of it in private memory as
    faiss allows.

    The index file is memory-mapped (faiss's IO_FLAG_MMAP_IFC: a flat index's vectors, a
    graph's codes and links) where this faiss can, so the pages are the page cache's, shared
    by every process serving the version; else it is read whole, as before. (Mapping is
    safe because a published version's files are never rewritten in place: versions are
    renamed in whole and deleted by unlinking, which leaves a mapping intact.) A graph over
    compressed codes (what `write_faiss` writes for "hnsw") comes back as a
    `RescoredIndex` over the version's float32 embeddings.npy. A flat index, or an HNSW
    graph over float32 vectors (written before the graph was float16), is returned as it
    is: its scores are exact already.
    """
    import faiss

    path = str(vdir / FAISS_FILE)
    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", None)
    index = None
    if flag is not None:
        try:
            index = faiss.read_index(path, flag)
        except RuntimeError as exc:  # a layout faiss cannot map: read it whole
            log.info("faiss index of %s read whole (%s)", vdir.name, exc)
    if index is None:
        index = faiss.read_index(path)
    graph = faiss.downcast_index(index)
    if not isinstance(graph, faiss.IndexHNSW):
        return index
    if isinstance(faiss.downcast_index(graph.storage), faiss.IndexFlat):
        return index
    try:
        vectors = np.load(vdir / EMBEDDINGS, mmap_mode="r")
    except (OSError, ValueError) as exc:
        vectors = None
        log.warning("embeddings of %s unreadable (%s)", vdir.name, exc)
    if vectors is None or vectors.shape != (index.ntotal, index.d):
        log.warning(
            "index %s: embeddings.npy does not match its graph; scores are float16", vdir.name
        )
        return index
    return RescoredIndex(index, vectors)


class RescoredIndex:
    """A FAISS graph index over compressed codes whose hits are scored with float32 vectors.

    The graph (faiss, float16 codes) chooses the candidates; their scores, their order
    and every vector reconstructed from it come from ``vectors`` (the version's
    embeddings.npy, memory-mapped), so a search returns the cosines a float32 index would
    and the exact searches in ingest.search read exact vectors. Anything else is the
    graph's (``hnsw``, ``ntotal``, ``d``).
    """

    def __init__(self, index: Any, vectors: np.ndarray) -> None:
        self.index = index
        self.vectors = vectors

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    def search(self, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """faiss's ``search``: (scores, ids) per query row, best first, -1 padded."""
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.index.d)
        _approx, ids = self.index.search(x, k, params=params)
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        out_ids = np.full(ids.shape, -1, dtype=ids.dtype)
        for q in range(len(x)):
            found = np.sort(ids[q][ids[q] >= 0])
            if found.size == 0:
                continue
            exact = np.asarray(self.vectors[found], dtype=np.float32) @ x[q]
            # Best first; a tie goes to the lower row, as in faiss's exact search.
            order = np.lexsort((found, -exact))
            scores[q, : found.size] = exact[order]
            out_ids[q, : found.size] = found[order]
        return scores, out_ids

    def reconstruct(self, row: int) -> np.ndarray:
        return np.array(self.vectors[int(row)], dtype=np.float32)

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        return np.array(self.vectors[int(start) : int(start) + int(n)], dtype=np.float32)


def load_sentence_vectors(vdir: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, vectors) of a version, memory-mapped; None for a version without them."""
    if vdir is None or not (vdir / SENTENCES).is_file() or not (vdir / SENTENCE_ROWS).is_file():
        return None
    try:
        return np.load(vdir / SENTENCE_ROWS), np.load(vdir / SENTENCES, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning(
            "sentence vectors of %s unreadable (%s); evidence is embedded per question",
            vdir.name,
            exc,
        )
        return None


def write_version(
    build_dir: Path,
    version: str,
    previous: str | None,
    records: Iterable[FileRecord],
    fingerprint: dict[str, Any],
    index_type: str,
    settings: Settings,
    model_dir: Path,
    spool: Spool | None = None,
) -> dict[str, Any]:
    """Write a complete version into ``build_dir``; returns its manifest (written last).

    chunks.sqlite, embeddings.npy, the sentence vectors, faiss.index, bm25/ and
    manifest.json. Carried rows are copied from ``previous``, fresh ones from ``spool``
    (finished here); each written record's ``rows`` is set to its range in the new version.
    """
    records = list(records)
    ordered = sorted(
        (r for r in records if r.status == "ok" and r.chunks > 0),
        key=lambda r: (r.collection, r.key),
    )
    total = sum(r.chunks for r in ordered)
    carrying = previous is not None and any(r.carry_rows for r in ordered)
    if spool is not None:
        spool.finish()
    carry_from = version_path(settings, previous) if carrying and previous else None
    rows = _RowWriter(build_dir, ordered, total, carry_from, spool)
    collections: dict[str, dict[str, Any]] = {}
    at = 0
    for r in ordered:
        start = at
        at += rows.copy(r, start) if r.carry_rows is not None else rows.insert(r, start)
        r.rows = (start, at)
        col = collections.setdefault(
            r.collection, {"documents": 0, "chunks": 0, "rows": [start, at]}
        )
        col["documents"] += 1
        col["chunks"] += at - start
        col["rows"][1] = at
    if at != total:
        raise IngestError(
            f"index build is inconsistent ({at} rows written, {total} expected)",
            fix="run `lorebot ingest PATH --full`",
        )
    n_units = rows.finish()
    write_search_indexes(build_dir, index_type)
    model = Path(model_dir)
    manifest = {
        "format": FORMAT,
        "version": version,
        "previous": previous,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "index_type": index_type,
        "embedding_model": model.parent.name if model.name == "model" else model.name,
        "dim": 384,
        "fingerprint": fingerprint,
        "settings": {
            "chunk_tokens": settings.index.chunk_tokens,
            "chunk_overlap_tokens": settings.index.chunk_overlap_tokens,
            "max_file_mb": settings.index.max_file_mb,
        },
        "counts": {"documents": len(ordered), "chunks": total, "sentences": n_units},
        "collections": collections,
        "files": {r.key: r.manifest() for r in sorted(records, key=lambda r: r.key)},
    }
    atomic_write_text(build_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


class _RowWriter:
    """The row-ordered parts of a version being written, filled file by file.

    chunks.sqlite, embeddings.npy and sentences.npy take each file's rows in row order,
    copied from the previous version (``carry_from``) or from the build's ``spool``, a
    slice at a time; nothing of the version is held in memory but the sentence offsets
    (8 bytes a chunk).
    """

    def __init__(
        self,
        build_dir: Path,
        ordered: list[FileRecord],
        total: int,
        carry_from: Path | None,
        spool: Spool | None,
    ) -> None:
        self.build_dir = build_dir
        self.carry_from = carry_from
        self.spool = spool
        self.old_rows: np.ndarray | None = None
        self.db = sqlite3.connect(build_dir / CHUNKS_DB)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(SCHEMA)
        if carry_from is not None:
            self.db.execute("ATTACH DATABASE ? AS old", (f"file:{carry_from / CHUNKS_DB}?mode=ro",))
            old_sentences = load_sentence_vectors(carry_from)
            if old_sentences is not None:
                self.old_rows = old_sentences[0]
        if spool is not None:
            self.db.execute("ATTACH DATABASE ? AS fresh", (f"file:{spool.db_path}?mode=ro",))
        self.offsets = self._sentence_offsets(ordered, total)
        self.cols = ",".join(CHUNK_COLUMNS)
        self.vectors = NpyWriter(build_dir / EMBEDDINGS, (total, DIM), np.float32)
        self.units = NpyWriter(build_dir / SENTENCES, (int(self.offsets[-1]), DIM), np.float16)

    def _sentence_offsets(self, ordered: list[FileRecord], total: int) -> np.ndarray:
        """Where each new row's sentence vectors start (rows + 1), known before any is copied."""
        counts = []
        for r in ordered:
            if r.carry_rows is not None:
                s, e = r.carry_rows
                if self.old_rows is not None:
                    counts.append(np.diff(self.old_rows[s : e + 1]))
                else:  # a version without sentence vectors: its rows get none
                    counts.append(np.zeros(e - s, dtype=np.int64))
            elif r.spooled is not None and self.spool is not None:
                counts.append(self.spool.unit_counts(*r.spooled))
            else:
                raise IngestError(
                    f"index build is inconsistent ({r.path} has neither old nor new rows)",
                    fix="run `lorebot ingest PATH --full`",
                )
        offsets = np.zeros(total + 1, dtype=np.int64)
        flat = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        if len(flat) != total:
            raise IngestError(
                f"index build is inconsistent ({len(flat)} rows planned, {total} expected)",
                fix="run `lorebot ingest PATH --full`",
            )
        np.cumsum(flat, out=offsets[1:])
        return offsets

    def copy(self, r: FileRecord, start: int) -> int:
        """A carried file's rows, moved to ``start``; returns how many."""
        s, end = r.carry_rows  # type: ignore[misc]
        # Same rows, new position; the file's mtime and display path may have moved.
        self.db.execute(
            f"INSERT INTO chunks ({self.cols}) "
            "SELECT row - ? + ?, chunk_id, file_key, ordinal, collection, "
            "CASE WHEN url IS NOT NULL THEN source ELSE ? END, title, heading, page, url, ?, "
            "content_hash, text, embed_text, norm_hash, kind, extra "
            "FROM old.chunks WHERE row >= ? AND row < ? ORDER BY row",
            (s, start, r.source, r.modified, s, end),
        )
        old = self.carry_from
        assert old is not None
        for block in iter_npy_slices(old / EMBEDDINGS, s, end):
            self.vectors.append(block)
        if self.old_rows is not None:
            a, b = int(self.old_rows[s]), int(self.old_rows[end])
            for block in iter_npy_slices(old / SENTENCES, a, b):
                self.units.append(block)
        return end - s

    def insert(self, r: FileRecord, start: int) -> int:
        """A freshly parsed file's chunks, vectors and sentence vectors; returns how many."""
        s, end = r.spooled  # type: ignore[misc]
        spool = self.spool
        assert spool is not None
        self.db.execute(
            f"INSERT INTO chunks ({self.cols}) "
            "SELECT srow - ? + ?, chunk_id, ?, ordinal, ?, ?, ?, heading, page, ?, ?, ?, "
            "text, embed_text, norm_hash, kind, extra "
            "FROM fresh.chunks WHERE srow >= ? AND srow < ? ORDER BY srow",
            (s, start, r.key, r.collection, r.source, r.title, r.url, r.modified)
            + (r.content_hash, s, end),
        )
        for block in spool.vector_slices(s, end):
            self.vectors.append(block)
        for block in spool.unit_slices(s, end):
            self.units.append(block)
        return end - s

    def finish(self) -> int:
        """Commit and index chunks.sqlite, close the vector files; the sentence units written."""
        self.db.commit()
        for name in ("old", "fresh"):
            if (self.carry_from if name == "old" else self.spool) is not None:
                self.db.execute(f"DETACH DATABASE {name}")
        self.db.executescript(INDEXES)
        self.db.commit()
        self.db.close()
        self.vectors.close()
        self.units.close()
        np.save(self.build_dir / SENTENCE_ROWS, self.offsets)
        return int(self.offsets[-1])


def publish(settings: Settings, build_dir: Path, version: str) -> Path:
    """Move a finished build into versions/ and point CURRENT at it."""
    fsync_tree(build_dir)
    final = version_path(settings, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(build_dir, final)
    _fsync_dir(final.parent)
    set_current(settings, version)
    # Many workers, one truth: copy the new version, then its pointer, to the shared
    # location (no-op without sync.url). A failure raises SyncError: the local index is
    # already current, `lorebot sync publish` retries the upload.
    from lorebot.sync import publish_index

    publish_index(settings)
    return final


# -- reading ---------------------------------------------------------------------------


def open_index(
    settings: Settings, version: str | None = None, embedder: Embedder | None = None
) -> IndexReader:
    """Open the current (or a named) version for searching.

    Raises IndexMissingError (fix: run `lorebot ingest PATH`) when there is none.
    """
    version = version or current_version(settings)
    if version is None:
        raise IndexMissingError(f"no index has been built in {settings.index_dir}", fix=INGEST_FIX)
    vdir = version_path(settings, version)
    if not (vdir / MANIFEST).is_file():
        raise IndexMissingError(
            f"index version {version} is missing from {settings.index_dir}", fix=INGEST_FIX
        )
    return IndexReader(settings, vdir, embedder=embedder)


class IndexReader:
    """A read-only view of one index version: hybrid search (ingest.search), chunk lookup, stats.

    Load once per process and reuse; it holds the BM25 matrices in memory and maps the
    FAISS index (`load_dense`; the chunk store stays on disk). The query embedder is the
    one passed in, or one created on the first search.
    """

    def __init__(self, settings: Settings, vdir: Path, embedder: Embedder | None = None) -> None:
        quiet_libraries()
        import bm25s

        self.settings = settings
        self.path = vdir
        self.manifest = read_manifest(vdir)
        self.version: str = self.manifest["version"]
        self._embedder = embedder
        self.index = load_dense(vdir)
        self.bm25 = bm25s.BM25.load(str(vdir / BM25_DIR), mmap=False, show_progress=False)
        uri = f"file:{vdir / CHUNKS_DB}?mode=ro&immutable=1"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._db_lock = threading.Lock()  # one sqlite connection, possibly several threads
        self.n = int(self.manifest["counts"]["chunks"])
        self.index_type: str = self.manifest.get("index_type", "flat")
        self._ranges: dict[str, tuple[int, int]] = {
            name: tuple(c["rows"]) for name, c in self.manifest["collections"].items()
        }
        self._sentences = load_sentence_vectors(vdir)
        if self._sentences is not None and len(self._sentences[0]) != self.n + 1:
            log.warning("index %s: sentence vectors do not match its chunks; ignored", self.version)
            self._sentences = None
        self._queries: dict[str, np.ndarray] = {}
        self._queries_lock = threading.Lock()
        self.searcher: HybridSearch | None = HybridSearch(
            self.index,
            self.bm25,
            self.n,
            self.index_type,
            ranker=Ranker.from_settings(settings.retrieval, self._sentences),
        )

    # -- embedder
    @property
    def embedder(self) -> Embedder:
        """The query embedder: the variant this version's chunks were embedded with."""
        if self._embedder is None:
            from ingest.embed import Embedder

            self._embedder = Embedder.from_settings(self.settings)
        variant = self.manifest.get("fingerprint", {}).get("embedding_variant", "torch")
        return self._embedder.for_variant(variant, onnx_dir=self.settings.models_dir)

    def encode(self, texts: list[str]):
        """Unit vectors of ``texts`` with the query embedder (the answer path scores sentences)."""
        return self.embedder.encode(texts)

    def query_vector(self, text: str) -> np.ndarray:
        """The query embedding of ``text``, remembered for the last few queries.

        The answer path asks for the question's vector right after searching with it (to
        choose the evidence sentence); this keeps that from running MiniLM twice.
        """
        with self._queries_lock:
            hit = self._queries.get(text)
        if hit is not None:
            return hit
        vec = self.embedder.encode([text])[0]
        with self._queries_lock:
            self._queries[text] = vec
            while len(self._queries) > QUERY_CACHE:
                self._queries.pop(next(iter(self._queries)))
        return vec

    def sentence_vectors(self, hit: SearchHit) -> np.ndarray | None:
        """The stored vectors of a hit's sentence units (float32, one row per unit), or None.

        None when this version has none (built by an older lorebot) or the hit carries no
        row; the caller then embeds the sentences itself.
        """
        if self._sentences is None or hit.row is None or not 0 <= hit.row < self.n:
            return None
        offsets, vectors = self._sentences
        return np.asarray(vectors[offsets[hit.row] : offsets[hit.row + 1]], dtype=np.float32)

    # -- public API
    def collections(self) -> list[str]:
        return sorted(self._ranges)

    def stats(self) -> dict[str, Any]:
        """{version, documents, chunks, collections: {name: {documents, chunks}}, built_at}."""
        cols = {
            name: {"documents": c["documents"], "chunks": c["chunks"]}
            for name, c in sorted(self.manifest["collections"].items())
        }
        return {
            "version": self.version,
            "documents": self.manifest["counts"]["documents"],
            "chunks": self.manifest["counts"]["chunks"],
            "collections": cols,
            "built_at": self.manifest["built_at"],
            "index_type": self.index_type,
            "embedding_model": self.manifest.get("embedding_model"),
        }

    def get_chunk(self, chunk_id: str) -> Chunk:
        """The chunk with this id; KeyError when this version has none."""
        with self._db_lock:
            row = self.db.execute("SELECT * FROM chunks WHERE chunk_id = ?", (chunk_id,)).fetchone()
        if row is None:
            raise KeyError(chunk_id)
        return _to_chunk(row)

    def neighbours(self, hit: SearchHit, before: int = 1, after: int = 1) -> list[SearchHit]:
        """The chunks just before and after ``hit`` in its document, in document order.

        The answer to a question often sits next to the chunk that matched it (a heading
        and its first lines in one chunk, the phone number in the next): the reader reads
        them too. Same document, so same collection: no access rule is crossed.
        """
        if hit.row is None:
            return []
        with self._db_lock:
            row = self.db.execute(
                "SELECT file_key, ordinal FROM chunks WHERE row = ?", (hit.row,)
            ).fetchone()
            if row is None:
                return []
            rows = self.db.execute(
                "SELECT * FROM chunks WHERE file_key = ? AND ordinal BETWEEN ? AND ? "
                "AND row != ? ORDER BY ordinal",
                (row["file_key"], row["ordinal"] - before, row["ordinal"] + after, hit.row),
            ).fetchall()
        return [SearchHit(chunk=_to_chunk(r), row=r["row"], score=0.0) for r in rows]

    def iter_chunks(self, collections: list[str] | None = None) -> Iterator[Chunk]:
        """Every chunk in ``collections`` (None = all), in row order.

        Only those collections' own row ranges are read, so a restricted collection's
        text never reaches the caller (the refresh's pair pipeline relies on it).
        """
        for start, end in self.allowed_ranges(collections):
            with self._db_lock:
                rows = self.db.execute(
                    "SELECT * FROM chunks WHERE row >= ? AND row < ? ORDER BY row", (start, end)
                ).fetchall()
            for row in rows:
                chunk = _to_chunk(row)
                if collections is None or chunk.collection in collections:
                    yield chunk

    def close(self) -> None:
        try:
            self.db.close()
        except Exception:
            pass
        self.index = None
        self.bm25 = None
        self.searcher = None
        self._sentences = None

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def allowed_ranges(self, collections: list[str] | None) -> list[tuple[int, int]]:
        """Row ranges a search may return: all rows, or those of the named collections."""
        if collections is None:
            return [(0, self.n)] if self.n else []
        return sorted(
            self._ranges[c]
            for c in set(collections)
            if c in self._ranges and self._ranges[c][1] > self._ranges[c][0]
        )

    def search(
        self,
        query: str,
        k: int = 4,
        collections: list[str] | None = None,
        candidates: int = 20,
        allowed: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """Hybrid search: dense (cosine) + BM25, fused by reciprocal rank, deduplicated.

        The collection filter (and ``allowed``, a bool per row: the asker's permission
        mask from ingest.permissions) restricts both searches before ranking: no chunk of
        another collection, nor one the asker may not read, can be returned, however
        large k is. ``dense_score`` is the cosine
        similarity of every returned chunk (keyword-only hits included); ``keyword_score``
        is its BM25 score, or None when the query's words do not occur in it.
        """
        if not query or not query.strip() or k <= 0:
            return []
        ranges = self.allowed_ranges(collections)
        if not ranges:
            return []
        return self.searcher.search(
            query, self.query_vector(query), ranges, k, candidates, self._fetch, allowed
        )

    def _fetch(self, rows: list[int]) -> dict[int, tuple[Chunk, str]]:
        """The chunks of ``rows`` and their normalised-text hashes (search deduplicates)."""
        out: dict[int, tuple[Chunk, str]] = {}
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            marks = ",".join("?" * len(part))
            with self._db_lock:
                recs = self.db.execute(
                    f"SELECT * FROM chunks WHERE row IN ({marks})", part
                ).fetchall()
            for rec in recs:
                out[rec["row"]] = (_to_chunk(rec), rec["norm_hash"])
        return out


def _to_chunk(rec: sqlite3.Row) -> Chunk:
    return Chunk(
        chunk_id=rec["chunk_id"],
        text=rec["text"],
        title=rec["title"],
        source=rec["source"],
        collection=rec["collection"],
        heading=rec["heading"],
        page=rec["page"],
        url=rec["url"],
        modified=rec["modified"],
        content_hash=rec["content_hash"],
        extra=json.loads(rec["extra"]) if rec["extra"] else {},
    )


class LiveIndex:
    """The current index version for a long-lived process, reloaded when CURRENT moves.

    A worker calls ``live.get()`` at the start of each task: it costs one small file
    read, and when an ingest has published a new version the new one is opened (sharing
    the already-loaded embedder) and the old one closed, without a restart.
    """

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self._reader: IndexReader | None = None

    def get(self) -> IndexReader:
        """The reader of the current version (IndexMissingError when there is none)."""
        current = current_version(self.settings)
        if self._reader is not None and (current is None or current == self._reader.version):
            return self._reader  # keep serving what we have if the pointer vanished
        fresh = open_index(self.settings, current, embedder=self._shared_embedder())
        old, self._reader = self._reader, fresh
        if old is not None:
            log.info("index hot-reloaded %s -> %s", old.version, fresh.version)
            old.close()
        else:
            log.info("index loaded version=%s", fresh.version)
        return fresh

    def _shared_embedder(self) -> Embedder | None:
        if self.embedder is None and self._reader is not None:
            self.embedder = self._reader._embedder  # the base, not a variant of it
        return self.embedder

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

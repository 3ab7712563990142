"""The versioned index on disk and the read API.

Layout under ``settings.index_dir``::

    CURRENT                      the serving version's id (replaced atomically)
    versions/<version>/          complete, immutable once published
        manifest.json            counts, settings, per-file hashes and row ranges
        chunks.sqlite            chunk text + metadata; row number = FAISS id
        faiss.index              dense vectors (Flat, or HNSW above FLAT_MAX_CHUNKS)
        bm25/                    bm25s keyword index over the same rows
        embeddings.npy           the vectors again, so the next incremental build can
                                 reuse unchanged files' vectors without re-embedding
        sentences.npy            a float16 vector per sentence unit of every chunk (pooled
                                 from the chunk's MiniLM pass), for the evidence quote
        sentence_rows.npy        where each chunk's sentence vectors start (rows + 1 offsets)
    tmp/                         builds in progress (a killed build leaves litter here,
                                 removed by the next build; never read)

A version is built in ``tmp/``, renamed into ``versions/`` and only then named in
``CURRENT``, so a reader sees the old version or the new one, never half of one. Rows are
ordered by collection, so a collection is a contiguous row range: the collection filter
is a range selector applied inside the searches, before anything is ranked.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lorebot.errors import IndexMissingError
from lorebot.files import fsync_dir as _fsync_dir
from lorebot.files import fsync_tree
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
RRF_K = 60
INGEST_FIX = "run `lorebot ingest PATH`"
BM25_STOPWORDS = "en"

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


# -- search helpers (pure) ------------------------------------------------------------


def rrf_fuse(
    dense: list[tuple[int, float]], keyword: list[tuple[int, float]], k0: int = RRF_K
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of two ranked lists of (row, score), best first.

    Each list contributes 1 / (k0 + rank) per row (rank from 1); ties go to the row with
    the better single rank, then the lower row (deterministic).
    """
    fused: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranked in (dense, keyword):
        for rank, (row, _score) in enumerate(ranked, start=1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (k0 + rank)
            best[row] = min(best.get(row, rank), rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


def ranges_to_mask(n: int, ranges: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(n, dtype=np.float32)
    for start, end in ranges:
        mask[start:end] = 1.0
    return mask


def quiet_libraries() -> None:
    """faiss logs its CPU-feature probing at INFO and bm25s sets itself to DEBUG."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    logging.getLogger("bm25s").setLevel(logging.WARNING)


def bm25_tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords=BM25_STOPWORDS, show_progress=False)


# -- writing a version ----------------------------------------------------------------


def build_faiss(vectors: np.ndarray, index_type: str):
    """A FAISS inner-product index over unit vectors (so scores are cosines)."""
    import faiss

    dim = vectors.shape[1] if vectors.ndim == 2 else 384
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = hnsw_ef_search(len(vectors))
    else:
        index = faiss.IndexFlatIP(dim)
    step = 50_000
    for start in range(0, len(vectors), step):
        index.add(np.ascontiguousarray(vectors[start : start + step], dtype=np.float32))
    return index


def hnsw_ef_search(n_chunks: int) -> int:
    """HNSW search breadth for an index of this size (bench/ingest_bench.py ann measures it)."""
    # Search time grows slowly with breadth (0.3 ms at 128, ~1 ms at 512) and is small
    # next to embedding the query (tens of ms), so buy recall generously.
    return 128 if n_chunks <= 200_000 else 512


def choose_index_type(n_chunks: int) -> str:
    """Exact search while it is cheap; a graph index above ~100k chunks."""
    return "flat" if n_chunks <= FLAT_MAX_CHUNKS else "hnsw"


def write_search_indexes(
    vdir: Path, vectors: np.ndarray, embed_texts: list[str], index_type: str
) -> None:
    """faiss.index and bm25/ of a version directory being built."""
    quiet_libraries()
    import bm25s
    import faiss

    faiss.write_index(build_faiss(vectors, index_type), str(vdir / FAISS_FILE))
    retriever = bm25s.BM25()
    # bm25s cannot index an empty corpus; a version always has >= 1 chunk.
    retriever.index(bm25_tokenize(embed_texts), show_progress=False)
    retriever.save(str(vdir / BM25_DIR))


def write_sentence_vectors(vdir: Path, counts: np.ndarray, blocks: Iterable[np.ndarray]) -> int:
    """sentence_rows.npy (offsets from per-row ``counts``) and sentences.npy (``blocks`` in row order)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    out = np.lib.format.open_memmap(
        vdir / SENTENCES, mode="w+", dtype=np.float16, shape=(total, 384)
    )
    at = 0
    for block in blocks:
        out[at : at + len(block)] = block
        at += len(block)
    if at != total:
        raise RuntimeError(f"sentence vectors inconsistent ({at} written, {total} expected)")
    out.flush()
    del out
    np.save(vdir / SENTENCE_ROWS, offsets)
    return total


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
    """A read-only view of one index version: hybrid search, chunk lookup, stats.

    Load once per process and reuse; it holds the FAISS index and the BM25 matrices in
    memory (the chunk store stays on disk). The query embedder is the one passed in, or
    one created on the first search.
    """

    def __init__(self, settings: Settings, vdir: Path, embedder: Embedder | None = None) -> None:
        quiet_libraries()
        import bm25s
        import faiss

        self.settings = settings
        self.path = vdir
        self.manifest = read_manifest(vdir)
        self.version: str = self.manifest["version"]
        self._embedder = embedder
        self.index = faiss.read_index(str(vdir / FAISS_FILE))
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

    # -- embedder
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from ingest.embed import Embedder

            self._embedder = Embedder.from_settings(self.settings)
        return self._embedder

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
    ) -> list[SearchHit]:
        """Hybrid search: dense (cosine) + BM25, fused by reciprocal rank, deduplicated.

        The collection filter restricts both searches before ranking: no chunk of another
        collection can be returned, however large k is. ``dense_score`` is the cosine
        similarity of every returned chunk (keyword-only hits included); ``keyword_score``
        is its BM25 score, or None when the query's words do not occur in it.
        """
        if not query or not query.strip() or k <= 0:
            return []
        ranges = self.allowed_ranges(collections)
        if not ranges:
            return []
        allowed_n = sum(e - s for s, e in ranges)
        # Duplicates are removed after fusion; fetch a margin so k survive.
        pool = min(max(candidates, k) + k, allowed_n)
        qvec = self.query_vector(query)
        dense = self._dense(qvec, ranges, pool, allowed_n)
        kw_scores = self._keyword_scores(query, ranges)
        keyword = _top(kw_scores, pool)
        fused = rrf_fuse(dense, keyword)
        rows = [row for row, _ in fused]
        meta = self._rows(rows)
        dense_by_row = dict(dense)
        missing = [r for r in rows if r not in dense_by_row]
        if missing:
            vecs = np.stack([self.index.reconstruct(int(r)) for r in missing])
            dense_by_row.update(zip(missing, (vecs @ qvec).tolist()))
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for row, score in fused:
            rec = meta[row]
            if rec["norm_hash"] in seen:
                continue
            seen.add(rec["norm_hash"])
            kw = float(kw_scores[row]) if kw_scores is not None and kw_scores[row] > 0 else None
            hits.append(
                SearchHit(
                    chunk=_to_chunk(rec),
                    row=int(row),
                    score=float(score),
                    dense_score=float(dense_by_row[row]),
                    keyword_score=kw,
                )
            )
            if len(hits) == k:
                break
        return hits

    # -- internals
    def _dense(
        self, q: np.ndarray, ranges: list[tuple[int, int]], k: int, allowed_n: int
    ) -> list[tuple[int, float]]:
        import faiss

        x = q.reshape(1, -1).astype(np.float32)
        k = min(k, allowed_n)
        if k <= 0:
            return []
        everything = ranges == [(0, self.n)]
        if self.index_type == "hnsw":
            if not everything and allowed_n <= 200_000:
                # A graph search under a narrow filter can miss: be exact instead.
                return _exact(self.index, x[0], ranges, k)
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(hnsw_ef_search(self.n), 2 * k)
            keep: list[Any] = []
            if not everything:
                params.sel = _selector(ranges, keep)
            dists, ids = self.index.search(x, k, params=params)
        elif everything:
            dists, ids = self.index.search(x, k)
        else:
            keep = []
            params = faiss.SearchParameters(sel=_selector(ranges, keep))
            dists, ids = self.index.search(x, k, params=params)
        return [(int(i), float(d)) for i, d in zip(ids[0], dists[0]) if i >= 0]

    def _keyword_scores(self, query: str, ranges: list[tuple[int, int]]) -> np.ndarray | None:
        import bm25s

        tokens = bm25s.tokenize(
            [query], stopwords=BM25_STOPWORDS, return_ids=False, show_progress=False
        )[0]
        if not tokens:
            return None
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)
        if ranges != [(0, self.n)]:
            scores = scores * ranges_to_mask(len(scores), ranges)
        return scores

    def _rows(self, rows: list[int]) -> dict[int, sqlite3.Row]:
        if not rows:
            return {}
        out: dict[int, sqlite3.Row] = {}
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            marks = ",".join("?" * len(part))
            with self._db_lock:
                recs = self.db.execute(
                    f"SELECT * FROM chunks WHERE row IN ({marks})", part
                ).fetchall()
            for rec in recs:
                out[rec["row"]] = rec
        return out


def _top(scores: np.ndarray | None, k: int) -> list[tuple[int, float]]:
    if scores is None or k <= 0:
        return []
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0:
        return []
    if positive.size > k:
        part = np.argpartition(-scores[positive], k - 1)[:k]
        positive = positive[part]
    order = sorted(positive.tolist(), key=lambda r: (-float(scores[r]), r))
    return [(int(r), float(scores[r])) for r in order]


def _selector(ranges: list[tuple[int, int]], keep: list[Any]):
    """A FAISS selector for row ranges; `keep` holds the parts alive (SWIG does not)."""
    import faiss

    sels = [faiss.IDSelectorRange(s, e) for s, e in ranges]
    keep.extend(sels)
    sel = sels[0]
    for other in sels[1:]:
        sel = faiss.IDSelectorOr(sel, other)
        keep.append(sel)
    return sel


def _exact(
    index: Any, q: np.ndarray, ranges: list[tuple[int, int]], k: int
) -> list[tuple[int, float]]:
    rows: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for start, end in ranges:
        for s in range(start, end, 50_000):
            e = min(end, s + 50_000)
            vecs = index.reconstruct_n(s, e - s)
            scores.append(vecs @ q)
            rows.append(np.arange(s, e))
    all_scores = np.concatenate(scores)
    all_rows = np.concatenate(rows)
    top = np.argsort(-all_scores, kind="stable")[:k]
    return [(int(all_rows[i]), float(all_scores[i])) for i in top]


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
            log.info("index reloaded: %s -> %s", old.version, fresh.version)
            old.close()
        return fresh

    def _shared_embedder(self) -> Embedder | None:
        if self.embedder is None and self._reader is not None:
            self.embedder = self._reader.embedder
        return self.embedder

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

"""Hybrid retrieval over one loaded index version: dense (cosine) + BM25, fused by rank.

Pure scoring and merging: the FAISS index and the BM25 matrices come from the version
reader (ingest.store), which also turns rows into chunks. A search is restricted to row
ranges (a collection is a contiguous range) inside both searches, before anything is
ranked, so no chunk outside the ranges can be returned however many are asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lorebot.types import Chunk, SearchHit

RRF_K = 60
#: Stop words of the keyword index; the same for the stored corpus and every query.
BM25_STOPWORDS = "en"

#: rows → {row: (chunk, normalised-text hash)}, the reader's lookup of search results.
FetchRows = Callable[[list[int]], dict[int, tuple[Chunk, str]]]


def hnsw_ef_search(n_chunks: int) -> int:
    """HNSW search breadth for an index of this size (bench/ingest_bench.py ann measures it)."""
    # Search time grows slowly with breadth and is small next to embedding the query (tens
    # of ms) and reading (hundreds), so buy recall generously: on the 200k-chunk corpus of
    # bench/build_memory.py, XQuAD-en's gold passage among near-duplicate padding was found
    # first by the graph for 0.58 of questions at 128, 0.78 at 512 and 0.84 at 2048 (exact
    # search 0.85), 2048 costing about 3 ms a query (README "Retrieval with the float16 graph").
    del n_chunks  # one breadth for every size the graph serves (above 100k chunks)
    return 2048


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


def top_scores(scores: np.ndarray | None, k: int) -> list[tuple[int, float]]:
    """The k best rows with a positive score, best first (ties: lower row first)."""
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


class HybridSearch:
    """Dense and keyword search over rows 0..n of one version, and their fusion."""

    def __init__(
        self, dense_index: Any, bm25: Any, n: int, index_type: str, ranker: Any = None
    ) -> None:
        self.index = dense_index
        self.bm25 = bm25
        self.n = n
        self.index_type = index_type
        # Orders the candidates (ingest.rank.Ranker); None = reciprocal-rank fusion.
        self.ranker = ranker

    def search(
        self,
        query: str,
        qvec: np.ndarray,
        ranges: list[tuple[int, int]],
        k: int,
        candidates: int,
        fetch: FetchRows,
        allowed: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """The k best distinct chunks within ``ranges`` (non-empty), fused by reciprocal rank.

        ``allowed`` (a bool per row: the asker's permission mask, ingest.permissions)
        narrows the ranges further, inside both searches. ``dense_score`` is the cosine
        similarity of every returned chunk (keyword-only hits included); ``keyword_score``
        is its BM25 score, or None when the query's words do not occur in it. Chunks whose
        normalised text repeats one already returned are skipped.
        """
        if allowed is not None:
            allowed = allowed & ranges_to_mask(self.n, ranges).astype(bool)
            allowed_n = int(np.count_nonzero(allowed))
            if allowed_n == 0:
                return []
        else:
            allowed_n = sum(e - s for s, e in ranges)
        # Duplicates are removed after fusion; fetch a margin so k survive.
        pool = min(max(candidates, k) + k, allowed_n)
        dense = self.dense(qvec, ranges, pool, allowed_n, allowed)
        kw_scores = self.keyword_scores(query, ranges, allowed)
        keyword = top_scores(kw_scores, pool)
        dense_by_row = dict(dense)
        missing = [r for r, _ in keyword if r not in dense_by_row]
        if missing:
            vecs = np.stack([self.index.reconstruct(int(r)) for r in missing])
            dense_by_row.update(zip(missing, (vecs @ qvec).tolist()))
        if self.ranker is None:
            fused = rrf_fuse(dense, keyword)
        else:
            fused = self.ranker.order(dense, keyword, dense_by_row, kw_scores, qvec)
        rows = [row for row, _ in fused]
        meta = fetch(rows) if rows else {}
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for row, score in fused:
            chunk, norm_hash = meta[row]
            if norm_hash in seen:
                continue
            seen.add(norm_hash)
            kw = float(kw_scores[row]) if kw_scores is not None and kw_scores[row] > 0 else None
            hits.append(
                SearchHit(
                    chunk=chunk,
                    row=int(row),
                    score=float(score),
                    dense_score=float(dense_by_row[row]),
                    keyword_score=kw,
                )
            )
            if len(hits) == k:
                break
        return hits

    def dense(
        self,
        q: np.ndarray,
        ranges: list[tuple[int, int]],
        k: int,
        allowed_n: int,
        allowed: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The k nearest rows to the unit vector ``q`` within ``ranges`` (and ``allowed``,
        a bool per row, when given), as (row, cosine)."""
        import faiss

        x = q.reshape(1, -1).astype(np.float32)
        k = min(k, allowed_n)
        if k <= 0:
            return []
        if allowed is not None:
            if self.index_type == "hnsw" and allowed_n <= 200_000:
                return _exact(self.index, x[0], ranges, k, allowed)
            keep: list = []
            sel = _bitmap(allowed, keep)
            if self.index_type == "hnsw":
                params = faiss.SearchParametersHNSW()
                params.efSearch = max(hnsw_ef_search(self.n), 2 * k)
                params.sel = sel
            else:
                params = faiss.SearchParameters(sel=sel)
            dists, ids = self.index.search(x, k, params=params)
            return [(int(i), float(d)) for i, d in zip(ids[0], dists[0]) if i >= 0]
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

    def keyword_scores(
        self, query: str, ranges: list[tuple[int, int]], allowed: np.ndarray | None = None
    ) -> np.ndarray | None:
        """BM25 score of every row (zero outside ``ranges`` and ``allowed``); None when the
        query has no terms."""
        import bm25s

        tokens = bm25s.tokenize(
            [query], stopwords=BM25_STOPWORDS, return_ids=False, show_progress=False
        )[0]
        if not tokens:
            return None
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float32)
        if allowed is not None:
            scores = np.where(allowed[: len(scores)], scores, np.float32(0.0))
        elif ranges != [(0, self.n)]:
            scores = scores * ranges_to_mask(len(scores), ranges)
        return scores


def _bitmap(allowed: np.ndarray, keep: list[Any]):
    """A FAISS selector of the rows set in ``allowed``; `keep` holds its bits alive."""
    import faiss

    bits = np.packbits(allowed, bitorder="little")
    keep.append(bits)
    sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    keep.append(sel)
    return sel


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
    index: Any,
    q: np.ndarray,
    ranges: list[tuple[int, int]],
    k: int,
    allowed: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    rows: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for start, end in ranges:
        for s in range(start, end, 50_000):
            e = min(end, s + 50_000)
            vecs = index.reconstruct_n(s, e - s)
            part = np.arange(s, e)
            if allowed is not None:
                keep = allowed[s:e]
                vecs, part = vecs[keep], part[keep]
            scores.append(vecs @ q)
            rows.append(part)
    all_scores = np.concatenate(scores)
    all_rows = np.concatenate(rows)
    top = np.argsort(-all_scores, kind="stable")[:k]
    return [(int(all_rows[i]), float(all_scores[i])) for i in top]

"""Query-time ranking: how a search's dense and keyword candidates become one order.

The searches themselves (ingest.search) find the candidates: the nearest chunks by
cosine and the best chunks by BM25, each restricted to what the asker may read. This
module only orders the union of the two lists, so it can never widen what a search
returns.

Two orders are offered (``retrieval.fusion``):

``rrf`` (the default)
    Reciprocal-rank fusion (ingest.search.rrf_fuse): each list adds 1 / (60 + rank).
    It ignores how far apart the scores are, so a chunk in the middle of both lists beats
    one that is first by a wide margin in one list only. Staff questions share few words
    with the page that answers them ("wifi isn't working while i'm travelling..." against
    a "Network troubleshooting" section), and there it loses the right page: measured by
    bench/retrieval_staff.py (README, "Answers").

``score``
    A weighted sum of the two scores, each scaled to 0..1 over the candidates: the dense
    side is min-max scaled (cosines of unrelated text are far from 0), the BM25 side is
    divided by its best score (0 stays "no shared word"). The dense side is a blend of
    the chunk's cosine and the cosine of its best sentence, from the sentence vectors
    the index stores (ingest.store): a chunk of a long page about many things matches a
    question with one of its sentences, and the chunk-level vector dilutes that. Better
    on the staff questions and XQuAD-en, worse on the sample handbook: measured, not yet
    the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FUSIONS = ("score", "rrf")

#: A version's stored sentence vectors: (offsets, vectors), as ingest.store loads them.
SentenceVectors = tuple[np.ndarray, Any]


@dataclass(frozen=True)
class Ranker:
    """How one index reader orders its candidates (from ``retrieval`` settings).

    ``dense_weight`` is the dense side's share of the fused score (the keyword side has
    the rest); ``sentence_weight`` the best sentence's share of the dense side. Without
    stored sentence vectors (an index of an older format) the chunk cosine stands alone.
    """

    fusion: str = "rrf"
    dense_weight: float = 0.75
    sentence_weight: float = 0.8
    sentences: SentenceVectors | None = None

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r} (one of {', '.join(FUSIONS)})")
        for name in ("dense_weight", "sentence_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")

    @classmethod
    def from_settings(cls, retrieval: Any, sentences: SentenceVectors | None = None) -> Ranker:
        """The ranker of ``retrieval`` (lorebot.settings.RetrievalSettings)."""
        return cls(
            fusion=retrieval.fusion,
            dense_weight=retrieval.dense_weight,
            sentence_weight=retrieval.sentence_weight,
            sentences=sentences,
        )

    def order(
        self,
        dense: Sequence[tuple[int, float]],
        keyword: Sequence[tuple[int, float]],
        cosine: dict[int, float],
        keyword_scores: np.ndarray | None,
        qvec: np.ndarray,
    ) -> list[tuple[int, float]]:
        """The union of ``dense`` and ``keyword`` (ranked (row, score) lists), best first.

        ``cosine`` holds the chunk cosine of every row of the union, ``keyword_scores``
        the BM25 score of every row of the index (None when the query has no terms).
        """
        if self.fusion == "rrf":
            from ingest.search import rrf_fuse

            return rrf_fuse(list(dense), list(keyword))
        rows = list(dict.fromkeys([r for r, _ in dense] + [r for r, _ in keyword]))
        if not rows:
            return []
        chunk = np.array([cosine[r] for r in rows], dtype=np.float64)
        best = best_sentence_cosines(rows, qvec, self.sentences)
        if best is not None:
            best = np.where(np.isnan(best), chunk, best)
            chunk = (1.0 - self.sentence_weight) * chunk + self.sentence_weight * best
        if keyword_scores is None:
            kw = np.zeros(len(rows))
        else:
            kw = np.asarray(keyword_scores, dtype=np.float64)[rows]
        return score_fuse(rows, chunk, kw, self.dense_weight)


def score_fuse(
    rows: Sequence[int], dense: np.ndarray, keyword: np.ndarray, dense_weight: float
) -> list[tuple[int, float]]:
    """``rows`` by ``dense_weight`` × scaled dense + the rest × scaled keyword, best first.

    Dense scores are min-max scaled over ``rows`` (all equal: all 1); keyword scores are
    divided by the best (none positive: all 0). Ties go to the lower row.
    """
    dense = np.asarray(dense, dtype=np.float64)
    keyword = np.clip(np.asarray(keyword, dtype=np.float64), 0.0, None)
    span = float(dense.max() - dense.min()) if len(dense) else 0.0
    d = (dense - dense.min()) / span if span > 0 else np.ones(len(dense))
    top = float(keyword.max()) if len(keyword) else 0.0
    k = keyword / top if top > 0 else np.zeros(len(keyword))
    fused = dense_weight * d + (1.0 - dense_weight) * k
    order = sorted(range(len(rows)), key=lambda i: (-fused[i], rows[i]))
    return [(int(rows[i]), float(fused[i])) for i in order]


def best_sentence_cosines(
    rows: Sequence[int], qvec: np.ndarray, sentences: SentenceVectors | None
) -> np.ndarray | None:
    """The cosine of each row's best-matching stored sentence with ``qvec`` (NaN for a row
    without sentence units), or None without sentence vectors."""
    if sentences is None:
        return None
    offsets, vectors = sentences
    out = np.full(len(rows), np.nan)
    q = np.asarray(qvec, dtype=np.float32)
    for i, row in enumerate(rows):
        if not 0 <= row < len(offsets) - 1:
            continue
        start, end = int(offsets[row]), int(offsets[row + 1])
        if end > start:
            out[i] = float(np.max(np.asarray(vectors[start:end], dtype=np.float32) @ q))
    return out

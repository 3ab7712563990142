"""Query-time ranking (ingest.rank): score fusion and the best-sentence cross-check."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from ingest.rank import Ranker, best_sentence_cosines, score_fuse
from ingest.search import HybridSearch, rrf_fuse
from lorebot.settings import RetrievalSettings
from lorebot.types import Chunk


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_a_wide_dense_lead_survives_score_fusion_but_not_rrf():
    """Row 1 is far ahead by cosine and shares no word; rows 2 and 3 are mediocre in both.
    Reciprocal-rank fusion ignores the margin; score fusion keeps the lead."""
    dense = [(1, 0.80), (2, 0.46), (3, 0.45), (4, 0.30)]
    keyword = [(3, 9.0), (2, 8.5)]
    kw = np.zeros(10)
    kw[3], kw[2] = 9.0, 8.5
    cosine = dict(dense)
    assert rrf_fuse(dense, keyword)[0][0] != 1
    ranked = Ranker(fusion="score", dense_weight=0.75, sentence_weight=0.0).order(
        dense, keyword, cosine, kw, np.zeros(4, np.float32)
    )
    assert [r for r, _ in ranked][:3] == [1, 2, 3]
    # The keyword side still decides between near-equal cosines...
    assert ranked[1][1] > ranked[2][1] - 1e-9
    # ...and with all weight on it, the dense leader drops to last.
    kw_only = Ranker(fusion="score", dense_weight=0.0, sentence_weight=0.0).order(
        dense, keyword, cosine, kw, np.zeros(4, np.float32)
    )
    assert [r for r, _ in kw_only][:2] == [3, 2]


def test_score_fuse_scales_and_breaks_ties():
    fused = score_fuse([5, 2, 9], np.array([0.4, 0.4, 0.4]), np.zeros(3), 0.75)
    assert [r for r, _ in fused] == [2, 5, 9]  # all equal: lower row first
    assert all(s == pytest.approx(0.75) for _, s in fused)
    fused = score_fuse([1, 2], np.array([0.9, 0.1]), np.array([0.0, 4.0]), 0.5)
    assert dict(fused) == {1: pytest.approx(0.5), 2: pytest.approx(0.5)}


def test_the_best_sentence_lifts_a_chunk_whose_one_sentence_answers():
    """Chunk A is closer as a whole; one sentence of chunk B is the question's match."""
    rng = np.random.default_rng(0)
    q = _unit(rng.standard_normal(384))
    noise = _unit(rng.standard_normal((5, 384)))
    # Row 0 (A): three sentences, none close. Row 1 (B): one of its two is q itself.
    vectors = np.vstack([noise[:3], noise[3:4], q[None, :]]).astype(np.float16)
    offsets = np.array([0, 3, 5, 5])  # row 2 has no sentence units
    best = best_sentence_cosines([0, 1, 2], q, (offsets, vectors))
    assert best[1] == pytest.approx(1.0, abs=1e-3) and best[0] < 0.3 and np.isnan(best[2])
    dense = [(0, 0.60), (1, 0.55), (2, 0.20)]
    args = (dense, [], dict(dense), None, q)
    blended = Ranker("score", sentence_weight=0.8, sentences=(offsets, vectors)).order(*args)
    assert blended[0][0] == 1
    chunk_only = Ranker("score", sentence_weight=0.0, sentences=(offsets, vectors)).order(*args)
    assert chunk_only[0][0] == 0
    # Without stored sentence vectors the chunk cosine stands alone.
    assert Ranker("score", sentence_weight=0.8).order(*args)[0][0] == 0


def test_bad_ranking_settings_are_refused():
    with pytest.raises(ValueError, match="unknown fusion"):
        Ranker(fusion="max")
    with pytest.raises(ValueError, match="between 0 and 1"):
        Ranker(dense_weight=1.5)
    with pytest.raises(ValidationError):
        RetrievalSettings(sentence_weight=-0.1)
    with pytest.raises(ValidationError):
        RetrievalSettings(fusion="sum")
    assert Ranker.from_settings(RetrievalSettings()).fusion == "rrf"  # the default
    assert Ranker.from_settings(RetrievalSettings(fusion="score")).fusion == "score"


def test_hybrid_search_returns_the_dense_leader_first_with_the_ranker():
    """End to end through the real FAISS and BM25 searches: five chunks share the query's
    words and sit near it; one chunk is the query's meaning in other words."""
    import bm25s

    from ingest.store import build_faiss

    rng = np.random.default_rng(7)
    n = 60
    q = _unit(rng.standard_normal(384))
    vecs = _unit(rng.standard_normal((n, 384)))
    vecs[7] = _unit(q + 0.3 * _unit(rng.standard_normal(384)))  # the answer, no shared word
    for r in range(10, 15):  # the word matches, half-way there by meaning
        vecs[r] = _unit(0.5 * q + 0.87 * _unit(rng.standard_normal(384)))
    texts = [f"filler text number{r}" for r in range(n)]
    for r in range(10, 15):
        texts[r] = f"team offsite budget per person note{r}"
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def fetch(rows):
        return {r: (Chunk(chunk_id=str(r), text=texts[r], title="t", source=f"d{r}.md",
                          collection="c"), str(r)) for r in rows}  # fmt: skip

    cos = vecs @ q
    assert cos[7] > 0.9 and 0.3 < cos[10:15].min() and cos[10:15].max() < 0.7
    query = "offsite budget per person"
    plain = HybridSearch(build_faiss(vecs, "flat"), bm25, n, "flat")
    assert plain.search(query, q, [(0, n)], 4, 20, fetch)[0].row != 7
    ranked = HybridSearch(build_faiss(vecs, "flat"), bm25, n, "flat", ranker=Ranker(fusion="score"))
    hits = ranked.search(query, q, [(0, n)], 4, 20, fetch)
    assert hits[0].row == 7
    assert {h.row for h in hits[1:]} <= set(range(10, 15))  # the word matches follow
    assert hits[0].dense_score == pytest.approx(float(cos[7]), abs=1e-5)
    assert hits[1].keyword_score is not None and hits[0].keyword_score is None
    # The range filter still holds: nothing outside rows 0..9 whatever the ranking.
    assert all(h.row < 10 for h in ranked.search(query, q, [(0, 10)], 4, 20, fetch))

"""The dense index on disk and as a reader loads it: above the flat limit an HNSW graph over
float16 codes whose hits are re-scored with the float32 vectors, the index file mapped
rather than read, and versions written before either change still opening as they were.

The embedder is a deterministic stand-in (a unit vector from a hash of each text), so the
exact cosines are known; the parse workers are real. bench/build_memory.py measures the
memory and bench/ingest_bench.py ann the recall.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ingest_fixtures import settings_for

from ingest import Source, build_index, open_index, spool, store
from ingest.search import hnsw_ef_search
from tests.ingest.test_build_memory import DIM, hashed, sample_docs


class StandIn:
    """Chunk and query vectors from a hash of the text (and one per sentence span)."""

    variant = "hash"

    def for_variant(self, variant: str, *, onnx_dir: Path | None = None) -> StandIn:
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([hashed(t) for t in texts])

    def encode_with_spans(self, texts, spans):
        sentences = [
            np.stack([hashed(t[a:b]) for a, b in sp]) if sp else np.zeros((0, DIM), np.float32)
            for t, sp in zip(texts, spans, strict=True)
        ]
        return self.encode(texts), sentences


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_embeddings(vdir: Path, vectors: np.ndarray) -> None:
    writer = spool.NpyWriter(vdir / store.EMBEDDINGS, vectors.shape, np.float32)
    writer.append(vectors)
    writer.close()


@pytest.fixture
def one_thread():
    """faiss builds a graph deterministically only on one thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def old_hnsw(vectors: np.ndarray):
    """The graph index lorebot wrote before float16 codes: float32 vectors inside it."""
    import faiss

    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = hnsw_ef_search(len(vectors))
    for start in range(0, len(vectors), 50_000):
        index.add(vectors[start : start + 50_000])
    return index


def test_the_graph_keeps_float16_codes_and_the_reader_scores_with_float32(tmp_path, one_thread):
    import faiss

    vectors = unit_vectors(600)
    write_embeddings(tmp_path, vectors)
    store.write_faiss(tmp_path, "hnsw")
    raw = faiss.read_index(str(tmp_path / store.FAISS_FILE))
    codes = faiss.downcast_index(faiss.downcast_index(raw).storage)
    assert isinstance(codes, faiss.IndexScalarQuantizer) and codes.code_size == 2 * DIM
    # float16 codes: close to the vectors, not equal to them, and half their bytes.
    approx = raw.reconstruct_n(0, 600)
    assert not np.array_equal(approx, vectors) and np.abs(approx - vectors).max() < 1e-3
    old_bytes = faiss.serialize_index(old_hnsw(vectors)).nbytes
    assert (tmp_path / store.FAISS_FILE).stat().st_size < 0.7 * old_bytes

    index = store.load_dense(tmp_path)
    assert isinstance(index, store.RescoredIndex)
    assert np.array_equal(index.reconstruct_n(0, 600), vectors)
    assert np.array_equal(index.reconstruct(123), vectors[123])
    queries = unit_vectors(5, seed=1)
    scores, ids = index.search(queries, 10)
    for q, row_ids, row_scores in zip(queries, ids, scores, strict=True):
        assert np.allclose(row_scores, vectors[row_ids] @ q, atol=1e-6)
        assert list(row_scores) == sorted(row_scores, reverse=True)
    # The graph's own answer, in float32, for a vector of the index: itself, cosine 1.
    scores, ids = index.search(vectors[42:43], 1)
    assert ids[0][0] == 42 and scores[0][0] == pytest.approx(1.0, abs=1e-6)
    # A selector still reaches the graph: nothing outside the allowed rows comes back.
    params = faiss.SearchParametersHNSW()
    params.efSearch = 64
    sel = faiss.IDSelectorRange(100, 200)
    params.sel = sel
    _s, ids = index.search(vectors[150:151], 5, params=params)
    assert ids[0][0] == 150 and all(100 <= i < 200 for i in ids[0])


def test_the_reserved_graph_is_the_one_faiss_builds_and_is_never_reallocated(one_thread):
    import faiss

    vectors = unit_vectors(1500, seed=2)
    reserved = store._empty_faiss(DIM, "hnsw", len(vectors))
    codes = faiss.downcast_index(reserved.storage).codes
    where = (int(codes.data()), int(reserved.hnsw.neighbors.data()))
    plain = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_fp16, 32, faiss.METRIC_INNER_PRODUCT)
    plain.hnsw.efConstruction = store.HNSW_EF_CONSTRUCTION
    plain.hnsw.efSearch = reserved.hnsw.efSearch
    for start in range(0, len(vectors), 400):
        reserved.add(vectors[start : start + 400])
        plain.add(vectors[start : start + 400])
    # Filled in place: the arrays the reservation made are the ones holding the index.
    assert (int(codes.data()), int(reserved.hnsw.neighbors.data())) == where
    assert faiss.serialize_index(reserved).tobytes() == faiss.serialize_index(plain).tobytes()


def test_a_mapped_flat_index_searches_as_one_read_whole(tmp_path):
    import faiss

    vectors = unit_vectors(400, seed=3)
    write_embeddings(tmp_path, vectors)
    store.write_faiss(tmp_path, "flat")
    mapped = store.load_dense(tmp_path)
    whole = faiss.read_index(str(tmp_path / store.FAISS_FILE))
    assert isinstance(mapped, faiss.IndexFlatIP) and not mapped.codes.is_owned
    queries = unit_vectors(6, seed=4)
    for got, want in zip(mapped.search(queries, 8), whole.search(queries, 8), strict=True):
        assert np.array_equal(got, want)
    sel = faiss.IDSelectorRange(50, 90)
    for got, want in zip(
        mapped.search(queries, 8, params=faiss.SearchParameters(sel=sel)),
        whole.search(queries, 8, params=faiss.SearchParameters(sel=sel)),
        strict=True,
    ):
        assert np.array_equal(got, want)


def test_a_graph_without_matching_vectors_is_searched_as_it_is(tmp_path, one_thread, caplog):
    vectors = unit_vectors(300, seed=5)
    write_embeddings(tmp_path, vectors)
    store.write_faiss(tmp_path, "hnsw")
    write_embeddings(tmp_path, vectors[:200])  # another version's vectors, say
    index = store.load_dense(tmp_path)
    assert not isinstance(index, store.RescoredIndex)
    assert "does not match" in caplog.text
    _s, ids = index.search(vectors[7:8], 1)
    assert ids[0][0] == 7


def test_a_version_written_with_a_float32_graph_still_opens_and_answers_the_same(
    tmp_path, parse_pool, one_thread
):
    import faiss

    settings = settings_for(tmp_path)
    emb = StandIn()
    report = build_index(
        settings,
        [Source(sample_docs(tmp_path), "hr")],
        progress=False,
        embedder=emb,
        pool=parse_pool,
        index_type="hnsw",
    )
    vdir = store.version_path(settings, report.version)
    with open_index(settings, embedder=emb) as reader:
        assert isinstance(reader.index, store.RescoredIndex)
        texts = [c.text for c in reader.iter_chunks()][:12]
        queries = [t.split(".")[0] for t in texts]
        new_hits = [reader.search(q, k=3) for q in queries]
        new_dense = [
            reader.searcher.dense(hashed(q), [(0, reader.n)], 5, reader.n) for q in queries
        ]
    assert report.chunks_total > 12

    # The faiss.index a build before float16 graphs wrote for the same vectors.
    old = old_hnsw(np.load(vdir / store.EMBEDDINGS))
    (vdir / store.FAISS_FILE).unlink()  # replaced, never rewritten under a mapping
    faiss.write_index(old, str(vdir / store.FAISS_FILE))
    with open_index(settings, embedder=emb) as reader:
        assert isinstance(reader.index, faiss.IndexHNSWFlat)
        assert reader.stats()["chunks"] == report.chunks_total
        for q, hits, dense in zip(queries, new_hits, new_dense, strict=True):
            again = reader.search(q, k=3)
            assert [h.row for h in again] == [h.row for h in hits]
            assert [h.dense_score for h in again] == pytest.approx(
                [h.dense_score for h in hits], abs=1e-5
            )
            old_dense = reader.searcher.dense(hashed(q), [(0, reader.n)], 5, reader.n)
            assert [r for r, _ in old_dense] == [r for r, _ in dense]

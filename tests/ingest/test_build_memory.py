"""A build streams: its vectors reach disk group by group, and what it writes that way is
the index an all-in-memory build would have written (same rows, vectors, FAISS and BM25).

The embedder here is a deterministic stand-in (vectors from a hash of each text), so the
expected arrays can be computed independently in memory; the parse workers are real.
bench/build_memory.py measures the memory itself.
"""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest
from ingest_fixtures import settings_for

import ingest.build as build
from ingest import Source, build_index, keyword, spool, store

DIM = 384


def hashed(text: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(text.encode("utf-8"))).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


class HashEmbedder:
    """Unit vectors seeded by each text (and by each span's text); records every call."""

    variant = "hash"

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.calls: list[tuple[int, int]] = []  # (texts, vectors already on disk)

    def encode_with_spans(self, texts, spans):
        on_disk = self.spool_dir / spool.SPOOL_VECTORS
        self.calls.append((len(texts), on_disk.stat().st_size if on_disk.exists() else 0))
        vectors = np.stack([hashed(t) for t in texts])
        sentences = [
            np.stack([hashed(t[a:b]) for a, b in sp]) if sp else np.zeros((0, DIM), np.float32)
            for t, sp in zip(texts, spans, strict=True)
        ]
        return vectors, sentences


def sample_docs(tmp_path: Path) -> Path:
    from lorebot import assets

    folder = tmp_path / "docs"
    folder.mkdir()
    for f in assets.sample_docs_dir().iterdir():
        if f.suffix in (".md", ".txt"):
            shutil.copy(f, folder / f.name)
    return folder


def check_version(vdir: Path) -> list[str]:
    """Every part of a written version equals what memory would make of its rows; the ids."""
    import bm25s
    import faiss

    db = sqlite3.connect(vdir / store.CHUNKS_DB)
    rows = db.execute("SELECT row, chunk_id, text, embed_text FROM chunks ORDER BY row").fetchall()
    db.close()
    assert [r[0] for r in rows] == list(range(len(rows)))
    vectors = np.stack([hashed(r[3]) for r in rows])
    assert np.array_equal(np.load(vdir / store.EMBEDDINGS), vectors)
    # The flat index streamed from disk is byte for byte faiss's own.
    want = faiss.serialize_index(store.build_faiss(vectors, "flat")).tobytes()
    assert (vdir / store.FAISS_FILE).read_bytes() == want
    # Sentence vectors: one per unit of each chunk, in row order.
    blocks, counts = [], []
    for _row, _id, text, embed_text in rows:
        spans = build.unit_spans(text, embed_text)
        blocks += [hashed(embed_text[a:b]) for a, b in spans]
        counts.append(len(spans))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    assert np.array_equal(np.load(vdir / store.SENTENCE_ROWS), offsets)
    assert np.array_equal(np.load(vdir / store.SENTENCES), np.stack(blocks).astype(np.float16))
    # BM25: the arrays bm25s builds from all texts at once.
    ref = bm25s.BM25()
    ref.index(store.bm25_tokenize([r[3] for r in rows]), show_progress=False)
    got = bm25s.BM25.load(str(vdir / store.BM25_DIR), show_progress=False)
    assert got.vocab_dict == ref.vocab_dict
    for part in ("data", "indices", "indptr"):
        assert np.array_equal(got.scores[part], ref.scores[part]), part
    return [r[1] for r in rows]


def test_a_build_spools_per_group_and_writes_the_in_memory_index(tmp_path, parse_pool, monkeypatch):
    # Small groups and slices, so that even the sample handbook takes several of each.
    monkeypatch.setattr(build, "EMBED_GROUP", 8)
    monkeypatch.setattr(spool, "SLICE_ROWS", 5)
    monkeypatch.setattr(keyword, "SCATTER_PAIRS", 64)
    monkeypatch.setattr(keyword, "READ_PAIRS", 50)
    monkeypatch.setattr(keyword, "TEXT_BATCH", 7)
    docs = sample_docs(tmp_path)
    settings = settings_for(tmp_path)
    emb = HashEmbedder(store.tmp_dir(settings) / "spool")
    r1 = build_index(settings, [Source(docs, "hr")], progress=False, embedder=emb, pool=parse_pool)
    assert r1.chunks_total > 3 * 8
    # No group is larger than EMBED_GROUP, and each starts with every earlier group's
    # vectors already written to the spool file: none is kept for later.
    assert all(n <= 8 for n, _ in emb.calls)
    done = np.cumsum([0] + [n for n, _ in emb.calls])[:-1]
    assert [on_disk for _, on_disk in emb.calls] == [int(d) * DIM * 4 for d in done]
    assert sum(n for n, _ in emb.calls) == r1.chunks_new == r1.chunks_total
    v1 = store.version_path(settings, r1.version)
    ids1 = check_version(v1)
    assert not list(store.tmp_dir(settings).iterdir())  # spool and build dir gone

    # One file changed: only its chunks are embedded; the others' rows are carried.
    changed = sorted(docs.glob("*.md"))[0]
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nA new closing paragraph.\n")
    emb.calls.clear()
    r2 = build_index(settings, [Source(docs, "hr")], progress=False, embedder=emb, pool=parse_pool)
    assert r2.new_version and 0 < r2.chunks_new < r2.chunks_total
    assert sum(n for n, _ in emb.calls) == r2.chunks_new
    ids2 = check_version(store.version_path(settings, r2.version))
    assert len(set(ids1) & set(ids2)) >= r1.chunks_total - r2.chunks_new
    # Nothing changed: nothing is parsed, embedded or written.
    emb.calls.clear()
    r3 = build_index(settings, [Source(docs, "hr")], progress=False, embedder=emb, pool=parse_pool)
    assert not r3.new_version and not emb.calls and r3.version == r2.version


def test_the_keyword_index_equals_bm25s_own(tmp_path, monkeypatch):
    import bm25s

    # Tiny passes, so that the scatter runs over several term ranges and reads.
    monkeypatch.setattr(keyword, "SCATTER_PAIRS", 11)
    monkeypatch.setattr(keyword, "READ_PAIRS", 13)
    monkeypatch.setattr(keyword, "TEXT_BATCH", 5)
    texts = [
        "Annual leave: 27 days a year, and leave carries over.",
        "the of and",  # only stop words: a document with no terms
        "VPN gateway on port 51820; the VPN client is WireGuard.",
        "Crèche places — the café opens at 07:45.",
    ] * 9
    assert keyword.write_bm25(tmp_path / "kw", iter(texts), tmp_path / "pairs") == len(texts)
    assert not (tmp_path / "pairs").exists()
    ref = bm25s.BM25()
    ref.index(store.bm25_tokenize(texts), show_progress=False)
    got = bm25s.BM25.load(str(tmp_path / "kw"), show_progress=False)
    assert got.vocab_dict == ref.vocab_dict
    for part in ("data", "indices", "indptr"):
        assert np.array_equal(got.scores[part], ref.scores[part]), part
    for query in (["leave"], ["vpn", "port"], ["café"]):
        assert np.array_equal(got.get_scores(query), ref.get_scores(query))


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_faiss_is_built_from_the_vectors_on_disk(tmp_path, index_type, monkeypatch):
    monkeypatch.setattr(spool, "SLICE_ROWS", 7)
    vectors = np.stack([hashed(str(i)) for i in range(40)])
    writer = spool.NpyWriter(tmp_path / store.EMBEDDINGS, (40, DIM), np.float32)
    for start in range(0, 40, 9):
        writer.append(vectors[start : start + 9])
    writer.close()
    store.write_faiss(tmp_path, index_type)
    import faiss

    index = faiss.read_index(str(tmp_path / store.FAISS_FILE))
    assert index.ntotal == 40
    # A graph keeps float16 codes; the reader's index gives the float32 vectors back.
    exact = index if index_type == "flat" else store.load_dense(tmp_path)
    assert np.allclose(index.reconstruct_n(0, 40), vectors, atol=1e-3)
    assert np.array_equal(exact.reconstruct_n(0, 40), vectors)
    if index_type == "flat":
        want = faiss.serialize_index(store.build_faiss(vectors, "flat")).tobytes()
        assert (tmp_path / store.FAISS_FILE).read_bytes() == want
    _dist, ids = index.search(vectors[17:18], 1)
    assert ids[0][0] == 17


def test_an_npy_written_in_slices_reads_back_and_a_short_one_is_refused(tmp_path):
    data = np.arange(30, dtype=np.float16).reshape(10, 3)
    w = spool.NpyWriter(tmp_path / "a.npy", (10, 3), np.float16)
    w.append(data[:4])
    w.append(data[4:])
    w.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), data)
    assert np.array_equal(spool.read_npy_rows(tmp_path / "a.npy", 3, 7), data[3:7])
    short = spool.NpyWriter(tmp_path / "b.npy", (10, 3), np.float16)
    short.append(data[:2])
    with pytest.raises(RuntimeError, match="2 rows written, 10 expected"):
        short.close()
    with pytest.raises(RuntimeError, match="more than 10 rows"):
        spool.NpyWriter(tmp_path / "c.npy", (10, 3), np.float16).append(np.zeros((11, 3)))

"""Sentence vectors: written with every version, carried by incremental builds, read per hit."""

from __future__ import annotations

import numpy as np
from ingest_fixtures import settings_for

from ingest import Source, build_index, open_index, store
from lorebot.text import units
from slm.serving.evidence import RERANK, select_evidence


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_every_chunk_has_one_unit_length_vector_per_sentence_unit(built, embedder):
    settings, _ = built
    with open_index(settings, embedder=embedder) as ix:
        assert ix.manifest["counts"]["sentences"] > ix.n
        for hit in ix.search("deploys rollbacks on-call pager laptops", k=8):
            vecs = ix.sentence_vectors(hit)
            assert vecs is not None and vecs.dtype == np.float32
            assert len(vecs) == len(units(hit.chunk.text))
            assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=2e-3)


def test_the_stored_vector_of_the_answering_sentence_is_nearest_the_question(built, embedder):
    settings, _ = built
    with open_index(settings, embedder=embedder) as ix:
        hit = ix.search("When do production deploys happen?", k=1, collections=["eng"])[0]
        q = ix.query_vector("When do production deploys happen?")
        scores = ix.sentence_vectors(hit) @ q
        texts = units(hit.chunk.text)
        assert "Tuesdays" in texts[int(np.argmax(scores))].text
        calls = []
        ev = select_evidence(
            "When do production deploys happen?",
            [hit],
            lambda t: calls.append(t) or embedder.encode(t),
            stored=ix.sentence_vectors,
            query_vector=q,
        )
        assert "Tuesdays" in ev.text
        assert len(calls) == 1 and len(calls[0]) <= RERANK  # only the shortlist is embedded again


def test_incremental_build_carries_unchanged_files_sentence_vectors(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    _write(
        root / "leave.md",
        "# Leave\n\nEmployees get 27 days of annual leave. Unused days expire in March.\n",
    )
    _write(
        root / "vpn.md",
        "# VPN\n\nThe VPN gateway listens on port 51820. Use the WireGuard client.\n",
    )
    settings = settings_for(tmp_path)
    build_index(settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool)
    with open_index(settings, embedder=embedder) as ix:
        hit = ix.search("annual leave days", k=1)[0]
        before = ix.sentence_vectors(hit)
    _write(
        root / "vpn.md", "# VPN\n\nThe VPN gateway moved to port 443. Use the WireGuard client.\n"
    )
    report = build_index(
        settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool
    )
    assert report.unchanged == 1
    with open_index(settings, embedder=embedder) as ix:
        hit = ix.search("annual leave days", k=1)[0]
        assert np.array_equal(ix.sentence_vectors(hit), before)
        vpn = ix.search("VPN port", k=1)[0]
        assert len(ix.sentence_vectors(vpn)) == len(units(vpn.chunk.text))


def test_a_version_without_sentence_vectors_still_serves_and_quotes(tmp_path, embedder, parse_pool):
    root = tmp_path / "docs"
    _write(
        root / "leave.md",
        "# Leave\n\nEmployees get 27 days of annual leave. Unused days expire in March.\n",
    )
    settings = settings_for(tmp_path)
    build_index(settings, [Source(root, "hr")], progress=False, embedder=embedder, pool=parse_pool)
    vdir = store.version_path(settings, store.current_version(settings))
    (vdir / store.SENTENCES).unlink()  # as an index written by an older lorebot
    with open_index(settings, embedder=embedder) as ix:
        hit = ix.search("how many days of annual leave?", k=1)[0]
        assert ix.sentence_vectors(hit) is None
        ev = select_evidence(
            "how many days of annual leave?", [hit], ix.encode, stored=ix.sentence_vectors
        )
        assert "27 days" in ev.text

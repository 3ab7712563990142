"""Every format ingested end to end; hybrid search, collection filter, dedup, metadata."""

from __future__ import annotations

import pytest
from ingest_fixtures import FACTS

from ingest import current_version, open_index
from lorebot.types import SearchHit


@pytest.fixture(scope="module")
def index(built, embedder):
    settings, _report = built
    reader = open_index(settings, embedder=embedder)
    yield reader
    reader.close()


def test_report_lists_every_format_ok(built):
    _settings, report = built
    by_path = {f.path: f for f in report.files}
    for rel in FACTS:
        assert by_path[rel].status == "ok", (rel, by_path[rel].reason)
        assert by_path[rel].chunks >= 1
    assert report.failed == 0 and report.new_version
    assert {f.kind for f in report.files} >= {
        "md",
        "html",
        "txt",
        "csv",
        "json",
        "eml",
        "docx",
        "pdf",
        "pptx",
        "xlsx",
    }


@pytest.mark.parametrize("rel", sorted(FACTS))
def test_each_format_is_found_by_its_fact(index, rel):
    query, fact = FACTS[rel]
    hits = index.search(query, k=3, collections=["handbook"])
    assert hits, query
    top = hits[0].chunk
    expected_source = (
        "https://intranet.example.org/handbook/cycling" if rel.endswith(".md") else rel
    )
    assert top.source == expected_source, [h.chunk.source for h in hits]
    assert fact in top.text


def test_chunk_metadata(index):
    hit = index.search("bicycle allowance", k=1, collections=["handbook"])[0]
    c = hit.chunk
    assert c.title == "Cycling to work"
    assert c.url == "https://intranet.example.org/handbook/cycling"
    assert c.collection == "handbook"
    assert c.modified and c.modified.endswith("+00:00")
    assert len(c.content_hash) == 64
    assert "{%" not in c.text and "zanzibar" not in c.text  # tags and comment blocks gone
    assert index.get_chunk(c.chunk_id) == c
    pdf = index.search("laptop refresh cycle", k=1, collections=["handbook"])[0].chunk
    assert pdf.page == 1
    with pytest.raises(KeyError):
        index.get_chunk("no-such-chunk")


def test_scores(index):
    hits = index.search("fire drill assembly point", k=4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert isinstance(h, SearchHit)
        assert h.dense_score is not None and -1.0 <= h.dense_score <= 1.0
    assert hits[0].keyword_score and hits[0].keyword_score > 0
    # the dense score is the cosine similarity of that chunk to the query
    q = index.embedder.encode(["fire drill assembly point"])[0]
    v = index.embedder.encode([hits[0].chunk and _embed_text(index, hits[0].chunk.chunk_id)])[0]
    assert hits[0].dense_score == pytest.approx(float(q @ v), abs=1e-4)


def _embed_text(index, chunk_id):
    return index.db.execute(
        "SELECT embed_text FROM chunks WHERE chunk_id = ?", (chunk_id,)
    ).fetchone()[0]


def test_keyword_only_hits_get_a_dense_score(index):
    # a rare token only BM25 can match exactly: the chunk must still carry its cosine
    hits = index.search("4905", k=10, collections=["handbook"])
    csv = [h for h in hits if h.chunk.source == "handbook/offices.csv"]
    assert csv and csv[0].keyword_score is not None and csv[0].dense_score is not None


@pytest.mark.parametrize("k", [1, 5, 50, 500])
def test_collection_filter_never_leaks(index, k):
    eng_query = "when do production deploys happen"
    for cols, allowed in (
        (["handbook"], {"handbook"}),
        (["eng"], {"eng"}),
        (["eng", "handbook"], {"eng", "handbook"}),
    ):
        hits = index.search(eng_query, k=k, collections=cols, candidates=200)
        assert hits
        assert {h.chunk.collection for h in hits} <= allowed
    assert index.search(eng_query, k=k, collections=[]) == []
    assert index.search(eng_query, k=k, collections=["nope"]) == []
    everything = index.search(eng_query, k=k, candidates=500)
    assert everything[0].chunk.collection == "eng"


def test_large_k_returns_each_allowed_chunk_once(index):
    stats = index.stats()
    n_eng = stats["collections"]["eng"]["chunks"]
    hits = index.search("engineer", k=1000, collections=["eng"], candidates=1000)
    assert len(hits) == n_eng
    assert len({h.chunk.chunk_id for h in hits}) == len(hits)


def test_stats(index, built):
    settings, report = built
    s = index.stats()
    assert s["version"] == report.version == current_version(settings)
    assert s["collections"]["eng"] == {"documents": 2, "chunks": s["collections"]["eng"]["chunks"]}
    assert s["collections"]["handbook"]["documents"] == len(FACTS)
    assert s["chunks"] == report.chunks_total == sum(c["chunks"] for c in s["collections"].values())
    assert s["documents"] == len(FACTS) + 2
    assert s["built_at"]


def test_empty_query(index):
    assert index.search("   ", k=3) == []

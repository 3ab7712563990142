"""ingest.distributed without workers: batching, the result format, and the coordinator's
own fallback (no ingest worker takes a batch, or one result is bad).

The real fleet (two Celery workers, a SIGKILL mid-batch) is tests/workers/
test_distributed_build.py; here batches run in this process against a real Redis.
"""

from __future__ import annotations

import numpy as np

from ingest import distributed
from lorebot import contracts
from tests.conftest import make_settings


class ZeroEmbedder:
    """Vectors of zeros: for builds whose vectors nobody reads."""

    variant = "zero"

    def encode_with_spans(self, texts, spans):
        return np.zeros((len(texts), 384), np.float32), [np.zeros((0, 384), np.float32)] * len(
            texts
        )


def text_docs(tmp_path):
    """The sample handbook's Markdown and text pages (quick to parse)."""
    import shutil

    from lorebot import assets

    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for f in assets.sample_docs_dir().iterdir():
        if f.suffix in (".md", ".txt"):
            shutil.copy(f, folder / f.name)
    return folder


class _Rec:
    def __init__(self, key: str, size: int) -> None:
        self.key, self.size = key, size


def test_batches_are_balanced_deterministic_and_largest_first():
    items = [(None, _Rec(f"f{i}", size)) for i, size in enumerate([50, 1, 7, 30, 2, 9, 8, 3])]
    batches = distributed.split_batches(items, 3)
    assert sorted(len(b) for b in batches) == [2, 3, 3]
    assert sorted(r.key for b in batches for _, r in b) == sorted(r.key for _, r in items)
    sizes = [sum(r.size for _, r in b) for b in batches]
    assert sizes == sorted(sizes, reverse=True) and batches[0][0][1].size == 50
    again = distributed.split_batches(list(reversed(items)), 3)
    assert [[r.key for _, r in b] for b in again] == [[r.key for _, r in b] for b in batches]


def test_a_result_round_trips_without_pickles():
    vectors = np.arange(3 * 384, dtype=np.float32).reshape(3, 384)
    sentences = [np.ones((2, 384), np.float32), np.zeros((0, 384), np.float32), np.ones((1, 384))]
    files = [{"status": "ok", "chunks": [{"chunk_id": "x"}]}, {"status": "failed", "reason": "r"}]
    data = distributed.pack_result("onnx-int8", files, vectors, sentences)
    variant, got_files, got_vectors, got_sentences = distributed.unpack_result(data)
    assert variant == "onnx-int8" and got_files == files
    assert np.array_equal(got_vectors, vectors)
    assert [s.shape for s in got_sentences] == [(2, 384), (0, 384), (1, 384)]


def test_with_no_worker_the_coordinator_builds_every_batch_itself(
    tmp_path, redis_server, redis_client, monkeypatch
):
    from ingest import Source, build_index, open_index, store
    from ingest.build import make_parse_pool

    monkeypatch.setattr(distributed, "HELP_AFTER_S", 0.0)
    docs = [Source(path=text_docs(tmp_path), collection="handbook")]
    pool = make_parse_pool(1)
    single = make_settings(tmp_path / "single", redis_server.url)
    queued: list[dict] = []
    settings = make_settings(
        tmp_path / "coord", redis_server.url, index={"distributed": True, "batch_files": 5}
    )
    try:
        build_index(single, docs, progress=False, embedder=ZeroEmbedder(), pool=pool)
        report = build_index(
            settings,
            docs,
            progress=False,
            embedder=ZeroEmbedder(),
            dispatch=queued.append,
            pool=pool,
        )
    finally:
        pool.close()
    assert len(queued) == 3 and {q["store"] for q in queued} == {str(tmp_path / "coord/builds")}
    with open_index(single) as a, open_index(settings) as b:
        assert [c.model_dump() for c in a.iter_chunks()] == [
            c.model_dump() for c in b.iter_chunks()
        ]
    assert store.list_versions(settings) == [report.version]
    assert not (tmp_path / "coord/builds" / queued[0]["build"]).exists()
    # A late copy of a batch of the finished build does nothing.
    late = distributed.run_batch(
        settings, queued[0], redis_client=redis_client, embedder=ZeroEmbedder, pool=None
    )
    assert late == {"status": "stale"}


def test_a_batch_done_twice_is_merged_once_and_a_bad_result_is_redone(
    tmp_path, redis_server, redis_client, monkeypatch
):
    """The first run's record is corrupted (its digest no longer matches): the coordinator
    queues the batch again instead of merging it; every batch ends merged exactly once."""
    from ingest import Source, build_index, open_index
    from ingest.build import make_parse_pool

    monkeypatch.setattr(distributed, "HELP_AFTER_S", 0.0)
    settings = make_settings(
        tmp_path / "coord", redis_server.url, index={"distributed": True, "batch_files": 9}
    )
    pool = make_parse_pool(1)
    queued: list[dict] = []
    tampered: list[str] = []

    def dispatch(spec: dict) -> None:
        queued.append(spec)
        if len(queued) == 1:
            # A worker runs the first batch at once, twice (a redelivered message); then
            # the store's copy is replaced behind the coordinator's back.
            for _ in range(2):
                redis_client.delete(contracts.build_done(spec["build"]))
                out = distributed.run_batch(
                    settings,
                    spec,
                    redis_client=redis_client,
                    embedder=ZeroEmbedder,
                    pool=lambda: pool,
                )
                assert out["status"] == "ok"
            store = distributed.BatchStore.for_settings(settings)
            name = f"{spec['batch']}-{spec['key']}.npz"
            store.put(b"not the result", spec["build"], "batches", name)
            tampered.append(spec["batch"])

    try:
        report = build_index(
            settings,
            [Source(path=text_docs(tmp_path), collection="handbook")],
            progress=False,
            embedder=ZeroEmbedder(),
            dispatch=dispatch,
            pool=pool,
        )
    finally:
        pool.close()
    assert tampered == ["b00000"]
    assert [q["batch"] for q in queued].count("b00000") == 2  # redone once
    with open_index(settings) as reader:
        ids = [c.chunk_id for c in reader.iter_chunks()]
    assert len(ids) == len(set(ids)) == report.chunks_total
    assert report.failed == 0


def test_the_fleet_stage_reads_as_text_in_slack_and_the_console():
    from console.actions import progress_text
    from workers.tasks.ingest import stage_text

    assert (
        stage_text("fleet", 3, 12) == "parsing and embedding on the ingest workers 3/12 files (25%)"
    )
    assert progress_text({"stage": "fleet", "done": 3, "total": 12}) == (
        "parsing and embedding on the ingest workers 3/12 files (25%)"
    )

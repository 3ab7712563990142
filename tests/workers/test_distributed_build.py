"""Distributed builds (issue 17 item 2): two real ingest workers, each with its own data
directory, take a build's batches through a shared store (a file:// sync location), as
`tests/ops/test_fleet.py`'s fleet shares its index; the building process (this one)
merges and publishes.

Both builds must give what a single-process build of the same files gives: the same
chunk ids, texts, titles and sources. The second build SIGKILLs the worker holding the
largest batch in the middle of it (the whole worker, as when a machine dies): its
batch is redone by the other worker and the version is published once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from lorebot import contracts, sync
from tests.conftest import WorkerProcess, make_settings

pytestmark = pytest.mark.integration

LEASE_S = 3.0


#: Besides the sample handbook's Markdown pages: one file of each other kind.
CORPUS_OTHERS = {"payroll.txt", "benefits.docx", "code_of_conduct.pdf", "travel_policy.html"}
FILES = 10 + len(CORPUS_OTHERS) + 1  # ten Markdown pages, the others, the long page


class ZeroEmbedder:
    """Vectors of zeros: for a build whose vectors nobody reads."""

    variant = "zero"

    def encode_with_spans(self, texts, spans):
        import numpy as np

        return np.zeros((len(texts), 384), np.float32), [np.zeros((0, 384), np.float32)] * len(
            texts
        )


def _big_document() -> str:
    """A long handbook page (~200 chunks): its batch runs for several seconds on one thread."""
    from lorebot import assets

    paras = [
        p.strip()
        for f in sorted(assets.sample_docs_dir().glob("*.md"))
        for p in f.read_text().split("\n\n")
        if len(p.split()) > 25 and not p.lstrip().startswith("#")
    ]
    out = ["# Collected policies\n"]
    for i in range(400):
        out.append(f"## Policy note {i + 1}\n\n{paras[i % len(paras)]} (note {i + 1})\n")
    return "\n".join(out)


def chunks_of(settings) -> dict[str, tuple]:
    from ingest import open_index

    with open_index(settings) as reader:
        return {
            c.chunk_id: (c.text, c.title, c.source, c.collection, c.heading)
            for c in reader.iter_chunks()
        }


def worker_children(w: WorkerProcess) -> set[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(w.proc.pid)], capture_output=True, text=True, check=False
    )
    return {int(p) for p in out.stdout.split()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ingest import Source, build_index
    from lorebot import assets
    from lorebot.cli.stack import RedisServer, free_port

    tmp = tmp_path_factory.mktemp("distributed")
    # A Redis of its own: no other test's message waits on this ingest queue.
    server = RedisServer(free_port(), tmp / "redis").start()
    corpus = tmp / "corpus"
    corpus.mkdir()
    for f in sorted(assets.sample_docs_dir().iterdir()):
        if f.suffix == ".md" or f.name in CORPUS_OTHERS:
            shutil.copy(f, corpus / f.name)
    (corpus / "collected_policies.md").write_text(_big_document())
    sources = [Source(path=corpus, collection="handbook")]
    shared = tmp / "shared"
    keys = tmp / "keys"
    sync.generate_keys(keys / "sync.key", keys / "sync.pub")

    # The reference: one process, no workers. Chunk ids and texts do not depend on the
    # vectors, so it skips the model.
    single = make_settings(tmp / "single", server.url)
    build_index(single, sources, progress=False, embedder=ZeroEmbedder())

    workers: dict[str, WorkerProcess] = {}
    try:
        for name in ("a", "b"):
            workers[name] = WorkerProcess(
                tmp / f"worker-{name}",
                server.url,
                tmp / f"worker-{name}.log",
                contracts.QUEUE_INGEST,
                LOREBOT_SYNC__URL=f"file://{shared}",
                LOREBOT_SYNC__VERIFY_KEY=str(keys / "sync.pub"),
                LOREBOT_MODEL__N_THREADS="1",
                LOREBOT_INDEX__PARSE_WORKERS="1",
                LOREBOT_WORKER__CONCURRENCY="1",
                LOREBOT_MODEL_CACHE_DIR=os.environ["LOREBOT_MODEL_CACHE_DIR"],
            )
        for w in workers.values():
            w.wait_ready(timeout=180)

        def coordinator(name: str):
            return make_settings(
                tmp / name,
                server.url,
                sync={"url": f"file://{shared}", "signing_key": keys / "sync.key"},
                index={"distributed": True, "batch_files": 3, "batch_lease_s": LEASE_S},
                model_cache_dir=os.environ["LOREBOT_MODEL_CACHE_DIR"],
            )

        yield {
            "sources": sources,
            "reference": chunks_of(single),
            "workers": workers,
            "coordinator": coordinator,
            "shared": shared,
            "redis": server.url,
        }
    finally:
        for w in workers.values():
            w.stop()
        server.stop()


def published(cluster) -> list[str]:
    """The index versions complete in the shared location (what the fleet can pull)."""
    return sync.Location(f"file://{cluster['shared']}/index").complete_versions()


def _batches_run(w: WorkerProcess) -> int:
    return w.log().count("chunks in ")


def test_two_workers_build_what_one_process_builds(cluster):
    from ingest import build_index, store

    settings = cluster["coordinator"]("coord-a")
    before = published(cluster)
    stages: list[tuple[str, int, int]] = []
    report = build_index(
        settings,
        cluster["sources"],
        progress=False,
        on_progress=lambda *a: stages.append(a),
    )
    assert report.new_version and report.failed == 0
    assert chunks_of(settings) == cluster["reference"]
    assert store.list_versions(settings) == [report.version]
    assert sorted(set(published(cluster)) - set(before)) == [report.version]
    # Both workers took batches; the fleet's progress went through the callback.
    runs = {n: _batches_run(w) for n, w in cluster["workers"].items()}
    assert all(runs.values()), runs
    assert ("fleet", FILES, FILES) in stages and stages[0] == ("fleet", 0, FILES)
    # The build's inputs and results are gone from the shared store.
    assert list((cluster["shared"] / "builds").iterdir()) == []


def test_a_worker_killed_mid_batch_loses_nothing(cluster, caplog):
    import redis

    from ingest import build_index, store

    settings = cluster["coordinator"]("coord-b")
    before = published(cluster)
    workers = cluster["workers"]
    r = redis.Redis.from_url(cluster["redis"])
    outcome: dict = {}

    def build() -> None:
        try:
            outcome["report"] = build_index(settings, cluster["sources"], progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            outcome["error"] = exc

    caplog.set_level("INFO", logger="ingest.distributed")
    thread = threading.Thread(target=build)
    thread.start()
    # The largest batch (b00000, the long page) is queued first: wait until a worker holds
    # it, then kill that whole worker (main process, pool child and parser) while it runs.
    killed, build_id = None, ""
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        for key in r.scan_iter(match=contracts.PREFIX + "build:*:claim:b00000"):
            holder = (r.get(key) or b"").decode()
            build_id = key.decode().split(":")[2]
            pid = int(holder.rsplit(":", 1)[1]) if holder else 0
            for name, w in workers.items():
                if pid in worker_children(w):
                    assert not r.hexists(contracts.build_done(build_id), "b00000")
                    os.killpg(w.proc.pid, signal.SIGKILL)
                    w.proc.wait(10)
                    killed = name
        time.sleep(0.05)
    assert killed, "no worker took the largest batch"
    thread.join(240)
    assert not thread.is_alive(), "the build did not finish"
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.new_version and report.failed == 0
    got = chunks_of(settings)
    assert got == cluster["reference"]
    # One version, published once (here and to the fleet); the redo was the coordinator's.
    assert store.list_versions(settings) == [report.version]
    assert sorted(set(published(cluster)) - set(before)) == [report.version]
    assert any("b00000" in m and "queued again" in m for m in caplog.messages), caplog.messages
    survivor = next(w for n, w in workers.items() if n != killed)
    assert f"batch b00000 of build {build_id}: " in survivor.log()
    manifest = json.loads(
        (store.version_path(settings, report.version) / store.MANIFEST).read_text()
    )
    assert manifest["counts"]["chunks"] == len(cluster["reference"])

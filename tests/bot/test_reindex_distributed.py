"""`/lorebot reindex` with ``index.distributed`` on, end to end (issue 17, item 2).

A signed slash command → the bolt app over HTTP → a real redis-server → real
``lorebot worker --queues ingest`` processes, each with its own data directory, sharing
one file:// sync location (the batch store and the published index) → the fake Slack
Web API, where the thread's progress message and the headline are read back.

* Two workers: whichever takes the re-index task coordinates; the other runs every batch.
  The new version is published once with the chunks a single-process build makes, and
  the thread shows the fleet: batches done of all and which worker did them.
* One worker (concurrency 1): the re-index task holds the only process that could take
  the batches. The coordinator runs them itself (no deadlock), and the batch messages
  left on the queue do nothing once the build is over.

In-process (default run; the two above are ``slow``): the re-index task's body with no
ingest worker (the builder runs every batch and says so in the thread), and the fleet's
progress line and the CLI's fleet lines with batches run under two worker names.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lorebot import contracts, sync
from tests.bot.conftest import ADMIN, CHANNEL, BotHarness, reindex_in_thread, slack_settings_for
from tests.conftest import WorkerProcess, child_env, make_settings
from tests.support.fake_slack import FakeSlack

BATCH_FILES = 2
TOKEN = "xoxb-test-token"

#: Six short pages (written for this test): three batches of two files.
PAGES = {
    "bikes.md": "# Bicycles\n\nThe bicycle cellar under building C opens at 06:30. Badges for "
    "it come from the facilities desk on the ground floor.\n",
    "printers.md": "# Printers\n\nEach floor has one colour printer next to the kitchen. Toner "
    "is ordered by the office manager every second Monday.\n",
    "lockers.md": "# Lockers\n\nDay lockers are free to use; keys are returned to the desk "
    "before 19:00 or the lock is opened the next morning.\n",
    "plants.md": "# Plants\n\nOffice plants are watered on Tuesdays and Fridays by the cleaning "
    "company. Please do not move them into direct sun.\n",
    "quiet.md": "# Quiet rooms\n\nThe two quiet rooms on floor four are for focused work and "
    "calls of under thirty minutes; they cannot be booked.\n",
    "mail.md": "# Post\n\nIncoming post is sorted by 10:00 and put in the pigeonholes by the "
    "lifts. Parcels wait at reception for five working days.\n",
}


class ZeroEmbedder:
    """Vectors of zeros: the reference build's ids and texts do not depend on vectors."""

    variant = "zero"

    def encode_with_spans(self, texts, spans):
        return np.zeros((len(texts), 384), np.float32), [np.zeros((0, 384), np.float32)] * len(
            texts
        )


def write_pages(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in PAGES.items():
        (folder / name).write_text(text)
    return folder


def chunks_of(settings, collection: str) -> dict[str, tuple]:
    from ingest import open_index

    with open_index(settings) as reader:
        return {
            c.chunk_id: (c.text, c.title, c.source, c.heading)
            for c in reader.iter_chunks()
            if c.collection == collection
        }


def reference_chunks(tmp: Path, docs: Path, collection: str) -> dict[str, tuple]:
    """What one process builds from ``docs`` (no workers, no Redis)."""
    from ingest import Source, build_index

    single = make_settings(tmp / "reference")
    build_index(
        single, [Source(docs, collection)], progress=False, embedder=ZeroEmbedder(), workers=1
    )
    return chunks_of(single, collection)


def pool_children(w: WorkerProcess) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(w.proc.pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


# ------------------------------------------------------------------------- the fleet
class Fleet:
    """Redis, the fake Slack, the bot over HTTP, a shared sync location and its keys."""

    def __init__(self, tmp: Path) -> None:
        import redis

        from bot.app import build_app
        from bot.server import BotServer
        from lorebot.cli.stack import RedisServer, free_port

        self.tmp = tmp
        # A Redis of its own: no other test's message waits on this ingest queue.
        self.redis_server = RedisServer(free_port(), tmp / "redis").start()
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.fake = FakeSlack().start()
        self.shared = tmp / "shared"
        self.keys = tmp / "keys"
        sync.generate_keys(self.keys / "sync.key", self.keys / "sync.pub")
        settings = slack_settings_for(tmp / "bot", self.redis_server.url, self.fake.api_url)
        app = build_app(settings, redis=self.redis)
        server = BotServer(app, self.redis, host="127.0.0.1", port=0).start()
        self.bot = BotHarness(app, server, self.fake, self.redis, settings)
        self.workers: list[WorkerProcess] = []

    def settings(self, data_dir: Path):
        return make_settings(
            data_dir,
            self.redis_server.url,
            sync={"url": f"file://{self.shared}", "signing_key": self.keys / "sync.key"},
            index={"distributed": True, "batch_files": BATCH_FILES},
        )

    def start_worker(self, name: str, sources) -> WorkerProcess:
        """An ingest worker with its own data dir, which knows ``sources`` for re-index."""
        from ingest.registry import record_sources

        data_dir = self.tmp / f"worker-{name}"
        record_sources(self.settings(data_dir), sources)
        w = WorkerProcess(
            data_dir,
            self.redis_server.url,
            self.tmp / f"worker-{name}.log",
            contracts.QUEUE_INGEST,
            LOREBOT_SYNC__URL=f"file://{self.shared}",
            LOREBOT_SYNC__SIGNING_KEY=str(self.keys / "sync.key"),
            LOREBOT_INDEX__DISTRIBUTED="true",
            LOREBOT_INDEX__BATCH_FILES=str(BATCH_FILES),
            LOREBOT_INDEX__PARSE_WORKERS="1",
            LOREBOT_WORKER__CONCURRENCY="1",
            LOREBOT_MODEL__N_THREADS="1",
            LOREBOT_MODEL_CACHE_DIR=os.environ["LOREBOT_MODEL_CACHE_DIR"],
            LOREBOT_SLACK__API_URL=self.fake.api_url,
            LOREBOT_SLACK__BOT_TOKEN=TOKEN,
        )
        w.data_dir = data_dir  # type: ignore[attr-defined]
        self.workers.append(w)
        return w

    def stop_workers(self) -> None:
        while self.workers:
            self.workers.pop().stop()

    def published(self) -> list[str]:
        return sync.Location(f"file://{self.shared}/index").complete_versions()

    def reindex(self, collection: str, timeout: float = 300.0) -> tuple[str, str]:
        """Send the signed command; (headline ts, progress ts) once the headline is final."""
        with self.fake._lock:
            earlier = set(self.fake.messages)
        resp = self.bot.command("/lorebot", f"reindex {collection}", user=ADMIN)
        assert resp.status == 200

        def headline(f):
            new = [m for k, m in f.messages.items() if k not in earlier and m.channel == CHANNEL]
            return next((m.ts for m in new if m.thread_ts is None), None)

        ts = self.fake.wait_for(headline, what="the reindex headline")

        def result(f):
            msg = f.messages[(CHANNEL, ts)]
            return msg if msg.text.startswith(("Index ", "Re-index failed")) else None

        final = self.fake.wait_for(result, timeout=timeout, what="the reindex result")
        assert final.text.startswith("Index "), final.text + self.logs()
        with self.fake._lock:
            (progress_ts,) = [m.ts for m in self.fake.messages.values() if m.thread_ts == ts]
        return ts, progress_ts

    def progress_texts(self, progress_ts: str) -> list[str]:
        """Every text the thread's progress message had: each edit, in order."""
        return [
            c.args["text"] for c in self.fake.calls_to("chat.update") if c.args["ts"] == progress_ts
        ]

    def logs(self) -> str:
        return "".join(f"\n--- {w.log_path.name}\n{w.log()[-4000:]}" for w in self.workers)

    def close(self) -> None:
        self.stop_workers()
        self.bot.server.stop()
        self.fake.stop()
        self.redis.close()
        self.redis_server.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("reindex-distributed"))
    yield f
    f.close()


def batch_lines(log: str) -> list[str]:
    """The "batch bNNNNN of build B: k chunks in s" lines (a batch run) of a worker's log."""
    return re.findall(r"batch b\d{5} of build \S+: \d+ chunks in ", log)


@pytest.mark.integration
@pytest.mark.slow
def test_reindex_on_two_workers_shows_the_fleet_and_publishes_once(fleet):
    from ingest import Source, store

    docs = write_pages(fleet.tmp / "facilities")
    expected = reference_chunks(fleet.tmp / "two", docs, "facilities")
    sources = [Source(docs, "facilities")]
    workers = [fleet.start_worker(n, sources) for n in ("a", "b")]
    try:
        for w in workers:
            w.wait_ready(timeout=180)
        before = fleet.published()
        headline_ts, progress_ts = fleet.reindex("facilities")

        # Whichever worker took the re-index task coordinated; the other ran the batches.
        (coord,) = [w for w in workers if "lorebot.reindex[" in w.log()]
        (other,) = [w for w in workers if w is not coord]
        runner = f"{socket.gethostname()}:{pool_children(other)[0]}"
        ran = batch_lines(other.log())
        assert len(ran) == len(PAGES) // BATCH_FILES, fleet.logs()
        assert batch_lines(coord.log()) == [], fleet.logs()
        assert "no ingest worker took a batch" not in coord.log()

        # One new version, with what one process builds, here and in the shared location.
        settings = fleet.settings(coord.data_dir)
        (version,) = store.list_versions(settings)
        assert sorted(set(fleet.published()) - set(before)) == [version]
        assert chunks_of(settings, "facilities") == expected

        # The thread: one progress message, edited; the fleet stage names the batches
        # and the worker; its last line and the headline say who built the version.
        texts = fleet.progress_texts(progress_ts)
        n = len(PAGES) // BATCH_FILES
        fleet_lines = [t for t in texts if "on the ingest workers" in t]
        assert any(
            f"{n}/{n} batches, {len(PAGES)}/{len(PAGES)} files (100%); done by {runner} ×{n}" in t
            for t in fleet_lines
        ), texts
        last = fleet.fake.message(CHANNEL, progress_ts).text
        assert "done in" in last and f"{n} batches on 1 worker ({runner} ×{n})" in last, last
        headline = fleet.fake.message(CHANNEL, headline_ts).text
        assert headline.startswith(f"Index {version}: {len(PAGES)} files ok, 0 failed"), headline
        assert f"built by the fleet: {n} batches on 1 worker ({runner} ×{n})" in headline

        # `lorebot ingest` as the builder, the same two workers taking its batches: its
        # output names them and sums up.
        more = fleet.tmp / "more"
        more.mkdir()
        for name, text in PAGES.items():
            (more / f"more-{name}").write_text(text.replace("# ", "# More on ", 1))
        out = subprocess.run(
            [sys.executable, "-m", "lorebot", "ingest", str(more), "--collection", "more"],
            env=child_env(
                fleet.tmp / "cli",
                fleet.redis_server.url,
                LOREBOT_SYNC__URL=f"file://{fleet.shared}",
                LOREBOT_SYNC__SIGNING_KEY=str(fleet.keys / "sync.key"),
                LOREBOT_INDEX__DISTRIBUTED="true",
                LOREBOT_INDEX__BATCH_FILES=str(BATCH_FILES),
                LOREBOT_MODEL_CACHE_DIR=os.environ["LOREBOT_MODEL_CACHE_DIR"],
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr + fleet.logs()
        said = [line for line in out.stderr.splitlines() if line.startswith("fleet: ")]
        names = {f"{socket.gethostname()}:{p}" for w in workers for p in pool_children(w)}
        taking = [
            line.removeprefix("fleet: ").removesuffix(" is taking batches") for line in said[:-1]
        ]
        assert taking and set(taking) <= names, said
        assert said[-1].startswith(f"fleet: {n} batches on {len(taking)} worker"), said
    finally:
        fleet.stop_workers()


@pytest.mark.integration
@pytest.mark.slow
def test_reindex_on_a_single_worker_finishes_by_running_the_batches_itself(fleet):
    """Concurrency 1: the re-index task holds the only process that takes batches."""
    from ingest import Source, store

    docs = write_pages(fleet.tmp / "office")
    expected = reference_chunks(fleet.tmp / "one", docs, "office")
    worker = fleet.start_worker("solo", [Source(docs, "office")])
    try:
        worker.wait_ready(timeout=180)
        before = fleet.published()
        _, progress_ts = fleet.reindex("office")
        settings = fleet.settings(worker.data_dir)
        (version,) = store.list_versions(settings)
        assert sorted(set(fleet.published()) - set(before)) == [version]
        assert chunks_of(settings, "office") == expected

        n = len(PAGES) // BATCH_FILES
        me = f"{socket.gethostname()}:{pool_children(worker)[0]} (coordinator)"
        last = fleet.fake.message(CHANNEL, progress_ts).text
        assert f"{n} batches on 1 worker ({me} ×{n})" in last, last
        assert len(batch_lines(worker.log())) == n
        assert worker.log().count("no ingest worker took a batch") == n
        # The batch messages still queued reach the worker after the build: they are stale.
        deadline = time.monotonic() + 60
        while worker.log().count("'status': 'stale'") < n:
            assert time.monotonic() < deadline, fleet.logs()
            time.sleep(0.2)
        assert fleet.redis.llen(contracts.QUEUE_INGEST) == 0
        assert len(batch_lines(worker.log())) == n  # nothing was built twice
    finally:
        fleet.stop_workers()


# --------------------------------------------------------------- in-process, default run
@pytest.mark.integration
def test_reindex_task_with_no_ingest_worker_names_the_coordinator_in_its_thread(
    tmp_path, redis_server, redis_client, fake_slack, monkeypatch
):
    """The re-index task's body with ``index.distributed`` and no ingest worker running:
    its batches go to the ingest queue, the builder runs them itself, and the thread and
    the headline say so. (The real workers: the two slow tests above.)"""
    from ingest import Source, distributed
    from ingest.registry import record_sources
    from tests.bot.conftest import queued

    monkeypatch.setattr(distributed, "HELP_AFTER_S", 0.0)  # nobody will claim a batch
    settings = slack_settings_for(tmp_path, redis_server.url, fake_slack.api_url)
    settings.index.distributed = True
    settings.index.batch_files = BATCH_FILES
    settings.index.parse_workers = 1
    record_sources(settings, [Source(write_pages(tmp_path / "docs"), "facilities")])
    headline, result = reindex_in_thread(fake_slack, settings, CHANNEL, ADMIN, "facilities")
    assert result["status"] == "ok", result

    n = len(PAGES) // BATCH_FILES
    me = f"{socket.gethostname()}:{os.getpid()}:coordinator"
    assert result["fleet"] == {
        "batches": n,
        "done": n,
        "done_by": {me: n},
        "running": [],
        "queued_again": 0,
    }
    label = f"{socket.gethostname()}:{os.getpid()} (coordinator)"
    with fake_slack._lock:
        (progress_ts,) = [
            m.ts for m in fake_slack.messages.values() if m.thread_ts == headline["ts"]
        ]
    edits = [
        c.args["text"] for c in fake_slack.calls_to("chat.update") if c.args["ts"] == progress_ts
    ]
    want = f"{n}/{n} batches, {len(PAGES)}/{len(PAGES)} files (100%); done by {label} ×{n}"
    assert any(want in t for t in edits), edits
    last = fake_slack.message(CHANNEL, progress_ts).text
    assert f"{n} batches on 1 worker ({label} ×{n})" in last, last
    top = fake_slack.message(CHANNEL, headline["ts"]).text
    assert f"{len(PAGES)} files ok" in top and f"built by the fleet: {n} batches" in top, top
    # The batches' messages still wait on the ingest queue: a worker taking one now
    # finds the build over and does nothing.
    tasks = queued(redis_client, contracts.QUEUE_INGEST)
    assert [t["task"] for t in tasks] == [contracts.TASK_INGEST_BATCH] * n
    late = distributed.run_batch(
        settings, tasks[0]["kwargs"]["spec"], redis_client=redis_client, embedder=None, pool=None
    )
    assert late == {"status": "stale"}


def test_the_fleet_line_counts_batches_and_names_their_workers(
    tmp_path, redis_server, redis_client
):
    """Batches run by run_batch under two worker names (as two ingest workers would); the
    Slack progress line and the CLI's lines name them, and the counts add up."""
    from slack_sdk import WebClient

    from ingest import Source, build_index, distributed
    from ingest.build import make_parse_pool
    from ingest.cli import fleet_reporter
    from workers.tasks.ingest import StageProgress, fleet_stage_text

    fake = FakeSlack().start()
    settings = make_settings(
        tmp_path / "coord", redis_server.url, index={"distributed": True, "batch_files": 2}
    )
    pool = make_parse_pool(1)
    echoed: list[str] = []
    names = iter(["w1:11", "w2:22", "w1:11"])

    def run_now(spec: dict) -> None:  # an ingest worker takes the batch at once
        out = distributed.run_batch(
            settings,
            spec,
            redis_client=redis_client,
            embedder=ZeroEmbedder,
            pool=lambda: pool,
            holder=next(names),
        )
        assert out["status"] == "ok"

    fleet, cli_progress = fleet_reporter(settings, echo=echoed.append, queue=run_now)
    web = WebClient(token=TOKEN, base_url=fake.api_url)
    progress = StageProgress(
        web, CHANNEL, "1.000", headline="Re-indexing", describe=fleet_stage_text(fleet)
    )
    progress.start()

    def both(stage, done, total):
        progress(stage, done, total)
        cli_progress(stage, done, total)

    try:
        report = build_index(
            settings,
            [Source(write_pages(tmp_path / "docs"), "facilities")],
            progress=False,
            embedder=ZeroEmbedder(),
            pool=pool,
            on_progress=both,
            dispatch=fleet.dispatch,
        )
    finally:
        pool.close()
        fake.stop()
    assert report.ok == len(PAGES)
    # Throttled in between, but the end of the fleet stage is always shown.
    edits = [c.args["text"] for c in fake.calls_to("chat.update")]
    want = "3/3 batches, 6/6 files (100%); done by w1:11 ×2, w2:22 ×1"
    assert any(want in t for t in edits), edits
    assert fleet.last.to_dict() == {
        "batches": 3,
        "done": 3,
        "done_by": {"w1:11": 2, "w2:22": 1},
        "running": [],
        "queued_again": 0,
    }
    assert echoed == [
        "fleet: w1:11 is taking batches",
        "fleet: w2:22 is taking batches",
        "fleet: 3 batches on 2 workers (w1:11 ×2, w2:22 ×1)",
    ], echoed


def test_a_fleet_line_before_any_batch_and_when_redis_is_gone():
    from ingest.report import FleetProgress, FleetSnapshot, worker_label

    class Broken:
        def hgetall(self, key):
            raise ConnectionError("redis is down")

    fleet = FleetProgress(Broken(), queue=lambda spec: None)
    assert fleet.line(0, 4) == "0/0 batches, 0/4 files (0%)"
    fleet.dispatch({"build": "b1", "batch": "b00000"})
    fleet.dispatch({"build": "b1", "batch": "b00000"})  # queued again
    fleet.last = FleetSnapshot(batches=1, done_by={"h:1:coordinator": 1}, queued_again=1)
    # Redis unreadable: the last snapshot stands; the build goes on.
    assert fleet.line(2, 2) == (
        "1/1 batches, 2/2 files (100%); done by h:1 (coordinator) ×1; 1 queued again"
    )
    assert worker_label("h:1") == "h:1"


def test_a_fleet_line_escapes_worker_names_and_stays_short():
    """Worker names are whatever a Redis record says: escaped for Slack; a big fleet is
    named in part."""
    from collections import Counter

    from ingest.report import FleetProgress, FleetSnapshot
    from workers.tasks.ingest import fleet_stage_text

    fleet = FleetProgress(None, queue=lambda spec: None)
    fleet.last = FleetSnapshot(batches=12, done_by=Counter({"<!channel>:1": 2}))
    assert fleet_stage_text(fleet)("fleet", 2, 24) == (
        "parsing and embedding on the ingest workers: "
        "2/12 batches, 2/24 files (8%); done by &lt;!channel&gt;:1 ×2"
    )
    fleet.last = FleetSnapshot(batches=10, done_by=Counter({f"h:{i}": 1 for i in range(10)}))
    assert fleet.last.summary() == (
        "10 batches on 10 workers (h:0 ×1, h:1 ×1, h:2 ×1, h:3 ×1, h:4 ×1, h:5 ×1, h:6 ×1, "
        "h:7 ×1 and 2 more)"
    )
    assert fleet_stage_text(fleet)("parse", 1, 4) == "parsing 1/4 files (25%)"

"""Worker tasks beyond answering, on a real worker: re-index from the recorded sources,
hot reload of the new index version between tasks, what the worker announces."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from lorebot.types import Question
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def test_reindex_runs_recorded_sources_and_worker_hot_reloads(
    sample_data_dir, tmp_path, redis_server, redis_client, celery_worker_proc
):
    from ingest import Source
    from ingest.registry import load_sources, record_sources
    from lorebot.cli.ask import submit_question
    from lorebot.contracts import QUEUE_INGEST, TASK_REINDEX
    from workers.client import make_client

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text(
        "# Parking\n\nStaff parking is in the Heron garage. Each employee gets one parking permit, "
        "renewed every 11 months at the front desk.\n"
    )
    s = make_settings(data, redis_server.url)
    record_sources(s, [Source(docs, "facilities")])
    assert [src.collection for src in load_sources(s)] == ["facilities"]

    celery_worker_proc(data, redis_server.url, queues="answer,ingest")
    before = submit_question(
        s, Question(text="How many days of annual leave do I get?"), timeout=120
    )
    served = json.loads(next(iter(redis_client.hgetall("lorebot:workers:serving").values())))
    assert served["index"] == before.index_version
    assert int(redis_client.get("lorebot:index:documents")) == 18

    client = make_client(redis_server.url)
    result = client.send_task(
        TASK_REINDEX, kwargs={"collection": "facilities", "reply": None}, queue=QUEUE_INGEST
    ).get(timeout=300)
    assert result["status"] == "ok", result
    new_version = result["report"]["version"]
    assert new_version != before.index_version

    after = submit_question(
        s, Question(text="Where is staff parking?", collections=["facilities"]), timeout=120
    )
    assert after.index_version == new_version  # picked up between tasks, no restart
    assert after.citations and after.citations[0].source == "parking.md"
    assert int(redis_client.get("lorebot:index:documents")) == 19


def test_reindex_without_recorded_sources_says_how_to_fix(
    sample_data_dir, tmp_path, redis_server, celery_worker_proc
):
    from lorebot.contracts import QUEUE_INGEST, TASK_REINDEX
    from workers.client import make_client

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    celery_worker_proc(data, redis_server.url, queues="ingest")
    result = (
        make_client(redis_server.url)
        .send_task(
            TASK_REINDEX, kwargs={"collection": "nothing-here", "reply": None}, queue=QUEUE_INGEST
        )
        .get(timeout=120)
    )
    assert result["status"] == "failed"
    assert "lorebot ingest" in result["message"]


def test_reindex_on_a_real_worker_reports_its_stages_as_progress_states(
    sample_data_dir, tmp_path, redis_server, redis_client, celery_worker_proc
):
    """The console's job page reads PROGRESS states: a real re-index records them.

    The Redis result backend publishes every state it stores on the task's key, so the
    test subscribes before the task is sent and sees each state, however short the build.
    """
    import uuid

    from ingest import Source
    from ingest.registry import record_sources
    from lorebot.contracts import QUEUE_INGEST, TASK_REINDEX
    from workers.client import make_client

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"room-{i}.md").write_text(f"# Room {i}\n\nMeeting room {i} seats {i + 4}.\n")
    record_sources(make_settings(data, redis_server.url), [Source(docs, "facilities")])
    celery_worker_proc(data, redis_server.url, queues="ingest")

    task_id = str(uuid.uuid4())
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"celery-task-meta-{task_id}")
    try:
        result = (
            make_client(redis_server.url)
            .send_task(
                TASK_REINDEX,
                kwargs={"collection": "facilities", "reply": None},
                queue=QUEUE_INGEST,
                task_id=task_id,
            )
            .get(timeout=300)
        )
        assert result["status"] == "ok", result
        states: list[dict] = []
        deadline = time.monotonic() + 10
        # get_message answers None for the (ignored) subscribe confirmation too
        while not states or states[-1]["status"] != "SUCCESS":
            assert time.monotonic() < deadline, states
            if (msg := pubsub.get_message(timeout=0.5)) is not None:
                states.append(json.loads(msg["data"]))
    finally:
        pubsub.close()

    progress = [s["result"] for s in states if s["status"] == "PROGRESS"]
    assert progress, [s["status"] for s in states]
    stages = [p["stage"] for p in progress]
    assert "parse" in stages, stages
    assert all(isinstance(p["done"], int) and isinstance(p["total"], int) for p in progress)
    assert states[-1]["status"] == "SUCCESS"

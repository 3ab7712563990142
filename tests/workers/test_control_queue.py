"""An admin's adapter rollback is not stuck behind a long re-index (the control queue)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from lorebot import contracts
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def _promote(settings, version: str) -> None:
    from slm.training import registry

    vdir = registry.version_dir(settings, version)
    vdir.mkdir(parents=True)
    (vdir / registry.ADAPTER_FILE).write_bytes(b"GGUF not really")
    (vdir / registry.CARD_FILE).write_text(json.dumps({"version": version}))
    registry.promote(settings, version)


def test_rollback_answers_while_a_long_reindex_holds_the_ingest_worker(
    sample_data_dir, tmp_path, redis_server, redis_client, celery_worker_proc
):
    from ingest import Source
    from ingest.registry import record_sources
    from workers.client import make_client

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(400):  # a re-index that takes a while
        (docs / f"policy-{i:03d}.md").write_text(
            f"# Policy {i}\n\n"
            + " ".join(f"Rule {i}.{j}: badge {j} opens door {i * j}." for j in range(60))
        )
    s = make_settings(data, redis_server.url)
    record_sources(s, [Source(docs, "policies")])

    celery_worker_proc(data, redis_server.url, queues="ingest")
    celery_worker_proc(
        data,
        redis_server.url,
        queues="answer,control",
        LOREBOT_METRICS__WORKER_PORT="0",
    )
    _promote(s, "r1")
    client = make_client(redis_server.url)
    reindex = client.send_task(
        contracts.TASK_REINDEX,
        kwargs={"collection": "policies", "reply": None},
        queue=contracts.QUEUE_INGEST,
    )
    # running: STARTED, then PROGRESS as the build reports its stages
    running = ("STARTED", "PROGRESS")
    deadline = time.monotonic() + 60
    while reindex.state not in running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reindex.state in running

    # Sent the way /lorebot adapters rollback sends it: routed by contracts.TASK_QUEUES.
    rollback = client.send_task(
        contracts.TASK_ADAPTERS,
        kwargs={"action": "rollback", "version": None},
        queue=contracts.TASK_QUEUES[contracts.TASK_ADAPTERS],
    )
    result = rollback.get(timeout=30)
    assert result["current"] is None, result
    assert reindex.state in running  # still running: the rollback did not wait for it
    from slm.training.registry import current_version

    assert current_version(s) is None
    assert reindex.get(timeout=600)["status"] == "ok"

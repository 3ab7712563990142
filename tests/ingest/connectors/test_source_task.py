"""`lorebot.source_sync` on a real `ingest` worker against a real Redis: the task syncs a
Git source defined in the worker's settings and the index holds its documents."""

from __future__ import annotations

import pytest
from connector_helpers import indexed
from test_git import git

from lorebot import contracts
from tests.conftest import make_settings

# A worker start and a first build in it: about 40 s on the shared 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_source_sync_runs_on_the_ingest_queue(tmp_path, redis_server, celery_worker_proc):
    from workers.client import make_client

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "leave.md").write_text("# Leave\n\nStaff get 31 days of annual leave.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    env = {
        "LOREBOT_SOURCES__DEFINED__HB__KIND": "git",
        "LOREBOT_SOURCES__DEFINED__HB__URL": str(repo),
        "LOREBOT_SOURCES__DEFINED__HB__COLLECTION": "hr",
        "LOREBOT_INDEX__PARSE_WORKERS": "1",
    }
    data = tmp_path / "data"
    celery_worker_proc(data, redis_server.url, queues="ingest", **env)
    result = (
        make_client(redis_server.url)
        .send_task(contracts.TASK_SOURCE_SYNC, kwargs={"name": "hb"}, queue=contracts.QUEUE_INGEST)
        .get(timeout=300)
    )
    assert result["status"] == "ok", result
    (report,) = result["sources"]
    assert report["fetched"] == 1 and report["built"], report
    settings = make_settings(data, redis_server.url)
    assert set(indexed(settings)) == {"leave.md"}

"""The console's changes through a real `lorebot worker` (ingest and control queues).

The re-index and the promote / rollback go through the real gateway and Redis to a real
worker, as `/lorebot` does: the job page follows the task to its end, and the adapter
registry on disk is what changes.
"""

from __future__ import annotations

import time

import pytest

from tests.console.conftest import audit_lines, csrf_of, sign_in

pytestmark = pytest.mark.integration


def test_reindex_and_promote_rollback_through_a_real_worker(
    console_settings, redis_server, redis_client, celery_worker_proc
):
    from starlette.testclient import TestClient

    from console.app import build_app
    from slm.training import registry

    celery_worker_proc(
        console_settings.data_dir,
        redis_server.url,
        queues="ingest,control",
        LOREBOT_METRICS__WORKER_PORT="0",
    )
    app = build_app(console_settings, redis=redis_client)  # the real WorkerGateway
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        sign_in(c)
        token = csrf_of(c.get("/sources").text)
        r = c.post("/sources/reindex", data={"csrf_token": token, "collection": "eng"})
        job = r.headers["location"]
        deadline = time.monotonic() + 60
        while "data-done" not in (frag := c.get(job + "/fragment").text):
            assert time.monotonic() < deadline, frag
            time.sleep(0.3)
        # the seeded data dir records no source folder for eng: the worker says so, by name
        assert "SUCCESS" in frag and "no recorded sources for eng" in frag

        assert registry.current_version(console_settings) == "a20261201-020000-00a0"
        c.post(
            "/models/adapters",
            data={
                "csrf_token": token,
                "action": "promote",
                "version": "a20261201-020001-00a1",
                "confirm": "yes",
            },
        )
        assert registry.current_version(console_settings) == "a20261201-020001-00a1"
        assert "promoted a20261201-020001-00a1" in c.get("/models").text
        c.post(
            "/models/adapters", data={"csrf_token": token, "action": "rollback", "confirm": "yes"}
        )
        assert registry.current_version(console_settings) == "a20261201-020000-00a0"
        assert "rolled back to a20261201-020000-00a0" in c.get("/models").text
    done = [(e["action"], e["result"]) for e in audit_lines(console_settings)]
    assert ("adapters.promote", "ok") in done and ("adapters.rollback", "ok") in done

"""One refresh at a time: a renewed Redis lock that a killed run gives up by expiring."""

from __future__ import annotations

import time

from lorebot.contracts import QUEUE_CONTROL, TASK_ADAPTERS, TASK_QUEUES
from lorebot.contracts import REFRESH_LOCK as LOCK_KEY
from tests.conftest import make_settings
from workers.client import celery_config
from workers.tasks.refresh import RefreshLock, refresh_impl, refresh_time_limit_s


def _wait(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_second_holder_is_refused_until_release(redis_client):
    first, second = RefreshLock(redis_client, 30), RefreshLock(redis_client, 30)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
    assert not redis_client.exists(LOCK_KEY)


def test_lock_is_renewed_while_held(redis_client):
    lock = RefreshLock(redis_client, 3)
    assert lock.acquire()
    try:
        # Well past the 3 s expiry, the renewal thread has kept it alive.
        time.sleep(4.5)
        assert redis_client.exists(LOCK_KEY) and not lock.lost
    finally:
        lock.release()


def test_a_lost_lock_is_noticed(redis_client):
    lock = RefreshLock(redis_client, 3)
    assert lock.acquire()
    redis_client.delete(LOCK_KEY)  # expired while Redis was away, say
    assert _wait(lambda: lock.lost)
    lock.release()


def test_busy_while_another_run_holds_it_then_a_killed_holders_lock_expires(
    tmp_path, redis_server, redis_client
):
    s = make_settings(tmp_path / "data", redis_server.url)
    # A run that was SIGKILLed: its lock has nobody renewing it.
    redis_client.set(LOCK_KEY, "dead-run", px=1500)
    result = refresh_impl(s)
    assert result["status"] == "busy"
    assert _wait(lambda: not redis_client.exists(LOCK_KEY), timeout=5)
    # Now a run starts (and stops early: this data dir has no index).
    result = refresh_impl(s)
    assert result["status"] == "failed" and "no index" in result["message"]
    assert not redis_client.exists(LOCK_KEY)  # released after the failure


def test_visibility_timeout_exceeds_the_refresh_task_limit(tmp_path):
    from workers.app import create_app

    s = make_settings(tmp_path, training={"time_budget_s": 30000})
    app = create_app(s, warm=False)
    limit = refresh_time_limit_s(s)
    assert app.tasks["lorebot.refresh"].time_limit == limit
    assert app.conf.broker_transport_options["visibility_timeout"] > limit
    assert celery_config("redis://x")["broker_transport_options"]["visibility_timeout"] >= 6 * 3600
    # admin commands skip the training and ingest queues (a reindex must not block a rollback)
    assert TASK_QUEUES[TASK_ADAPTERS] == QUEUE_CONTROL

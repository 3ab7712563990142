"""contracts.SERVING does not grow one entry per worker restart: stale entries expire."""

from __future__ import annotations

import json
import os
import socket
import time
from types import SimpleNamespace

from lorebot import contracts, sync
from tests.conftest import make_settings


class _Index:
    version = "v1"

    def stats(self):
        return {"documents": 3}


def _runtime():
    return SimpleNamespace(_generator=SimpleNamespace(adapter=None))


def test_restarted_workers_do_not_pile_up_in_the_serving_hash(tmp_path, redis_server, redis_client):
    from workers.tasks.answer import announce

    settings = make_settings(tmp_path / "data", redis_server.url)
    old = time.time() - contracts.SERVING_TTL_S - 5
    # 200 restarts' worth of entries of processes that are gone.
    for pid in range(1000, 1200):
        redis_client.hset(
            contracts.SERVING, f"gone-host:{pid}", json.dumps({"index": "v0", "at": old})
        )
    runtime = _runtime()
    announce(settings, runtime, _Index())
    me = f"{socket.gethostname()}:{os.getpid()}"
    assert set(redis_client.hkeys(contracts.SERVING)) == {me.encode()}
    assert list(sync.serving_workers(settings)) == [me]

    # A live but idle worker keeps its entry fresh with the heartbeat.
    from workers.tasks.answer import heartbeat, withdraw

    entry = json.loads(redis_client.hget(contracts.SERVING, me))
    entry["at"] = old
    redis_client.hset(contracts.SERVING, me, json.dumps(entry))
    assert sync.serving_workers(settings) == {}  # readers skip stale entries
    heartbeat(settings, runtime)
    assert list(sync.serving_workers(settings)) == [me]

    # A clean exit removes the entry at once.
    withdraw(settings, runtime)
    assert redis_client.hlen(contracts.SERVING) == 0

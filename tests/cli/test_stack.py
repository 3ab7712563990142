"""The embedded redis-server: starts with AOF on, persists across a restart, errors clearly."""

from __future__ import annotations

import pytest

from lorebot.cli.stack import RedisServer, free_port, redis_ping, require_redis
from lorebot.errors import ServiceUnavailableError
from tests.conftest import make_settings


def test_embedded_redis_persists_with_aof(tmp_path):
    import redis

    port = free_port()
    with RedisServer(port, tmp_path) as server:
        r = redis.Redis.from_url(server.url)
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        r.set("k", "v")
        r.close()
    assert not redis_ping(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    with RedisServer(port, tmp_path) as server:
        assert redis.Redis.from_url(server.url).get("k") == b"v"


def test_port_in_use_gives_a_one_line_error(tmp_path):
    with RedisServer(free_port(), tmp_path / "a") as first:
        with pytest.raises(ServiceUnavailableError) as info:
            RedisServer(first.port, tmp_path / "b").start(timeout=5)
        assert "\n" not in info.value.message


def test_require_redis_names_the_setting(tmp_path):
    s = make_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ServiceUnavailableError) as info:
        require_redis(s)
    assert "LOREBOT_REDIS__URL" in info.value.fix
    embedded = make_settings(tmp_path, None, redis={"embedded_port": free_port()})
    with pytest.raises(ServiceUnavailableError) as info:
        require_redis(embedded)
    assert "lorebot up" in info.value.fix


def test_stop_process_group_kills_a_child_that_ignores_sigterm_and_its_group():
    import os
    import signal
    import subprocess
    import sys
    import time

    from lorebot.cli.stack import stop_process_group

    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "kid = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "print(kid.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    grandchild = int(proc.stdout.readline())
    started = time.monotonic()
    stop_process_group(proc, timeout=1.0)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10
    for _ in range(50):  # the grandchild got the group's SIGKILL too
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the grandchild outlived its group")

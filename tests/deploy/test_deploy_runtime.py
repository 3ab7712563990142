"""The deployment's runtime pieces against real processes: deploy/redis.conf in a real
redis-server, and the worker health probe (compose and Helm) against a real worker.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy._support import COMPOSE_FILE, DEPLOY, load_yaml

pytestmark = pytest.mark.integration


class ConfiguredRedis:
    """redis-server started from deploy/redis.conf, as compose and systemd start it."""

    def __init__(self, data_dir: Path, password: str | None = None) -> None:
        from lorebot import assets
        from lorebot.cli.stack import free_port

        self.port = free_port()
        self.password = password
        args = [
            str(assets.redis_server_binary()),
            str(DEPLOY / "redis.conf"),
            "--port",
            str(self.port),
            "--dir",
            str(data_dir),
            "--bind",
            "127.0.0.1",
        ]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def client(self):
        import redis

        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=2)

    def wait(self) -> ConfiguredRedis:
        import redis

        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fsync the AOF and exit, as `docker stop` does
            self.proc.wait(20)


def test_redis_conf_is_durable_and_never_evicts(tmp_path):
    server = ConfiguredRedis(tmp_path, password="s3cret").wait()
    try:
        c = server.client()
        assert c.config_get("appendonly")["appendonly"] == "yes"
        assert c.config_get("appendfsync")["appendfsync"] == "everysec"
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(c.config_get("maxmemory")["maxmemory"]) > 0
        # A client without the password is refused (raw RESP: redis-py would retry it).
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"PING\r\n")
            assert raw.recv(200).startswith(b"-NOAUTH")
        c.rpush("answer", "queued-question")
    finally:
        server.stop()

    # A restart keeps what was queued: the AOF is replayed.
    again = ConfiguredRedis(tmp_path, password="s3cret").wait()
    try:
        assert again.client().lrange("answer", 0, -1) == [b"queued-question"]
    finally:
        again.stop()


def _probe(argv: list[str], redis_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
    env["LOREBOT_REDIS__URL"] = redis_url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's
    return subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=60)


def test_worker_probe_tells_a_live_worker_from_a_missing_one(
    tmp_path, redis_server, celery_worker_proc
):
    """The compose health check (and the chart's identical probe) against a real worker:
    it passes while a worker of this host answers and fails once it is gone."""
    test = load_yaml(COMPOSE_FILE)["services"]["ingest-worker"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "lorebot", "health"]
    argv = [sys.executable, "-m", "lorebot", *test[2:]]
    # An ingest worker does not load the answer model, so it is ready in seconds.
    worker = celery_worker_proc(tmp_path / "data", redis_server.url, queues="ingest")
    ok = _probe(argv, redis_server.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "lorebot-ingest-" in ok.stdout
    worker.stop()
    missing = _probe(argv, redis_server.url)
    assert missing.returncode != 0, missing.stdout

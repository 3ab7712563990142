"""Shared fixtures: a real redis-server, settings in a temp data dir, the sample index,
and a real `lorebot worker` subprocess.

The suite blocks every non-loopback connection (pytest-socket, see pyproject.toml), and
every child process runs with the Hugging Face hub switched off, so a hidden download
fails loudly instead of passing on a machine that happens to be online.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every test's data dir (and every worker it starts) shares one folder of derived model
# files, so the embedder's int8 graph is exported once per run, not once per data dir.
if "LOREBOT_MODEL_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _models = tempfile.mkdtemp(prefix="lorebot-test-models-")
    os.environ["LOREBOT_MODEL_CACHE_DIR"] = _models
    atexit.register(shutil.rmtree, _models, ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(
        reason=f"{SHARED_DATA} is absent (real data lives beside the repository)"
    )
    for item in items:
        if "shared_data" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


# ----------------------------------------------------------------------------- redis
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port for the whole session."""
    from lorebot.cli.stack import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


# ----------------------------------------------------------------------------- settings
def make_settings(data_dir: Path, redis_url: str | None = None, **overrides):
    from lorebot.settings import Settings

    values = {"data_dir": data_dir, **overrides}
    if redis_url:
        values.setdefault("redis", {"url": redis_url})
    return Settings(**values)


@pytest.fixture()
def settings(tmp_path, redis_server):
    return make_settings(tmp_path / "data", redis_server.url)


# ----------------------------------------------------------------------------- sample index
@pytest.fixture(scope="session")
def embedder():
    from ingest.embed import Embedder

    return Embedder(None)


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory, embedder) -> Path:
    """A data dir holding an index of the shipped sample handbook (built once)."""
    from ingest import Source, build_index
    from lorebot import assets

    data_dir = tmp_path_factory.mktemp("sample-data")
    s = make_settings(data_dir)
    build_index(
        s,
        [Source(path=assets.sample_docs_dir(), collection="handbook")],
        progress=False,
        embedder=embedder,
    )
    return data_dir


# ----------------------------------------------------------------------------- worker
def child_env(data_dir: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
    env.update(
        LOREBOT_DATA_DIR=str(data_dir),
        LOREBOT_REDIS__URL=redis_url,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """`lorebot worker` as a real subprocess, with its log kept for failure messages."""

    def __init__(
        self, data_dir: Path, redis_url: str, log_path: Path, queues: str = "answer", **env: str
    ):
        self.log_path = log_path
        self.redis_url = redis_url
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lorebot", "worker", "--queues", queues, "--loglevel", "INFO"],
            env=child_env(data_dir, redis_url, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 180.0) -> WorkerProcess:
        from workers.client import make_client

        client = make_client(self.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            # The pool is ready once a child has loaded the model (it logs this).
            if "ready." in self.log() and client.control.ping(timeout=0.5):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        from lorebot.cli.stack import stop_process_group

        stop_process_group(self.proc, sig, timeout)
        self._log.close()


@pytest.fixture()
def celery_worker_proc(tmp_path):
    """Factory: start a real worker on (data_dir, redis_url); all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(data_dir: Path, redis_url: str, queues: str = "answer", **env: str) -> WorkerProcess:
        w = WorkerProcess(
            data_dir, redis_url, tmp_path / f"worker-{len(started)}.log", queues, **env
        )
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.stop()

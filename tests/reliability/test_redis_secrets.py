"""The embedded Redis has a password, and no process's command line shows it.

Any local user can read every process's argv (/proc/<pid>/cmdline, `ps`); a password
there is a password for everyone on the machine. `lorebot up` generates one into
<data_dir>/redis/password (0600), hands it to redis-server on its standard input, and
every lorebot process reads it from that file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import REPO, make_settings

pytestmark = pytest.mark.reliability


def command_lines() -> dict[int, str]:
    """pid -> command line of every process this user can see."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
    return out


def leaks(secret: str) -> dict[int, str]:
    return {
        pid: line
        for pid, line in command_lines().items()
        if secret in line or quote(secret, safe="") in line
    }


def raw_ping(port: int) -> bytes:
    """PING without credentials, in raw RESP (redis-py would retry it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(200)


def test_the_embedded_password_is_generated_private_and_not_in_argv(tmp_path):
    import redis

    from lorebot.cli.stack import RedisServer, embedded_password, free_port

    s = make_settings(tmp_path / "data", redis={"embedded_port": free_port()})
    assert s.redis.embedded_password() is None
    password = embedded_password(s)
    path = s.data_dir / "redis" / "password"
    assert len(password) == 64 and path.read_text().strip() == password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert embedded_password(s) == password  # generated once, then reused
    assert s.redis.effective_url == f"redis://:{password}@127.0.0.1:{s.redis.embedded_port}/0"

    with RedisServer(s.redis.embedded_port, s.data_dir / "redis", password=password) as server:
        assert raw_ping(server.port).startswith(b"-NOAUTH")
        assert redis.Redis.from_url(s.redis.effective_url).ping()
        assert leaks(password) == {}
        assert str(server.port) in command_lines()[server.proc.pid]


def test_a_password_file_left_readable_is_made_private(tmp_path):
    from lorebot.cli.stack import embedded_password

    s = make_settings(tmp_path / "data")
    path = s.data_dir / "redis" / "password"
    path.parent.mkdir(parents=True)
    path.write_text("abc123\n")
    path.chmod(0o644)
    assert embedded_password(s) == "abc123"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.slow
@pytest.mark.integration
def test_no_process_of_the_running_stack_shows_the_redis_password(tmp_path, sample_data_dir):
    """`lorebot up` with the bot: embedded Redis, answer and jobs workers, beat and the bot.
    Once all of them serve, no command line on the machine holds the password, nor does
    any stack process's environment, and Redis refuses a client without it."""
    import redis

    from lorebot.cli.stack import free_port, stop_process_group
    from tests.support.fake_slack import FakeSlack
    from workers.client import make_client

    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    port, http_port = free_port(), free_port()
    fake = FakeSlack().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
    env.update(
        LOREBOT_DATA_DIR=str(data),
        LOREBOT_REDIS__EMBEDDED_PORT=str(port),
        LOREBOT_SLACK__BOT_TOKEN="xoxb-test-token",
        LOREBOT_SLACK__SIGNING_SECRET="stack-signing-secret",
        LOREBOT_SLACK__API_URL=fake.api_url,
        LOREBOT_SLACK__HTTP_PORT=str(http_port),
        LOREBOT_SLACK__HTTP_HOST="127.0.0.1",
        LOREBOT_METRICS__WORKER_PORT="0",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - the child's whole life
    up = subprocess.Popen(
        [sys.executable, "-m", "lorebot", "up"],
        cwd=str(REPO),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    s = make_settings(data, redis={"embedded_port": port})
    try:
        deadline = time.monotonic() + 300
        ready: set[str] = set()
        while time.monotonic() < deadline and up.poll() is None:
            password = s.redis.embedded_password()
            if password and "workers" not in ready:
                try:
                    nodes = make_client(s.redis.effective_url).control.ping(timeout=1.0) or []
                except Exception:  # Redis still starting
                    nodes = []
                names = {name for reply in nodes for name in reply}
                if any("answer" in n for n in names) and any("ingest" in n for n in names):
                    ready.add("workers")
            if "bot" not in ready:
                try:
                    with socket.create_connection(("127.0.0.1", http_port), timeout=1):
                        ready.add("bot")
                except OSError:
                    pass
            if ready == {"workers", "bot"}:
                break
            time.sleep(1.0)
        assert ready == {"workers", "bot"}, (tmp_path / "up.log").read_text()[-3000:]

        password = s.redis.embedded_password()
        assert password and raw_ping(port).startswith(b"-NOAUTH")
        assert redis.Redis.from_url(s.redis.effective_url).ping()
        stack = [up.pid] + [
            p.pid for p in __import__("psutil").Process(up.pid).children(recursive=True)
        ]
        lines = command_lines()
        roles = " ".join(lines.get(pid, "") for pid in stack)
        for role in ("redis-server", "worker --queues answer", "worker --queues ingest", "beat"):
            assert role in roles, roles
        assert " bot" in roles, roles
        assert leaks(password) == {}
        for pid in stack:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            assert password.encode() not in environ, lines.get(pid)
        assert password not in (tmp_path / "up.log").read_text()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                stop_process_group(up, signal.SIGKILL)
        log.close()
        fake.stop()

"""No deployment puts the Redis password on a command line.

A process's argv is readable by every user of the host or node (/proc/<pid>/cmdline, `ps`,
`docker top`, `kubectl debug`). The compose file and the chart used to start Redis with
`--requirepass <password>` and to probe workers with `celery -b redis://:<password>@…`;
now Redis reads the password on its standard input and the probes are `lorebot health`,
which reads the URL from the environment.

The static checks always run; the runtime checks start the compose service's and the
chart's real Redis command lines with a local redis-server.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy._support import CHART, DEPLOY, SYSTEMD, load_yaml

PASSWORD = "d3pl0y-s3cret-4f1c9e"


def _argv_strings(compose: dict) -> list[tuple[str, str]]:
    """(where, text) of every command line compose runs: commands, entrypoints, checks."""
    found = []
    for name, svc in compose["services"].items():
        for key in ("command", "entrypoint"):
            for arg in svc.get(key) or []:
                found.append((f"{name}.{key}", arg))
        for arg in (svc.get("healthcheck") or {}).get("test") or []:
            found.append((f"{name}.healthcheck", arg))
    return found


def test_no_compose_command_line_carries_a_secret(compose):
    for where, arg in _argv_strings(compose):
        assert "--requirepass" not in arg, where
        assert not re.search(r"\$\{?(REDIS_PASSWORD|LOREBOT_REDIS__URL)", arg.split("<<")[0]), (
            f"{where} expands a secret into a command line: {arg}"
        )
        assert not re.search(r"\bcelery\b.*\s-b\b", arg), where


def test_no_chart_or_unit_command_line_carries_a_secret():
    values = load_yaml(CHART / "values.yaml")
    assert values["workerProbe"]["command"][:2] == ["lorebot", "health"]
    for path in [*CHART.rglob("*.yaml"), *SYSTEMD.rglob("*"), DEPLOY / "README.md"]:
        if not path.is_file():
            continue
        text = path.read_text()
        assert "--requirepass" not in text, path
        assert not re.search(r"celery[^\n]*\s-b\s", text), path


def _redis_binary() -> str:
    from lorebot import assets

    return str(assets.redis_server_binary())


def _start(script: str, tmp_path: Path, port: int) -> subprocess.Popen:
    """Run an entrypoint script with `docker-entrypoint.sh` and `redis-server` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "docker-entrypoint.sh"  # the image's entrypoint, reduced to its exec
    shim.write_text('#!/bin/sh\nexec "$@"\n')
    shim.chmod(0o755)
    link = bin_dir / "redis-server"
    if not link.exists():
        link.symlink_to(_redis_binary())
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDIS_PASSWORD": PASSWORD,
        "HOME": str(tmp_path),
    }
    return subprocess.Popen(
        ["sh", "-c", script],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def _check_running(proc: subprocess.Popen, port: int) -> None:
    import redis

    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=2)
    for _ in range(200):
        assert proc.poll() is None, f"redis exited with {proc.returncode}"
        try:
            if client.ping():
                break
        except redis.RedisError:
            time.sleep(0.05)
    else:
        raise AssertionError("redis did not answer")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(200).startswith(b"-NOAUTH")
    # `exec` made the shell's pid redis-server's: its command line is the one to check.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "redis-server" in cmdline
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert PASSWORD.encode() not in line, line


def _local(script: str, conf: str, tmp_path: Path, port: int) -> str:
    """The script with the container's config path replaced by ours plus a local port/dir."""
    assert conf in script
    return script.replace(conf, f"{DEPLOY / 'redis.conf'} --port {port} --dir {tmp_path}")


@pytest.mark.integration
def test_compose_redis_requires_the_password_without_it_in_argv(compose, tmp_path):
    from lorebot.cli.stack import free_port

    entry = compose["services"]["redis"]["entrypoint"]
    assert entry[:2] == ["sh", "-c"]
    port = free_port()
    # compose turns $$ into $ before the shell sees it
    script = _local(entry[2].replace("$$", "$"), "/usr/local/etc/redis/redis.conf", tmp_path, port)
    proc = _start(script, tmp_path, port)
    try:
        _check_running(proc, port)
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.integration
def test_chart_redis_requires_the_password_without_it_in_argv(tmp_path):
    from lorebot.cli.stack import free_port

    text = (CHART / "templates" / "redis.yaml").read_text()
    m = re.search(r'command: \["sh", "-c"\]\n\s+args:\n\s+- \|\n((?:\s{14}.*\n)+)', text)
    assert m, "the redis container runs sh -c with a block script"
    script = "\n".join(line[14:] for line in m.group(1).splitlines()) + "\n"
    port = free_port()
    proc = _start(_local(script, "/etc/redis/redis.conf", tmp_path, port), tmp_path, port)
    try:
        _check_running(proc, port)
    finally:
        proc.terminate()
        proc.wait(20)

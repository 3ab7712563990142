"""deploy/systemd: restart policies, hardening and stop timeouts always; the real
`systemd-analyze verify` where systemd is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy._support import SYSTEMD, WORKER_ROLES

SERVICES = (
    "lorebot-redis.service",
    "lorebot-worker@.service",
    "lorebot-beat.service",
    "lorebot-bot.service",
    "lorebot-console.service",
)


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> ordered (key, value) pairs; repeated keys kept (systemd allows them)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: not a key=value line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def last(section: list[tuple[str, str]], key: str) -> str | None:
    values = [v for k, v in section if k == key]
    return values[-1] if values else None


def seconds(value: str) -> int:
    total = 0
    for number, unit in re.findall(r"(\d+)\s*(min|h|s)?", value):
        total += int(number) * {"min": 60, "h": 3600, "s": 1, "": 1}[unit]
    return total


@pytest.mark.parametrize("name", SERVICES)
def test_unit_restarts_and_is_hardened(name):
    unit = parse_unit(SYSTEMD / name)
    service = unit["Service"]
    assert last(service, "Restart") == "on-failure"
    assert seconds(last(service, "RestartSec")) >= 1
    assert last(service, "User") == "lorebot"
    assert last(service, "NoNewPrivileges") == "yes"
    assert last(service, "ProtectSystem") == "strict"
    assert any(
        p.startswith("/var/lib/lorebot") for p in (last(service, "ReadWritePaths") or "").split()
    )
    assert last(service, "TimeoutStopSec")
    assert last(unit["Install"], "WantedBy") == "lorebot.target"
    assert last(unit["Unit"], "PartOf") == "lorebot.target"
    if name != "lorebot-redis.service":
        assert last(service, "EnvironmentFile") == "/etc/lorebot/lorebot.env" or (
            "/etc/lorebot/lorebot.env" in [v for k, v in service if k == "EnvironmentFile"]
        )
        assert ("Environment", "LOREBOT_DATA_DIR=/var/lib/lorebot") in service


def test_worker_template_shuts_down_warm():
    from lorebot.settings import TrainingSettings, WorkerSettings

    service = parse_unit(SYSTEMD / "lorebot-worker@.service")["Service"]
    # SIGTERM to Celery's main process only; children are killed only after the timeout.
    assert last(service, "KillMode") == "mixed"
    assert last(service, "ExecStart").endswith("worker --queues %i")
    assert (
        seconds(last(service, "TimeoutStopSec"))
        > WorkerSettings.model_fields["task_timeout_s"].default
    )

    train = parse_unit(SYSTEMD / "lorebot-worker@train.service.d" / "lorebot.conf")["Service"]
    assert next(v for k, v in train if k == "ExecStart") == "", "the drop-in must reset ExecStart"
    assert last(train, "ExecStart").endswith("worker --queues train --concurrency 1")
    assert (
        seconds(last(train, "TimeoutStopSec"))
        > TrainingSettings.model_fields["time_budget_s"].default
    )

    ingest = parse_unit(SYSTEMD / "lorebot-worker@ingest.service.d" / "lorebot.conf")["Service"]
    assert last(ingest, "ExecStart").endswith("worker --queues ingest --concurrency 1")


def test_console_unit_takes_its_hash_from_the_environment_file():
    service = parse_unit(SYSTEMD / "lorebot-console.service")["Service"]
    assert last(service, "ExecStart") == "/opt/lorebot/venv/bin/lorebot console"
    assert "/etc/lorebot/lorebot.env" in [v for k, v in service if k == "EnvironmentFile"]
    assert not any("PASSWORD" in v or "argon2" in v for _, v in service)
    # the same Redis URL as every other unit: the shared environment file, nothing of its own
    assert not any(v.startswith("LOREBOT_REDIS__") for k, v in service if k == "Environment")
    text = (SYSTEMD / "lorebot.env.example").read_text()
    assert "#LOREBOT_CONSOLE__PASSWORD_HASH='$argon2id$" in text


def test_env_example_points_at_local_redis():
    text = (SYSTEMD / "lorebot.env.example").read_text()
    assert re.search(r"^LOREBOT_REDIS__URL=redis://127\.0\.0\.1:6379/0$", text, re.MULTILINE)
    assert "xoxb-replace-me" in text


def test_redis_unit_uses_the_shared_config():
    service = parse_unit(SYSTEMD / "lorebot-redis.service")["Service"]
    assert "/etc/lorebot/redis.conf --dir /var/lib/lorebot/redis" in last(service, "ExecStart")


# ----------------------------------------------------------------------------- systemd-analyze
def _verify(unit_dir: Path, units: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=unit_dir,
        timeout=120,
    )


@pytest.fixture()
def unit_dir(tmp_path):
    """The units with their programs replaced by a stub, since verify checks they exist."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    stub = tmp_path / "bin" / "stub"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    out = tmp_path / "units"
    shutil.copytree(SYSTEMD, out)
    for path in out.rglob("*"):
        if path.suffix in (".service", ".conf"):
            text = path.read_text()
            text = text.replace("/opt/lorebot/venv/bin/lorebot", str(stub)).replace(
                "/usr/bin/redis-server", str(stub)
            )
            path.write_text(text)
    return out


def test_systemd_analyze_verify_is_clean(unit_dir):
    units = [
        "lorebot.target",
        "lorebot-redis.service",
        "lorebot-bot.service",
        "lorebot-beat.service",
        "lorebot-console.service",
    ]
    units += [f"lorebot-worker@{role}.service" for role in WORKER_ROLES]
    out = _verify(unit_dir, units)
    # verify exits 0 on unknown keys and bad values, only warning: treat any output as failure.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), (
        out.stdout + out.stderr
    )


def test_systemd_analyze_catches_a_broken_unit(unit_dir):
    bad = unit_dir / "lorebot-bot.service"
    bad.write_text(bad.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    out = _verify(unit_dir, ["lorebot-bot.service"])
    assert "sometimes" in out.stderr and "lorebot-bot.service" in out.stderr

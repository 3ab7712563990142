"""Shared helpers for the deployment checks: paths, YAML loading, the compose CLI.

No Docker engine, cluster or systemd runs here: these tests check what can be checked
without one (the files parse, name every role, and use commands the CLI accepts), and use
real tools where they are installed (Compose CLI, Helm's Go library, systemd-analyze).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
CHART = DEPLOY / "helm" / "lorebot"
SYSTEMD = DEPLOY / "systemd"

#: The lorebot services of the compose file, and the worker roles everywhere.
COMPOSE_ROLES = {
    "redis",
    "bot",
    "answer-worker",
    "ingest-worker",
    "train-worker",
    "beat",
    "console",
    "flower",
}
WORKER_ROLES = ("answer", "ingest", "train")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def compose_cli() -> list[str] | None:
    """A Compose v2+ command line (`docker compose` or a standalone `docker-compose`), or None.

    Compose v1 (the Python one) is not accepted: it reads the file differently.
    """
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for exe in (
        shutil.which("docker-compose"),
        str(Path(sys.executable).parent / "docker-compose"),
    ):
        if exe and Path(exe).is_file():
            candidates.append([exe])
    for cmd in candidates:
        try:
            out = subprocess.run(
                cmd + ["version"], check=False, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r"v?(\d+)\.\d+", out.stdout)
        if out.returncode == 0 and m and int(m.group(1)) >= 2:
            return cmd
    return None


def shell_command(compose_test: list[str]) -> str:
    """The shell line of a compose CMD-SHELL healthcheck, with compose's $$ escapes undone."""
    assert compose_test[0] == "CMD-SHELL", compose_test
    return compose_test[1].replace("$$", "$")

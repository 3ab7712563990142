"""Every `lorebot ...` command line that a deployment artifact runs is one the CLI accepts.

Compose services, the Helm chart's containers, the systemd units and the image's default
command are all collected and parsed by the real CLI (with --help appended, so nothing
starts). A renamed command or option fails here instead of in production.
"""

from __future__ import annotations

import re
import shlex

import pytest
from typer.testing import CliRunner

from lorebot.cli import app
from tests.deploy._support import CHART, COMPOSE_FILE, REPO, SYSTEMD, WORKER_ROLES, load_yaml


def compose_commands() -> list[list[str]]:
    services = load_yaml(COMPOSE_FILE)["services"]
    cmds = [svc["command"] for name, svc in services.items() if name not in ("redis", "flower")]
    for svc in services.values():  # health checks that run lorebot (CMD lorebot ...)
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:2] == ["CMD", "lorebot"]:
            cmds.append(test[2:])
    return cmds


def helm_commands() -> list[list[str]]:
    values = load_yaml(CHART / "values.yaml")
    cmds = [["bot"], ["beat"]]
    probe = values["workerProbe"]["command"]
    assert probe[0] == "lorebot"
    cmds.append(probe[1:])
    for role in WORKER_ROLES:
        w = values["workers"][role]
        cmds.append(["worker", "--queues", w["queues"], "--concurrency", str(w["concurrency"])])
    text = (CHART / "templates" / "workers.yaml").read_text()
    assert (
        'args: ["worker", "--queues", {{ $w.queues | quote }}, "--concurrency", {{ '
        "$w.concurrency | quote }}]" in text
    )
    return cmds


def systemd_commands() -> list[list[str]]:
    cmds = []
    for unit in sorted(SYSTEMD.rglob("*")):
        if unit.suffix not in (".service", ".conf"):
            continue
        for line in unit.read_text().splitlines():
            m = re.fullmatch(r"ExecStart=/opt/lorebot/venv/bin/lorebot (.+)", line.strip())
            if m:
                for instance in WORKER_ROLES:
                    cmds.append(shlex.split(m.group(1).replace("%i", instance)))
    return cmds


def image_default_command() -> list[str]:
    cmd = re.findall(r"^CMD (\[.*\])$", (REPO / "Dockerfile").read_text(), re.MULTILINE)[-1]
    return [a.strip().strip('"') for a in cmd.strip("[]").split(",")]


def all_commands() -> list[tuple[str, list[str]]]:
    found = [("compose", c) for c in compose_commands()]
    found += [("helm", c) for c in helm_commands()]
    found += [("systemd", c) for c in systemd_commands()]
    found.append(("Dockerfile CMD", image_default_command()))
    return found


def test_every_artifact_contributes_commands():
    sources = {src for src, _ in all_commands()}
    assert sources == {"compose", "helm", "systemd", "Dockerfile CMD"}
    roles = {tuple(cmd[:1]) for _, cmd in all_commands()}
    assert {("bot",), ("beat",), ("worker",)} <= roles


@pytest.mark.parametrize(
    "source,argv", all_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_cli_accepts_command(source, argv):
    result = CliRunner().invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, (
        f"{source}: `lorebot {' '.join(argv)}` is rejected:\n{result.output}"
    )


def test_cli_rejects_an_unknown_option():
    """The check above can fail: a bad option is refused by the same parser."""
    result = CliRunner().invoke(app, ["worker", "--queue-names", "answer", "--help"])
    assert result.exit_code != 0

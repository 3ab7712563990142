"""`lorebot source add|list|remove|sync` through the real entry point: secrets only by
reference, one-line errors, and the settings-defined sources beside the added ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(args, data_dir: Path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("LOREBOT_")}
    e.update(LOREBOT_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "lorebot", "source", *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=data_dir.parent,
    )


def test_add_list_remove_and_errors(tmp_path, monkeypatch):
    from ingest.connectors.sync import add_source, remove_source
    from lorebot.errors import ConfigError
    from lorebot.settings import SourceConfig

    data = tmp_path / "data"
    env = {
        "LOREBOT_SOURCES__DEFINED__WIKI__KIND": "web",
        "LOREBOT_SOURCES__DEFINED__WIKI__URL": "https://wiki.example.org/handbook/",
        "LOREBOT_SOURCES__DEFINED__WIKI__COLLECTION": "handbook",
        "LOREBOT_SOURCES__DEFINED__WIKI__SECRET": "wiki-password-never-shown",
        "LOREBOT_SOURCES__DEFINED__WIKI__SCHEDULE": "0 * * * *",
    }
    added = run(
        [
            "add", "docs", "--kind", "git", "--url", str(tmp_path / "no-such-repo"),
            "--collection", "eng", "--username", "bot", "--secret-env", "DOCS_GIT_TOKEN",
            "--route", "hr/=hr", "--schedule", "*/30 * * * *",
        ],
        data,
        **env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    stored = (data / "connectors" / "sources.json").read_text()
    assert "DOCS_GIT_TOKEN" in stored and "wiki-password" not in stored

    listed = run(["list", "--json"], data, **env)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["docs"]["defined_in"] == "cli" and rows["docs"]["routes"] == {"hr/": "hr"}
    assert rows["wiki"]["defined_in"] == "settings" and rows["wiki"]["schedule"] == "0 * * * *"
    assert "wiki-password-never-shown" not in listed.stdout + listed.stderr

    from lorebot.settings import load_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOREBOT_DATA_DIR", str(data))
    settings = load_settings()
    assert settings.public_dict()["sources"]["defined"]["wiki"]["secret"] == "********"

    # No option takes a secret's value; a duplicate name and a web source without a URL
    # are one-line errors.
    out = run(["add", "x", "--kind", "git", "--collection", "eng", "--secret", "s3cr3t"], data)
    assert out.returncode != 0 and "No such option" in out.stderr
    with pytest.raises(ConfigError, match="exists already"):
        add_source(settings, "docs", SourceConfig(kind="git", url="/tmp/r", collection="eng"))
    bad = run(["add", "site", "--kind", "web", "--collection", "eng"], data)
    assert bad.returncode == 2 and "needs `url`" in bad.stderr and "Traceback" not in bad.stderr

    # A sync that cannot reach the repository: one line, the state says why.
    failed = run(["sync", "docs"], data, DOCS_GIT_TOKEN="tok-never-shown")
    assert failed.returncode == 1 and "git fetch failed" in failed.stderr
    assert "tok-never-shown" not in failed.stderr
    shown = json.loads(run(["show", "docs"], data).stdout)
    assert "git fetch failed" in shown["last_error"] and shown["documents"] == 0

    remove_source(settings, "docs")
    assert "docs" not in json.loads((data / "connectors" / "sources.json").read_text())
    assert not (data / "connectors" / "docs").exists()
    missing = run(["remove", "docs"], data)
    assert missing.returncode == 2 and "no source named docs" in missing.stderr


@pytest.mark.parametrize("secret_from", ["env", "file"])
def test_secrets_are_read_at_sync_time(tmp_path, monkeypatch, secret_from):
    from ingest.connectors.base import resolve_secret
    from lorebot.errors import ConfigError
    from lorebot.settings import SourceConfig

    if secret_from == "env":
        cfg = SourceConfig(kind="web", url="https://x.org/", collection="c", secret_env="X_TOK")
        with pytest.raises(ConfigError, match="X_TOK is not set"):
            resolve_secret(cfg, "x")
        monkeypatch.setenv("X_TOK", "value-1")
    else:
        path = tmp_path / "tok"
        cfg = SourceConfig(kind="web", url="https://x.org/", collection="c", secret_file=path)
        with pytest.raises(ConfigError, match="cannot read the secret file"):
            resolve_secret(cfg, "x")
        path.write_text("value-1\n")
    assert resolve_secret(cfg, "x").get_secret_value() == "value-1"

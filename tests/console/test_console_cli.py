"""`lorebot console` and `lorebot console hash-password` as real subprocesses."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, child_env


def _lorebot(args, tmp_path, stdin: str = "", **env):
    return subprocess.run(
        [sys.executable, "-m", "lorebot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=child_env(tmp_path / "data", "redis://127.0.0.1:1/0", **env),
    )


def test_hash_password_reads_stdin_and_prints_an_argon2_hash_that_verifies():
    from typer.testing import CliRunner

    from console.auth import PasswordCheck
    from lorebot.cli import app

    out = CliRunner().invoke(app, ["console", "hash-password"], input="s3cret pass\n")
    assert out.exit_code == 0, out.output
    digest = out.stdout.strip().splitlines()[0]
    assert digest.startswith("$argon2id$")
    assert PasswordCheck("admin", digest).verify("admin", "s3cret pass")
    assert not PasswordCheck("admin", digest).verify("admin", "s3cret pas")


def test_console_without_a_way_to_sign_in_is_one_line_and_exit_2(tmp_path):
    out = _lorebot(["console"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: the console has no way to sign in (fix: set LOREBOT_CONSOLE__PASSWORD_HASH "
        "(lorebot console hash-password) or console.oidc_issuer)"
    ]


def test_a_password_hash_that_is_not_argon2_is_refused_at_start(tmp_path, monkeypatch):
    import pytest

    from lorebot.errors import ConfigError
    from lorebot.settings import load_settings

    monkeypatch.setenv("LOREBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOREBOT_CONSOLE__PASSWORD_HASH", "plaintext")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    line = info.value.one_line()
    assert "console.password_hash" in line and "argon2" in line
    assert "plaintext" not in line

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


def test_lorebot_console_serves_sign_in_only(tmp_path, password_hash):
    import time

    import requests

    from lorebot.cli.stack import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorebot", "console", "--port", str(port)],
        cwd=REPO,
        env=child_env(
            tmp_path / "data", "redis://127.0.0.1:1/0", LOREBOT_CONSOLE__PASSWORD_HASH=password_hash
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        r = requests.get(base + "/", allow_redirects=False, timeout=5)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
        assert "server" not in r.headers
        assert requests.get(base + "/login", timeout=5).headers["x-frame-options"] == "DENY"
        assert requests.post(base + "/sources/reindex", timeout=5).status_code == 401
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 411")
    finally:
        proc.terminate()
        proc.wait(20)


def test_lorebot_up_supervises_the_console_only_when_enabled(tmp_path, password_hash):
    import pytest

    from lorebot.cli.stack import Stack
    from lorebot.errors import ConfigError
    from tests.conftest import make_settings

    def names(**console):
        s = make_settings(tmp_path / "data", "redis://127.0.0.1:1/0", console=console)
        return {c.name: c for c in Stack(s, bot=False).children}

    assert "console" not in names()
    assert "console" not in names(enabled=False, password_hash=password_hash)
    child = names(enabled=True, password_hash=password_hash)["console"]
    assert child.argv[-1] == "console" and child.argv[-2] == "lorebot"
    # the hash reaches it as a setting, never in argv
    assert not any("argon2" in a or password_hash in a for a in child.argv)
    s = make_settings(tmp_path / "data", "redis://127.0.0.1:1/0", console={"enabled": True})
    assert "console" not in {c.name for c in Stack(s, bot=False, console=False).children}
    with pytest.raises(ConfigError) as info:
        Stack(s, bot=False)
    assert "no way to sign in" in info.value.one_line()

"""Promise 8: bad configuration stops a process at start-up with one line naming the
setting, a non-zero exit, and nothing left running.

The CLI's other one-line errors (missing model file, unreachable Redis for `ask`, bad
values) are in tests/cli/test_cli_errors.py; this adds the long-running entry
points (worker, bot, ingest) and checks that no process of theirs survives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lorebot.cli.stack import free_port
from tests.cli.test_cli_errors import assert_one_line_error
from tests.conftest import child_env

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

DOCS = Path(__file__).resolve().parents[1] / "fixtures" / "ingest" / "docs"


def start(args: list[str], data_dir: Path, redis_url: str | None = None, **env: str):
    """Run `lorebot ARGS` in a session of its own; return the result and its survivors."""
    e = child_env(data_dir, redis_url or f"redis://127.0.0.1:{free_port()}/0", **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorebot", *args],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"`lorebot {' '.join(args)}` kept running: {err[-2000:]}") from None
    time.sleep(0.2)
    survivors = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != proc.pid and os.getsid(p.pid) == proc.pid:
                survivors.append(p.info["cmdline"])
        except (ProcessLookupError, psutil.Error):
            continue
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), survivors


def check(result, survivors, *needles: str) -> None:
    completed = result
    assert_one_line_error(completed, *needles)
    assert survivors == [], f"processes left running: {survivors}"


def test_bot_without_tokens(tmp_path, redis_server):
    check(*start(["bot"], tmp_path / "data", redis_server.url), "LOREBOT_SLACK__BOT_TOKEN")


def test_bot_with_a_bot_token_but_no_transport(tmp_path, redis_server):
    out = start(["bot"], tmp_path / "data", redis_server.url, LOREBOT_SLACK__BOT_TOKEN="xoxb-1")
    check(*out, "LOREBOT_SLACK__APP_TOKEN", "LOREBOT_SLACK__SIGNING_SECRET")


def test_bot_with_wrong_redis_url(tmp_path):
    out = start(
        ["bot"],
        tmp_path / "data",
        None,
        LOREBOT_SLACK__BOT_TOKEN="xoxb-1",
        LOREBOT_SLACK__SIGNING_SECRET="s",
    )
    check(*out, "not reachable", "LOREBOT_REDIS__URL")


def test_worker_with_wrong_redis_url(tmp_path):
    check(*start(["worker"], tmp_path / "data"), "cannot reach Redis", "LOREBOT_REDIS__URL")


def test_worker_with_a_malformed_redis_url(tmp_path):
    out = start(["worker"], tmp_path / "data", None, LOREBOT_REDIS__URL="http://127.0.0.1:6379")
    check(*out, "redis.url", "LOREBOT_REDIS__URL")


def test_worker_with_a_model_that_is_not_gguf(tmp_path, redis_server):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>a download error page, not a model</html>")
    out = start(["worker"], tmp_path / "data", redis_server.url, LOREBOT_MODEL__PATH=str(bad))
    check(*out, "not a GGUF file", "LOREBOT_MODEL__PATH")


def test_worker_with_a_truncated_model(tmp_path, redis_server):
    """A GGUF header with the tensors cut off: before the fix the worker ran, unable to answer."""
    from lorebot import assets

    real = assets.answer_model_path(None)
    cut = tmp_path / "cut.gguf"
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(4 * 1024 * 1024))
    out = start(["worker"], tmp_path / "data", redis_server.url, LOREBOT_MODEL__PATH=str(cut))
    check(*out, "cannot load", "LOREBOT_MODEL__PATH")


def test_worker_with_a_model_path_that_is_a_directory(tmp_path, redis_server):
    out = start(["worker"], tmp_path / "data", redis_server.url, LOREBOT_MODEL__PATH=str(tmp_path))
    check(*out, "LOREBOT_MODEL__PATH")


def test_worker_with_an_unusable_data_dir(tmp_path, redis_server):
    """The data dir's parent is a file: before the fix the worker started and logged tracebacks."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = start(["worker"], blocker / "data", redis_server.url)
    check(*out, "not writable", "LOREBOT_DATA_DIR")


@pytest.fixture()
def full_disk(tmp_path):
    """A 256 KiB tmpfs, nearly filled; skipped where mounting is not allowed."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (mnt / "filler").write_bytes(b"\0" * 200 * 1024)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_ingest_on_a_full_disk(full_disk, tmp_path):
    """Before the fix: a sqlite3 traceback. Now: one line naming the data dir; nothing
    half-built."""
    out = start(["ingest", str(DOCS)], full_disk / "data")
    check(*out, "is full", "LOREBOT_DATA_DIR")
    index = full_disk / "data" / "index"
    assert not (index / "CURRENT").exists()
    assert not any((index / "tmp").iterdir()) if (index / "tmp").exists() else True

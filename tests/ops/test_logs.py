"""Structured logs with question context, and secrets that never reach a log line.

The secrets are logged on purpose, through the real logging setup (lorebot.logs.setup,
the one `lorebot` calls), from real modules' loggers, in messages, arguments, tracebacks
and extra fields, and through the CLI's error path in a subprocess; every captured line
is then scanned for them, in text and in JSON mode.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading

import pytest

from lorebot import logs
from tests.conftest import child_env, make_settings

BOT_TOKEN = "xoxb-9876543210-1234567890-AbCdEfGhIjKlMnOp"
APP_TOKEN = "xapp-1-A0123456789-1234567890-0a1b2c3d4e5f"
SIGNING_SECRET = 'f00dfacec0ffee"quoted\\secret'  # JSON would escape " and \
REDIS_PASSWORD = "r3d1s-Pa55word"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TEACHER_KEY = "sk-teacher-0123456789abcdef"
SECRETS = (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, REDIS_PASSWORD, S3_SECRET, TEACHER_KEY)


def secret_settings(tmp_path, as_json: bool, redis_port: int = 6390):
    return make_settings(
        tmp_path / "data",
        f"redis://lorebot:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
        slack={"bot_token": BOT_TOKEN, "app_token": APP_TOKEN, "signing_secret": SIGNING_SECRET},
        sync={
            "url": "s3://bucket/prefix",
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": S3_SECRET,
        },
        training={"teacher_api_key": TEACHER_KEY},
        logging={"json": as_json, "level": "DEBUG"},
    )


@pytest.fixture()
def captured():
    """Restores the root logger after a test replaced its handler."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret
        assert json.dumps(secret)[1:-1] not in text, secret


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_secrets_logged_on_purpose_never_appear(tmp_path, captured, as_json):
    from workers import app as worker_app

    settings = secret_settings(tmp_path, as_json)
    out = io.StringIO()
    logs.setup(settings, stream=out)
    log = worker_app.log  # a real module's logger
    with logs.bind(question_id="q-123", channel="C42"):
        log.info("settings at start: %s", settings)
        log.info("redis %s", settings.redis.url)
        log.warning(f"slack tokens {BOT_TOKEN} {APP_TOKEN} secret {SIGNING_SECRET}")
        log.debug("dump %r", settings.model_dump())
        logging.getLogger("slack_bolt.App").info("Authorization: Bearer %s", BOT_TOKEN)
        logging.getLogger("celery.app.trace").info("broker %s", settings.redis.effective_url)
        log.info("teacher key %s, s3 secret %s", TEACHER_KEY, S3_SECRET, extra={"token": BOT_TOKEN})
        try:
            raise ConnectionError(
                f"AUTH failed for redis://:{REDIS_PASSWORD}@10.0.0.5:6379 with {SIGNING_SECRET}"
            )
        except ConnectionError:
            log.exception("question failed")
        # A token of another workspace, never configured: caught by its shape.
        log.info("foreign token xoxp-5555-6666-7777-abcdefabcdef and xoxe.xoxp-1-ignored")
    text = out.getvalue()
    assert text.count("\n") >= 9
    assert_clean(text)
    assert "xoxp-5555" not in text
    assert "********" in text
    assert "redis://lorebot:********@127.0.0.1" in text
    if as_json:
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert all(d["question_id"] == "q-123" and d["channel"] == "C42" for d in lines)
        failed = next(d for d in lines if d["message"] == "question failed")
        assert "ConnectionError" in failed["exc_info"] and failed["level"] == "ERROR"
        assert next(d for d in lines if "teacher key" in d["message"])["token"] == "********"
    else:
        assert "Traceback" in text and "[question_id=q-123 channel=C42]" in text


def test_context_is_per_task_and_does_not_leak(tmp_path, captured):
    out = io.StringIO()
    logs.setup(make_settings(tmp_path / "d", logging={"json": True}), stream=out)
    log = logging.getLogger("workers.app")
    seen: list[dict] = []

    def other_thread() -> None:
        log.info("from another thread")

    with logs.bind(question_id="q-1", channel="C1"):
        logs.update(index_version="v1", adapter_version="base")
        log.info("inside")
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    log.info("after")
    seen = [json.loads(line) for line in out.getvalue().splitlines()]
    inside, other, after = seen
    assert (
        inside["question_id"] == "q-1"
        and inside["index_version"] == "v1"
        and inside["adapter_version"] == "base"
    )
    assert "question_id" not in other and "question_id" not in after


def test_fields_added_outside_a_task_do_not_stick_to_later_lines(tmp_path, captured):
    # A task body run in-process without its bind block (a test, a script) must not leave
    # its versions on every later line of the thread.
    out = io.StringIO()
    logs.setup(make_settings(tmp_path / "d", logging={"json": True}), stream=out)
    log = logging.getLogger("workers.app")
    logs.update(index_version="v-stale", adapter_version="base")
    with logs.bind(question_id="q-2"):
        logs.update(index_version="v2")
        log.info("inside")
    log.info("after")
    inside, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["index_version"] == "v2" and inside["question_id"] == "q-2"
    assert "adapter_version" not in inside
    assert "index_version" not in after and "question_id" not in after


@pytest.mark.parametrize("as_json", ["false", "true"], ids=["text", "json"])
def test_cli_error_path_masks_the_redis_password(tmp_path, as_json):
    """`lorebot bot` with tokens set and a password Redis it cannot reach: one line, no secret."""
    from lorebot.cli.stack import free_port

    port = free_port()  # nothing listens there
    env = child_env(
        tmp_path / "data",
        f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
        LOREBOT_SLACK__BOT_TOKEN=BOT_TOKEN,
        LOREBOT_SLACK__SIGNING_SECRET=SIGNING_SECRET,
        LOREBOT_LOGGING__JSON=as_json,
        LOREBOT_LOGGING__LEVEL="DEBUG",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lorebot", "bot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "is not reachable" in text and "redis://:********@127.0.0.1" in text
    assert_clean(text)

"""Bad input at the command line: one line naming the problem and the fix, a non-zero
exit, no traceback, and nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lorebot.cli.stack import free_port
from tests.conftest import child_env

pytestmark = pytest.mark.integration


def run(args, data_dir: Path, redis_url: str | None = None, **env):
    e = child_env(data_dir, redis_url or f"redis://127.0.0.1:{free_port()}/0", **env)
    return subprocess.run(
        [sys.executable, "-m", "lorebot", *args], env=e, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(out, *needles):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr
    joined = " ".join(out.stderr.split())  # rich may wrap the line on narrow terminals
    for needle in needles:
        assert needle in joined, out.stderr


def test_ingest_missing_path(tmp_path):
    out = run(["ingest", str(tmp_path / "nope")], tmp_path / "data")
    assert_one_line_error(out, "does not exist")
    assert not (tmp_path / "data" / "index" / "CURRENT").exists()


def test_unknown_command_and_option_are_usage_errors_not_tracebacks(tmp_path):
    for args in (["nosuchcmd"], ["ask", "--nope", "hi"]):
        out = run(args, tmp_path / "data")
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
        assert "Error: No such" in out.stderr and "--help" in out.stderr


def test_ingest_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = run(["ingest", str(tmp_path / "empty")], tmp_path / "data")
    assert_one_line_error(out, "fix:")
    assert not (tmp_path / "data" / "index" / "CURRENT").exists()


def test_ask_with_redis_unreachable(tmp_path):
    out = run(["ask", "How many days of leave?"], tmp_path / "data")
    assert_one_line_error(out, "cannot reach Redis", "LOREBOT_REDIS__URL")


def test_ask_with_embedded_redis_not_running(tmp_path):
    e = child_env(tmp_path / "data", "x")
    e.pop("LOREBOT_REDIS__URL")
    e["LOREBOT_REDIS__EMBEDDED_PORT"] = str(free_port())
    out = subprocess.run(
        [sys.executable, "-m", "lorebot", "ask", "hi"],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(out, "lorebot up")


def test_ask_with_no_worker(tmp_path, redis_server):
    out = run(["ask", "How many days of leave?"], tmp_path / "data", redis_server.url)
    assert_one_line_error(out, "no lorebot worker is running")


def test_empty_question(tmp_path, redis_server):
    out = run(["ask", "   "], tmp_path / "data", redis_server.url)
    assert_one_line_error(out, "empty")


def test_no_index_yet_is_reported_by_the_worker(tmp_path, redis_server, celery_worker_proc):
    data = tmp_path / "data"
    celery_worker_proc(data, redis_server.url)
    out = run(["ask", "How many days of leave?"], data, redis_server.url)
    assert_one_line_error(out, "lorebot ingest")


def test_model_file_missing(tmp_path, redis_server):
    out = run(
        ["worker"],
        tmp_path / "data",
        redis_server.url,
        LOREBOT_MODEL__PATH=str(tmp_path / "missing.gguf"),
    )
    assert_one_line_error(out, "missing.gguf", "LOREBOT_MODEL__PATH")


def test_model_file_corrupt_is_a_doctor_problem(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    out = run(["doctor", "--no-services"], tmp_path / "data", LOREBOT_MODEL__PATH=str(bad))
    assert out.returncode == 1
    assert "not a GGUF file" in " ".join(out.stdout.split())


def test_bad_setting_names_the_variable(tmp_path):
    out = run(["config"], tmp_path / "data", LOREBOT_MODEL__N_THREADS="zero")
    assert_one_line_error(out, "model.n_threads", "LOREBOT_MODEL__N_THREADS")
    assert out.returncode == 2


def test_config_masks_secrets(tmp_path):
    out = run(["config", "--json"], tmp_path / "data", LOREBOT_SLACK__BOT_TOKEN="xoxb-123-secret")
    assert out.returncode == 0
    assert "xoxb-123-secret" not in out.stdout and "********" in out.stdout


def test_health_exit_codes(tmp_path, redis_server, celery_worker_proc):
    down = run(["health"], tmp_path / "data")
    assert down.returncode == 1 and "unhealthy" in down.stdout
    up = run(["health"], tmp_path / "data", redis_server.url)
    assert up.returncode == 0, up.stdout + up.stderr
    no_worker = run(["health", "--worker", "--json"], tmp_path / "data", redis_server.url)
    assert no_worker.returncode == 1
    celery_worker_proc(tmp_path / "data", redis_server.url, queues="ingest")
    ok = run(["health", "--worker", "--this-host", "--json"], tmp_path / "data", redis_server.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["workers"]

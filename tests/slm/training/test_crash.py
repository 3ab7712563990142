"""Crash safety: `lorebot refresh` killed with SIGKILL during pair generation, training and
export never changes what serves, never leaves a half-written version in versions/, and
the next run (once the dead run's lock has expired) starts cleanly and succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import child_env, make_settings
from tests.slm.training.test_refresh_e2e import TRAINING_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ENV = {**TRAINING_ENV, "LOREBOT_TRAINING__LOCK_TTL_S": "10"}


def _refresh(
    data: Path, redis_url: str, log: Path, kill_at: str | None, timeout: float = 900
) -> int | None:
    """Run `lorebot refresh`; with ``kill_at`` SIGKILL it once that step has started."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorebot", "refresh"],
            env=child_env(data, redis_url, **ENV),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace")
            if kill_at is not None and f" {kill_at}: " in text:
                time.sleep(3 if kill_at != "export" else 0.2)  # well inside the step
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return None
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"refresh did not finish:\n{log.read_text()[-3000:]}")
        return proc.returncode


def _wait_lock_gone(redis_client, timeout=30):
    deadline = time.monotonic() + timeout
    while redis_client.exists("lorebot:lock:refresh"):
        assert time.monotonic() < deadline, "the dead run's lock never expired"
        time.sleep(0.3)


def test_sigkill_at_any_step_keeps_the_current_adapter(
    tmp_path, refresh_data, redis_server, redis_client
):
    from slm.training import registry

    s = make_settings(refresh_data, redis_server.url)

    def versions():
        root = s.adapters_dir / "versions"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    # 1. killed while writing pairs: nothing serves but the base model, nothing registered.
    assert _refresh(refresh_data, redis_server.url, tmp_path / "r1.log", "pairs") is None
    assert registry.current_adapter(s) is None and versions() == []
    assert redis_client.exists("lorebot:lock:refresh")  # it died holding the lock
    _wait_lock_gone(redis_client)

    # 2. a full run after the crash succeeds (margin -1 promotes).
    code = _refresh(refresh_data, redis_server.url, tmp_path / "r2.log", None)
    assert code == 0, (tmp_path / "r2.log").read_text()[-3000:]
    first = registry.current_version(s)
    assert first is not None and versions() == [first]

    # 3. killed during training, then 4. during export: the first adapter keeps serving.
    for i, step in ((3, "train"), (4, "export")):
        _wait_lock_gone(redis_client)
        assert _refresh(refresh_data, redis_server.url, tmp_path / f"r{i}.log", step) is None, step
        assert registry.current_version(s) == first, step
        assert registry.current_adapter(s).version == first
        assert versions() == [first], f"a half-written version appeared after a kill in {step}"
        litter = list((s.adapters_dir / "tmp").iterdir())
        assert litter, f"the kill in {step} came too late to test anything"

    # 5. the next run cleans the litter and succeeds.
    _wait_lock_gone(redis_client)
    code = _refresh(refresh_data, redis_server.url, tmp_path / "r5.log", None)
    assert code == 0, (tmp_path / "r5.log").read_text()[-3000:]
    second = registry.current_version(s)
    assert second not in (None, first) and versions() == sorted([first, second])
    assert list((s.adapters_dir / "tmp").iterdir()) == []

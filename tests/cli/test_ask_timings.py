"""`lorebot ask --json`'s timings: where one question's wall time went, in parts that add up.

The real CLI against a real worker is checked in tests/integration/test_end_to_end.py;
these pin the arithmetic with the worker's timings as it reports them.
"""

from __future__ import annotations

import pytest

from lorebot.cli.ask import ask_timings
from lorebot.cli.root import process_age_s
from workers.runtime import load_now

TOP = ["startup_s", "settings_s", "connect_s", "queue_s", "worker_s", "other_s"]

# A worker's answer as it reports it (ms), with the CLI's connect and round trip.
WORKER = {
    "retrieve": 9.6,
    "prompt_build": 4.0,
    "generate": 1200.0,
    "first_token": 950.0,
    "evidence": 20.0,
    "total": 1240.0,
    "index_load": 0.1,
    "embedder_load": 0.0,
    "model_load": 310.0,
    "task": 1560.0,
    "roundtrip": 1600.0,
    "connect": 15.0,
}


def test_parts_add_up_to_the_measured_total():
    t = ask_timings(WORKER, startup_s=0.30, settings_s=0.01, total_s=1.95)
    assert t["connect_s"] == 0.015 and t["queue_s"] == 0.04 and t["worker_s"] == 1.56
    assert t["model_load_s"] == 0.31 and t["retrieve_s"] == 0.01 and t["generate_s"] == 1.2
    assert t["first_token_s"] == 0.95
    assert sum(t[k] for k in TOP) == pytest.approx(t["total_s"], abs=1e-9)
    assert t["other_s"] == pytest.approx(0.025)


def test_refused_before_the_model_has_no_first_token():
    refused = {"retrieve": 8.0, "total": 10.0, "task": 11.0, "roundtrip": 20.0, "connect": 5.0}
    t = ask_timings(refused, startup_s=0.3, settings_s=0.0, total_s=0.33)
    assert t["generate_s"] == 0.0 and t["first_token_s"] is None
    assert t["index_load_s"] == t["model_load_s"] == 0.0
    assert t["worker_s"] == 0.011 and t["queue_s"] == 0.009


def test_a_worker_task_longer_than_the_round_trip_is_clamped():
    # Two clocks in two processes: the task can read a hair longer than the round trip.
    t = ask_timings({"task": 101.0, "roundtrip": 100.0}, startup_s=0, settings_s=0, total_s=0.1)
    assert t["queue_s"] == 0.0 and t["worker_s"] == 0.1


def test_process_age_counts_from_the_process_start():
    age = process_age_s()
    assert 0 < age < 3600


def test_load_now_loads_what_can_be_loaded_once():
    class Lazy:
        loads = 0

        def load(self):
            self.loads += 1

    part = Lazy()
    assert load_now(part) >= 0 and part.loads == 1
    assert load_now(object()) >= 0  # a fake without load: nothing to do
    assert load_now(None) >= 0

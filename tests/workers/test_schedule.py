"""Beat's schedule comes from settings; a malformed cron is a start-up error."""

from __future__ import annotations

import datetime as dt

import pytest

from lorebot import contracts
from lorebot.errors import ConfigError
from lorebot.settings import Settings
from workers.schedule import beat_schedule, parse_cron


def test_default_schedule_runs_nightly_at_two(tmp_path):
    sched = beat_schedule(Settings(data_dir=tmp_path))
    entry = sched["nightly-reindex"]
    assert entry["task"] == contracts.TASK_REINDEX
    assert entry["options"]["queue"] == contracts.QUEUE_INGEST
    cron = entry["schedule"]
    assert cron.hour == {2} and cron.minute == {0}


def test_custom_cron_is_honoured():
    cron = parse_cron("30 23 * * 1-5")
    assert cron.hour == {23} and cron.minute == {30} and cron.day_of_week == {1, 2, 3, 4, 5}
    monday = dt.datetime(2026, 11, 23, 23, 30)
    assert monday.isoweekday() in cron.day_of_week


@pytest.mark.parametrize("bad", ["0 2 * *", "61 2 * * *", "every night"])
def test_malformed_cron_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="training.schedule"):
        parse_cron(bad)

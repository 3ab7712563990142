"""Promise 7, the CI-sized version of bench/reliability_load.py, through the real bot:
signed app_mention events to a `lorebot bot` HTTP server, two real workers with the real
model, questions kept 8 in flight. One user asks more than slack.user_rate_per_min in a
burst: the questions over the limit get the rate-limit note and nothing else; every other
question is answered once, none lost, no errors, queue positions shown, memory flat."""

from __future__ import annotations

import pytest

from tests.reliability.results import record

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]


def test_load_40_questions_at_concurrency_8_through_the_bot():
    from bench.reliability_load import run_load

    result = run_load(40, 8, max_tokens=32, timeout_s=1500, user_rate=6)
    result.pop("started_load", None)
    record("load_small", result)
    hot = result["hot_user"]
    assert result["sent"] == 40, result
    assert result["rate_limited"] > 0, result
    assert result["answered"] == result["sent"] - result["rate_limited"], result
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["error_count"] == 0, result["errors"]
    # Every question over the limit got the note, and nothing else: no placeholder, no
    # answer, no task on the workers; nobody under the limit was refused.
    assert hot["rate_limited"] == hot["expected_rate_limited"] == hot["sent"] - 6, hot
    assert hot["answered"] == 6, hot
    assert result["rate_limited"] == hot["rate_limited"], result
    assert result["rate_limited_other_users"] == 0, result
    assert result["rate_limited_with_placeholder_or_answer"] == 0, result
    assert result["tasks_run"] == result["answered"] and result["tasks_without_answer"] == 0, result
    assert result["queue_positions"]["shown"] >= 1, result["queue_positions"]
    assert result["rss_mib"]["flat"], result["rss_mib"]
    assert all(result["checks"].values()), result["checks"]

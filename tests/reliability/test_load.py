"""Promise 7, the CI-sized version of bench/reliability_load.py: two real workers, the
real model, questions kept 8 in flight; none lost, none twice, no errors, memory flat."""

from __future__ import annotations

import pytest

from tests.reliability.results import record

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]


def test_load_40_questions_at_concurrency_8():
    from bench.reliability_load import run_load

    result = run_load(40, 8, max_tokens=32, timeout_s=1500)
    result.pop("started_load", None)
    record("load_small", result)
    assert result["answered"] == 40, result
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["error_count"] == 0, result["errors"]
    assert result["rss_mib"]["flat"], result["rss_mib"]

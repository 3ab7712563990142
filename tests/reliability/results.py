"""Where the reliability tests leave their figures: bench/results/reliability.json.

One JSON object keyed by measurement, merged on each write, so the README's
"Reliability" table can be refreshed from the last run of any subset of the suite.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import REPO

RESULTS = REPO / "bench" / "results" / "reliability.json"


def record(name: str, value: Any) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data[name] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(value if isinstance(value, dict) else {"value": value}),
    }
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

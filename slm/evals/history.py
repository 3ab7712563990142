"""Where evaluation runs are kept: the full report of each under ``<data_dir>/eval/runs/``, one
summary line per run in ``<data_dir>/eval/history.jsonl``, and ``history.png`` drawn from those
lines once there are two or more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorebot.settings import Settings
from slm.evals.report import EvalReport

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
HISTORY_CHART = "history.png"


def history_path(settings: Settings) -> Path:
    return settings.data_dir / "eval" / HISTORY_FILE


def append_history(settings: Settings, report: EvalReport) -> Path:
    """Append the report's summary as one JSON line; redraw the chart when there are 2+ runs."""
    path = history_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(report.summary(), ensure_ascii=False) + "\n")
    runs = read_history(path)
    if len(runs) >= 2:
        try:
            plot_history(runs, path.parent / HISTORY_CHART)
        except Exception:  # a chart must never fail an evaluation
            log.warning("could not draw the evaluation history chart", exc_info=True)
    return path


def read_history(path: Path) -> list[dict[str, Any]]:
    """The history lines that parse (a torn last line is skipped)."""
    runs: list[dict[str, Any]] = []
    if not Path(path).is_file():
        return runs
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return runs


def plot_history(runs: Sequence[dict[str, Any]], png: Path) -> Path:
    """Quality rates and p50 latency over the runs, oldest left (labels: adapter or date)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    png = Path(png)
    fig = Figure(figsize=(10, 5), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    x = list(range(len(runs)))
    for key in ("recall@5", "f1", "contains", "acceptable", "correct_abstention"):
        ys = [r.get(key) for r in runs]
        if any(v is not None for v in ys):
            top.plot(x, [float("nan") if v is None else v for v in ys], marker="o", label=key)
    top.set_ylim(0, 1.05)
    top.set_ylabel("share")
    top.legend(loc="upper left", fontsize=8, ncols=5)
    top.set_title("lorebot evaluation history")
    lat = [r.get("p50_total_ms") for r in runs]
    bottom.plot(
        x, [float("nan") if v is None else v / 1000 for v in lat], marker="s", color="#6d4c41"
    )
    bottom.set_ylabel("p50 s/question")
    labels = [r.get("label") or r.get("adapter") or str(r.get("at", ""))[5:16] for r in runs]
    bottom.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    return png


def save_report(settings: Settings, report: EvalReport) -> Path:
    """Write the full report under ``<data_dir>/eval/runs/`` and append the history line."""
    runs = settings.data_dir / "eval" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = report.started_at.replace(":", "").replace("-", "")
    path = runs / f"eval-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = runs / f"eval-{stamp}-{n}.json"
    path.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    append_history(settings, report)
    return path

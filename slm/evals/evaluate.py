"""``lorebot eval``: a SQuAD v1.1 file in, retrieval and answer quality and latency out.

Every question goes through :func:`slm.serving.answer.answer_question`, the function the bot's
worker calls, with the real index and generator (or injected ones: the nightly job hands
in a generator that carries a new LoRA adapter, the context-budget benchmark hands in
different retrieval settings over one prepared index). So the figures are the bot's, not
those of a separate evaluation pipeline that could drift from it.

The harness, by job: :mod:`slm.evals.squad` reads and samples the QA file,
:mod:`slm.evals.evalset` opens the index the questions are asked against (a temporary one of
the file's passages, or the serving index), :mod:`slm.evals.runner` asks and scores,
:mod:`slm.evals.report` holds the figures and draws them, :mod:`slm.evals.history` keeps every
run's report and summary line under ``<data_dir>/eval/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lorebot.settings import Settings
from slm.evals.history import history_path
from slm.evals.report import EvalReport
from slm.evals.runner import run_eval

if TYPE_CHECKING:  # pragma: no cover
    from ingest.embed import Embedder
    from slm.serving.generator import Generator


def eval_command(
    settings: Settings,
    qa_path: Path,
    *,
    index: str = "temp",
    limit: int | None = None,
    as_json: bool = False,
    chart: Path | None = None,
    generator: Generator | None = None,
    embedder: Embedder | None = None,
) -> EvalReport:
    """`lorebot eval`: run, then print the table (or JSON on stdout) and write the chart.

    Progress goes to stderr, so ``--json`` output stays clean for pipes. ``generator`` and
    ``embedder`` are for tests and the nightly job; the CLI leaves them to the settings.
    """
    from rich.console import Console

    out = Console()
    err = Console(stderr=True)
    if not as_json:
        err.print(
            f"[bold]lorebot eval[/] {qa_path} (index {index}, limit {limit or 'all'})",
            soft_wrap=True,
        )
    report = run_eval(
        settings,
        qa_path,
        index=index,
        limit=limit,
        progress=True,
        generator=generator,
        embedder=embedder,
    )
    if chart is not None:
        report.write_chart(chart)
    if as_json:
        print(json.dumps(report.to_dict(items=False), indent=2, ensure_ascii=False))
    else:
        out.print(report.table())
        if chart is not None:
            out.print(f"chart: {chart}")
        out.print(f"history: {history_path(settings)}")
    return report

"""The model commands: `lorebot eval`, `refresh` and the `adapters` group.

Refresh and adapter actions run through workers.cli (the same code as the nightly task and
the /lorebot admin commands); eval through slm.evals.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lorebot.cli.root import console, err_console, settings

adapters_app = typer.Typer(help="LoRA adapters made by the nightly refresh.", no_args_is_help=True)


def eval_cmd(
    qa: Annotated[Path, typer.Argument(help="SQuAD v1.1 JSON file (e.g. XQuAD-en).")],
    index: Annotated[
        str,
        typer.Option(
            "--index", help="'temp': index the file's passages; 'current': the serving index."
        ),
    ] = "temp",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Ask at most N questions (a seeded sample)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Write a PNG chart of this run.")
    ] = None,
) -> None:
    """Score the answer path on a QA file: recall@1/@5, EM, F1, similarity buckets, abstention, latency."""  # noqa: E501 - the help text
    from slm.evals.evaluate import eval_command

    # eval_command checks the file and --index itself (the nightly job calls it too).
    eval_command(settings(), qa, index=index, limit=limit, as_json=as_json, chart=chart)


def refresh_cmd(
    enqueue: Annotated[
        bool, typer.Option("--enqueue", help="Send it to a worker on the train queue instead.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the nightly model refresh now: pairs, LoRA training, export, parity, gate, promotion."""
    from lorebot.cli.stack import require_redis
    from workers import cli as workers_cli

    s = settings()
    require_redis(s)
    if enqueue:
        from lorebot.contracts import QUEUE_TRAIN

        task_id = workers_cli.enqueue_refresh(s)
        console.print(
            f"refresh queued on `{QUEUE_TRAIN}` (task {task_id}); "
            f"a `lorebot worker -Q {QUEUE_TRAIN}` runs it"
        )
        return

    with console.status("refresh: starting…") as status:

        def progress(step: str, message: str, detail: bool) -> None:
            status.update(f"refresh [bold]{step}[/]: {message}")
            if not as_json and not detail:  # details only on the status line
                err_console.print(
                    f"[dim]{time.strftime('%H:%M:%S')}[/] {step}: {message}", highlight=False
                )

        result = workers_cli.refresh_now(s, progress=progress)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif "report" in result:
        console.print(workers_cli.refresh_report(result["report"]))
    else:
        console.print(result["message"])
    if result["status"] in ("failed", "busy"):
        raise typer.Exit(1)


def _adapters(action: str, version: str | None, as_json: bool, scope: str | None = None) -> None:
    from workers.cli import adapters

    result = adapters(settings(), action, version, scope)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif action == "list" and "adapters" in result:
        table = Table(
            "",
            "version",
            "scope (trained on)",
            "registry",
            "status",
            "score",
            "reason",
            title="adapters (* = serving)",
        )
        for c in result["adapters"]:
            score = ((c.get("metrics") or {}).get("candidate") or {}).get("score")
            cols = c.get("collections")
            table.add_row(
                "*" if c["current"] else "",
                c["version"],
                ", ".join(cols) if isinstance(cols, list) else "unknown: all-access only",
                c.get("scope") or "root",
                str(c.get("status")),
                "-" if score is None else f"{score:.3f}",
                str(c.get("reason", "")),
            )
        console.print(table)
        serving = result.get("serving") or {}
        console.print(
            "serving: "
            + (
                ", ".join(f"{v} ({k or 'root'})" for k, v in serving.items())
                if serving
                else "base model"
            )
        )
    else:
        console.print(result["text"])
    if "error" in result:
        raise typer.Exit(1)


ScopeOption = Annotated[
    str | None,
    typer.Option(
        "--scope", help="The access scope's registry (see `adapters list`); default root."
    ),
]


@adapters_app.command("list")
def adapters_list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every adapter version with its access scope (the collections it was trained on), status,
    score and the gate's reason."""
    _adapters("list", None, as_json)


@adapters_app.command("promote")
def adapters_promote_cmd(
    version: Annotated[str, typer.Argument(help="Version from `adapters list`.")],
    scope: ScopeOption = None,
) -> None:
    """Serve this adapter version (workers switch between tasks)."""
    _adapters("promote", version, False, scope)


@adapters_app.command("rollback")
def adapters_rollback_cmd(scope: ScopeOption = None) -> None:
    """Serve the adapter that served before the current one (or the base model)."""
    _adapters("rollback", None, False, scope)

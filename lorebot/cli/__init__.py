"""The `lorebot` command line: the only place settings are loaded for CLI processes.

Every command turns domain errors into one line on stderr and a non-zero exit code;
heavy packages (torch, llama_cpp, faiss, unstructured) are imported inside the commands
that need them so `lorebot --help` and `lorebot config` stay instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lorebot import contracts, messages
from lorebot.errors import AnswerTimeoutError, LorebotError, ServiceUnavailableError
from lorebot.settings import Settings, load_settings
from lorebot.types import Answer, Question

app = typer.Typer(
    name="lorebot",
    help="Answers staff questions from internal documents with a small local model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
feedback_app = typer.Typer(help="Feedback from Slack users (👍 / 👎).", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
sync_app = typer.Typer(
    help="Index and adapter versions in the shared location (LOREBOT_SYNC__URL).",
    no_args_is_help=True,
)
app.add_typer(sync_app, name="sync")
adapters_app = typer.Typer(help="LoRA adapters made by the nightly refresh.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")

console = Console()
err_console = Console(stderr=True)


class State:
    config_file: Path | None = None
    settings: Settings | None = None


def settings() -> Settings:
    """Load the settings once per process (validated: a bad value is a one-line error)."""
    if State.settings is None:
        State.settings = load_settings(State.config_file)
        _setup_logging(State.settings)
    return State.settings


def _setup_logging(s: Settings) -> None:
    # Text or JSON lines, question context on each line, secrets redacted (lorebot/logs.py);
    # it also quiets library chatter that would drown the one-line-per-event logs.
    from lorebot.logs import setup

    setup(s, stream=sys.stderr)


def _offline_env() -> None:
    # Belt and braces: nothing we run may reach a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
) -> None:
    State.config_file = config
    State.settings = None
    _offline_env()


# --------------------------------------------------------------------------- config
@app.command("config")
def config_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    values = settings().public_dict()
    if as_json:
        print(json.dumps(values, indent=2))
        return
    table = Table(
        "setting", "value", title="lorebot settings (env LOREBOT_*, config file, defaults)"
    )

    def rows(prefix: str, obj: dict) -> None:
        for key, val in obj.items():
            name = f"{prefix}{key}"
            if (
                isinstance(val, dict)
                and val
                and all(isinstance(k, str) for k in val)
                and key not in ("channel_collections",)
            ):
                rows(name + ".", val)
            else:
                table.add_row(name, json.dumps(val) if not isinstance(val, str) else val)

    rows("", values)
    console.print(table)


# --------------------------------------------------------------------------- doctor
@app.command("doctor")
def doctor_cmd(
    services: Annotated[
        bool, typer.Option("--services/--no-services", help="Also check Redis and the index.")
    ] = True,
) -> None:
    """Check every model, binary and service; exit 1 if anything is wrong."""
    from lorebot.cli.doctor import run_checks

    checks = run_checks(settings(), services=services)
    table = Table("check", "status", "detail", "fix", title="lorebot doctor")
    for c in checks:
        table.add_row(c.name, "[green]OK[/]" if c.ok else "[red]problem[/]", c.detail, c.fix)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


# --------------------------------------------------------------------------- health
@app.command("health")
def health_cmd(
    worker: Annotated[
        bool, typer.Option("--worker", help="Require a live worker (Celery ping).")
    ] = False,
    this_host: Annotated[
        bool, typer.Option("--this-host", help="With --worker: a worker on this host must answer.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Exit 0 when Redis (and, with --worker, a worker) answers; for scripts and probes."""
    import socket

    from lorebot.cli.stack import redis_ping

    s = settings()
    status: dict[str, object] = {"redis": redis_ping(s.redis.effective_url)}
    if worker and status["redis"]:
        from workers.client import make_client

        replies = make_client(s.redis.effective_url).control.ping(timeout=2.0) or []
        nodes = [name for reply in replies for name in reply]
        if this_host:
            host = socket.gethostname()
            nodes = [n for n in nodes if n.endswith("@" + host)]
        status["workers"] = nodes
    ok = bool(status["redis"]) and (not worker or bool(status.get("workers")))
    status["ok"] = ok
    if as_json:
        print(json.dumps(status))
    else:
        console.print(
            ("healthy: " if ok else "unhealthy: ")
            + ", ".join(f"{k}={v}" for k, v in status.items() if k != "ok")
        )
    if not ok:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- ingest
@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to ingest.")],
    collection: Annotated[str | None, typer.Option("--collection", help="Collection name.")] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Glob of files to include.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Glob of files to skip.")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild from scratch.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when any file failed.")] = False,
) -> None:
    """Parse, chunk and embed documents into a new index version."""
    from ingest import Source, build_index

    s = settings()
    coll = collection or s.index.default_collection
    sources = [
        Source(path=p, collection=coll, include=include or [], exclude=exclude or []) for p in paths
    ]
    from lorebot.errors import IngestError

    try:
        report = build_index(s, sources, full=full, progress=not as_json)
    except IngestError as exc:
        failed = getattr(exc, "report", None)
        if failed is not None and not as_json:  # nothing could be indexed: show why per file
            console.print(failed.problems_table())
        raise
    from ingest.registry import record_sources

    record_sources(s, sources)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report.table())
        if report.failed or report.skipped:
            console.print(report.problems_table())
        console.print(report.summary())
    if strict and report.failed:
        raise typer.Exit(3)


# --------------------------------------------------------------------------- worker / beat
@app.command("worker")
def worker_cmd(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated queues.")
    ] = "answer",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Processes (default: settings).")
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO",
) -> None:
    """Run a Celery worker (model and index loaded once per process)."""
    from lorebot.cli.stack import require_redis

    s = settings()
    if concurrency is not None:
        s.worker.concurrency = concurrency
    elif "answer" not in queues.split(","):
        s.worker.concurrency = 1  # re-index and refresh: one job at a time, all cores to it
    if "answer" in queues.split(","):
        # Fail before starting a process that could never answer.
        from lorebot.cli.doctor import check_answer_model

        check = check_answer_model(s, load=True)
        if not check.ok:
            raise LorebotError(check.detail, fix=check.fix)
    from lorebot.cli.doctor import check_data_dir

    # Workers write metrics, adapter pointers and logs under the data dir: refuse to
    # start half-working on one that cannot be written.
    data_check = check_data_dir(s)
    if not data_check.ok and "not writable" in data_check.detail:
        raise LorebotError(data_check.detail, fix=data_check.fix)
    require_redis(s)
    from workers.app import create_app

    celery = create_app(s, warm="answer" in queues.split(","), queues=queues.split(","))
    name = "lorebot-" + queues.replace(",", "-") + "-%d@%%h" % os.getpid()
    celery.worker_main(
        [
            "worker",
            "-Q",
            queues,
            "-c",
            str(s.worker.concurrency),
            "--loglevel",
            loglevel,
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command("beat")
def beat_cmd(loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO") -> None:
    """Run Celery beat (the nightly schedule)."""
    from lorebot.cli.stack import require_redis

    s = settings()
    require_redis(s)
    from workers.app import create_app
    from workers.schedule import beat_schedule

    celery = create_app(s, warm=False)
    celery.conf.beat_schedule = beat_schedule(s)
    s.run_dir.mkdir(parents=True, exist_ok=True)
    celery.start(["beat", "--loglevel", loglevel, "-s", str(s.run_dir / "celerybeat-schedule")])


# --------------------------------------------------------------------------- ask
def submit_question(s: Settings, question: Question, timeout: float) -> Answer:
    """Send a question through Redis to a worker and wait for the answer."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from lorebot.cli.stack import require_redis
    from lorebot.contracts import QUEUE_ANSWER, TASK_ANSWER
    from workers.client import make_client

    require_redis(s)
    client = make_client(s.redis.effective_url)
    if not client.control.ping(timeout=1.5):
        raise ServiceUnavailableError(
            "no lorebot worker is running", fix="start one with `lorebot up` or `lorebot worker`"
        )
    result = client.send_task(
        TASK_ANSWER,
        kwargs={"question": question.model_dump(mode="json"), "reply": None},
        queue=QUEUE_ANSWER,
        task_id=question.question_id,
    )
    try:
        payload = result.get(timeout=timeout, propagate=True)
    except CeleryTimeout:
        raise AnswerTimeoutError(
            f"no answer within {timeout:.0f} s (question id {question.question_id})",
            fix="check `lorebot doctor` and the worker log; raise LOREBOT_WORKER__ASK_TIMEOUT_S",
        ) from None
    if isinstance(payload, dict) and "error" in payload:
        err = payload["error"]
        raise LorebotError(err["message"], fix=err.get("fix"))
    return Answer.model_validate(payload)


@app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[
        list[str] | None, typer.Option("--collection", help="Search only these collections.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait.")] = None,
) -> None:
    """Ask a question through Redis and a worker; print the answer with citations."""
    s = settings()
    text = question.strip()
    if not text:
        raise LorebotError(
            "the question is empty",
            fix='ask something, e.g. lorebot ask "How many days of leave do I get?"',
        )
    started = time.perf_counter()
    answer = submit_question(
        s, Question(text=text, collections=collection or None), timeout or s.worker.ask_timeout_s
    )
    answer.timings_ms["roundtrip"] = (time.perf_counter() - started) * 1000
    if as_json:
        print(json.dumps(messages.answer_json(answer), indent=2, ensure_ascii=False))
    else:
        console.print(messages.answer_text(answer))


# --------------------------------------------------------------------------- eval
@app.command("eval")
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
    """Score the answer path on a QA file: recall@1/@5, EM, F1, similarity buckets, abstention, latency."""
    from slm.evals.evaluate import eval_command

    # eval_command checks the file and --index itself (the nightly job calls it too).
    eval_command(settings(), qa, index=index, limit=limit, as_json=as_json, chart=chart)


# --------------------------------------------------------------------------- up / demo
@app.command("up")
def up_cmd(
    bot: Annotated[
        bool | None,
        typer.Option("--bot/--no-bot", help="Run the Slack bot (default: when tokens are set)."),
    ] = None,
) -> None:
    """Run the whole stack (embedded Redis unless LOREBOT_REDIS__URL, worker, beat, bot) until Ctrl-C."""
    from lorebot.cli.stack import Stack

    s = settings()
    stack = Stack(s, config_file=State.config_file, bot=bot).start()
    err_console.print(messages.stack_up(s, stack))
    stack.run_forever()
    err_console.print("lorebot stopped.")


@app.command("demo")
def demo_cmd(
    questions: Annotated[
        list[str] | None, typer.Argument(help="Questions to ask (default: two samples).")
    ] = None,
) -> None:
    """Ingest the sample handbook, start the stack, ask sample questions, stop."""
    from lorebot import assets
    from lorebot.cli.stack import Stack

    s = settings()
    from ingest import Source, build_index

    console.rule("1/3 ingest the sample handbook")
    report = build_index(
        s, [Source(path=assets.sample_docs_dir(), collection="handbook")], progress=True
    )
    console.print(messages.ingest_done(report))
    console.rule("2/3 start Redis and a worker")
    with Stack(s, config_file=State.config_file, beat=False, bot=False) as stack:
        wait_for_worker(s, stack)
        console.rule("3/3 ask through Redis → Celery worker → local model")
        for q in questions or messages.DEMO_QUESTIONS:
            console.print(f"\n[bold]Q:[/] {q}")
            started = time.perf_counter()
            answer = submit_question(s, Question(text=q), s.worker.ask_timeout_s)
            answer.timings_ms["roundtrip"] = (time.perf_counter() - started) * 1000
            console.print(messages.answer_text(answer))


def wait_for_worker(s: Settings, stack, timeout: float = 180.0) -> None:
    """Block until a worker answers Celery's ping (it loads the model first)."""
    from workers.client import make_client

    client = make_client(s.redis.effective_url)
    deadline = time.monotonic() + timeout
    with console.status("waiting for the worker to load the model and index…"):
        while time.monotonic() < deadline:
            stack.poll()
            if client.control.ping(timeout=1.0):
                return
    raise ServiceUnavailableError("the worker did not start", fix=f"see {s.run_dir / 'worker.log'}")


# --------------------------------------------------------------------------- bot / feedback
@app.command("bot")
def bot_cmd() -> None:
    """Run the Slack bot (Socket Mode when an app token is set, else HTTP)."""
    from bot.cli import run_bot

    run_bot(settings())


@feedback_app.command("export")
def feedback_export_cmd(
    out: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for stdout).")],
) -> None:
    """Write every stored 👍 / 👎 as JSON lines."""
    from bot.cli import export_feedback

    n = export_feedback(settings(), out)
    err_console.print(f"wrote {n} feedback records to {out}")


# --------------------------------------------------------------------------- sync
@sync_app.command("publish")
def sync_publish_cmd(
    kind: Annotated[str, typer.Option("--kind", help="index, adapters or all.")] = "all",
) -> None:
    """Upload the local CURRENT index / adapter to the shared location (after a failed upload)."""
    from lorebot import sync

    s = settings()
    if not sync.enabled(s):
        raise LorebotError("no sync location is configured", fix="set LOREBOT_SYNC__URL")
    for k in sync.KINDS if kind == "all" else (kind,):
        r = sync.publish(s, k)
        console.print(
            f"{k}: published {r.version or 'none'} ({r.files} files uploaded, {r.seconds:.1f} s)"
        )


@sync_app.command("pull")
def sync_pull_cmd() -> None:
    """Fetch the published index / adapter versions into this data directory now."""
    from lorebot import sync

    s = settings()
    if not sync.enabled(s):
        raise LorebotError("no sync location is configured", fix="set LOREBOT_SYNC__URL")
    for k in sync.KINDS:
        r = sync.pull(s, k)
        console.print(
            f"{k}: local {r.local or 'none'}, remote {r.remote if r.remote is not None else 'never published'}"
            f" ({r.files} files downloaded, {r.seconds:.1f} s)"
        )


@sync_app.command("status")
def sync_status_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Local and published versions, and what every worker announced it serves."""
    import redis

    from lorebot import sync

    s = settings()
    out: dict[str, object] = {"location": sync.status(s)}
    try:
        raw = redis.Redis.from_url(s.redis.effective_url, socket_timeout=2).hgetall(
            contracts.SERVING
        )
        out["workers"] = {k.decode(): json.loads(v) for k, v in raw.items()}
    except redis.RedisError as exc:
        out["workers_error"] = type(exc).__name__
    if as_json:
        print(json.dumps(out, indent=2))
        return
    table = Table("worker", "index", "adapter", "announced", title="what each worker serves")
    for name, w in sorted(dict(out.get("workers") or {}).items()):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w.get("at", 0)))
        table.add_row(
            name,
            str(w.get("index")),
            str(w.get("adapter") or w.get("adapter_synced") or "base"),
            at,
        )
    console.print(json.dumps(out["location"], indent=1))
    console.print(table)


# --------------------------------------------------------------------------- refresh / adapters
@app.command("refresh")
def refresh_cmd(
    enqueue: Annotated[
        bool, typer.Option("--enqueue", help="Send it to a worker on the train queue instead.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the nightly model refresh now: pairs, LoRA training, export, parity, gate, promotion."""
    from lorebot.cli.stack import require_redis

    s = settings()
    require_redis(s)
    if enqueue:
        from lorebot.contracts import QUEUE_TRAIN, TASK_REFRESH
        from workers.client import make_client

        task = make_client(s.redis.effective_url).send_task(
            TASK_REFRESH, kwargs={"reply": None}, queue=QUEUE_TRAIN
        )
        console.print(
            f"refresh queued on `{QUEUE_TRAIN}` (task {task.id}); a `lorebot worker -Q {QUEUE_TRAIN}` runs it"
        )
        return
    from workers.tasks.refresh import refresh_impl

    with console.status("refresh: starting…") as status:

        def progress(step: str, message: str, detail: bool) -> None:
            status.update(f"refresh [bold]{step}[/]: {message}")
            if not as_json and not detail:  # details only on the status line
                err_console.print(
                    f"[dim]{time.strftime('%H:%M:%S')}[/] {step}: {message}", highlight=False
                )

        result = refresh_impl(s, progress=progress)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif "report" in result:
        from workers.tasks.refresh import report_renderable

        console.print(report_renderable(result["report"]))
    else:
        console.print(result["message"])
    if result["status"] in ("failed", "busy"):
        raise typer.Exit(1)


def _adapters(action: str, version: str | None, as_json: bool) -> None:
    from workers.tasks.refresh import adapters_impl

    result = adapters_impl(settings(), action, version)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif action == "list" and "adapters" in result:
        table = Table("", "version", "status", "score", "reason", title="adapters (* = serving)")
        for c in result["adapters"]:
            score = ((c.get("metrics") or {}).get("candidate") or {}).get("score")
            table.add_row(
                "*" if c["current"] else "",
                c["version"],
                str(c.get("status")),
                "-" if score is None else f"{score:.3f}",
                str(c.get("reason", "")),
            )
        console.print(table)
        console.print(f"serving: {result.get('current') or 'base model'}")
    else:
        console.print(result["text"])
    if "error" in result:
        raise typer.Exit(1)


@adapters_app.command("list")
def adapters_list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every adapter version with its status, score and the gate's reason."""
    _adapters("list", None, as_json)


@adapters_app.command("promote")
def adapters_promote_cmd(
    version: Annotated[str, typer.Argument(help="Version from `adapters list`.")],
) -> None:
    """Serve this adapter version (workers switch between tasks)."""
    _adapters("promote", version, False)


@adapters_app.command("rollback")
def adapters_rollback_cmd() -> None:
    """Serve the adapter that served before the current one (or the base model)."""
    _adapters("rollback", None, False)


def main() -> None:
    """Console entry: run the app, turning domain errors into one line and an exit code."""
    try:
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except LorebotError as exc:
        from lorebot.logs import redact

        err_console.print(
            f"[red]error:[/] {redact(exc.one_line())}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise

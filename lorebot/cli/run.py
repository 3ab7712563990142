"""The long-running commands: `lorebot up`, `demo`, `worker`, `beat` and `bot`.

Each checks what it needs (the model, a writable data dir, Redis) and fails in one line
before starting anything; the processes themselves come from workers.cli and bot.cli.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from lorebot import messages
from lorebot.cli.root import State, console, err_console, settings
from lorebot.errors import LorebotError, ServiceUnavailableError
from lorebot.settings import Settings
from lorebot.types import Question


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
    from lorebot.cli.doctor import check_answer_model, check_data_dir
    from lorebot.cli.stack import require_redis

    s = settings()
    if concurrency is not None:
        s.worker.concurrency = concurrency
    elif "answer" not in queues.split(","):
        s.worker.concurrency = 1  # re-index and refresh: one job at a time, all cores to it
    if "answer" in queues.split(","):
        # Fail before starting a process that could never answer.
        check = check_answer_model(s, load=True)
        if not check.ok:
            raise LorebotError(check.detail, fix=check.fix)
    # Workers write metrics, adapter pointers and logs under the data dir: refuse to
    # start half-working on one that cannot be written.
    data_check = check_data_dir(s)
    if not data_check.ok and "not writable" in data_check.detail:
        raise LorebotError(data_check.detail, fix=data_check.fix)
    require_redis(s)
    from workers.cli import run_worker

    run_worker(s, queues, loglevel)


def beat_cmd(loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO") -> None:
    """Run Celery beat (the nightly schedule)."""
    from lorebot.cli.stack import require_redis

    s = settings()
    require_redis(s)
    from workers.cli import run_beat

    run_beat(s, loglevel)


def up_cmd(
    bot: Annotated[
        bool | None,
        typer.Option("--bot/--no-bot", help="Run the Slack bot (default: when tokens are set)."),
    ] = None,
) -> None:
    """Run the whole stack (embedded Redis unless LOREBOT_REDIS__URL, worker, beat, bot) until Ctrl-C."""  # noqa: E501 - the help text
    from lorebot.cli.stack import Stack

    s = settings()
    stack = Stack(s, config_file=State.config_file, bot=bot).start()
    err_console.print(messages.stack_up(s, stack))
    stack.run_forever()
    err_console.print("lorebot stopped.")


def demo_cmd(
    questions: Annotated[
        list[str] | None, typer.Argument(help="Questions to ask (default: two samples).")
    ] = None,
    learn: Annotated[
        bool,
        typer.Option(
            "--learn",
            help="Also run one small refresh on the sample handbook and show the same "
            "questions answered before and after, with the gate's verdict (a few minutes).",
        ),
    ] = False,
    budget_s: Annotated[
        int,
        typer.Option("--budget-s", min=1, help="--learn: seconds of LoRA training steps."),
    ] = 60,
) -> None:
    """Ingest the sample handbook, start the stack, ask sample questions, stop."""
    from lorebot import assets
    from lorebot.cli.ask import submit_question
    from lorebot.cli.stack import Stack

    s = settings()
    from ingest.cli import ingest_sample

    started = time.perf_counter()
    console.rule("1/3 ingest the sample handbook")
    report = ingest_sample(s, assets.sample_docs_dir())
    console.print(messages.ingest_done(report))
    if learn:
        learn_demo(s, questions or messages.LEARN_QUESTIONS, budget_s, started)
        return
    console.rule("2/3 start Redis and a worker")
    with Stack(s, config_file=State.config_file, beat=False, bot=False, console=False) as stack:
        wait_for_worker(s, stack)
        console.rule("3/3 ask through Redis → Celery worker → local model")
        for q in questions or messages.DEMO_QUESTIONS:
            console.print(f"\n[bold]Q:[/] {q}")
            answer = submit_question(s, Question(text=q), s.worker.ask_timeout_s)
            console.print(messages.answer_text(answer))


def learn_demo(s: Settings, questions: list[str], budget_s: int, started: float) -> None:
    """``demo --learn`` after the ingest: before answers, one small refresh, after answers
    and the verdict (in this process: no Redis or worker needed)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from slm.training.learn_demo import run_learn_demo

    console.rule(f"2/3 one small refresh ({budget_s} s of training), questions before and after")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:
        current: dict[str, Any] = {}

        def progress(step: str, message: str, detail: bool) -> None:
            if not detail or step not in current:
                if current.get("task") is not None:
                    bar.update(current["task"], completed=1, total=1)
                    bar.stop_task(current["task"])
                current.clear()
                current[step] = True
                current["task"] = bar.add_task(f"[bold]{step}[/]: {message}", total=None)
            else:
                bar.update(current["task"], description=f"[bold]{step}[/]: {message}")

        result = run_learn_demo(s, questions, budget_s=budget_s, progress=progress)
        if current.get("task") is not None:
            bar.update(current["task"], completed=1, total=1)
    console.rule("3/3 the same questions, before and after")
    console.print(messages.learn_table(result))
    console.print(messages.learn_verdict(result, time.perf_counter() - started))


def wait_for_worker(s: Settings, stack, timeout: float = 180.0) -> None:
    """Block until a worker answers Celery's ping (it loads the model first)."""
    from workers.cli import wait_for_worker as ping_until_up

    with console.status("waiting for the worker to load the model and index…"):
        if ping_until_up(s, timeout, poll=stack.poll):
            return
    raise ServiceUnavailableError("the worker did not start", fix=f"see {s.run_dir / 'worker.log'}")


def bot_cmd() -> None:
    """Run the Slack bot (Socket Mode when an app token is set, else HTTP)."""
    from bot.cli import run_bot

    run_bot(settings())

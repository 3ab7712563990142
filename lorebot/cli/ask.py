"""`lorebot ask`: a question through Redis and a worker (workers.cli), printed with citations."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from lorebot import messages
from lorebot.cli.root import State, console, process_age_s, settings
from lorebot.errors import LorebotError
from lorebot.settings import Settings
from lorebot.types import Answer, Question


def submit_question(s: Settings, question: Question, timeout: float) -> Answer:
    """Send a question through Redis to a worker and wait for the answer.

    ``timings_ms`` gains ``roundtrip`` (task submitted -> result) and ``connect`` (the
    Redis check, the Celery client and the worker ping before it).
    """
    started = time.perf_counter()
    from lorebot.cli.stack import require_redis
    from workers.cli import ask

    require_redis(s)
    answer = ask(s, question, timeout)
    elapsed = (time.perf_counter() - started) * 1000
    answer.timings_ms["connect"] = max(0.0, elapsed - answer.timings_ms.get("roundtrip", elapsed))
    return answer


def ask_timings(
    timings_ms: dict[str, float], *, startup_s: float, settings_s: float, total_s: float
) -> dict:
    """Where the wall time of one `lorebot ask` went, in seconds (``--json``'s ``timings``).

    ``total_s`` is measured on its own (process start -> answer ready to print); the parts
    add up to it: ``startup_s`` (interpreter and imports) + ``settings_s`` + ``connect_s``
    (Redis check, Celery client, worker ping) + ``queue_s`` (broker, queue wait, result
    back) + ``worker_s`` (the worker's task) + ``other_s`` (the rest). Inside ``worker_s``
    are what it loaded for this question (``index_load_s``, ``embedder_load_s``,
    ``model_load_s``: ~0 on a warm worker), ``retrieve_s`` and ``generate_s`` (the model:
    generating, or reading in read mode); ``first_token_s`` counts from the answer's start.
    """
    t = timings_ms
    roundtrip = t.get("roundtrip", 0.0)
    worker = min(t.get("task", t.get("total", 0.0)), roundtrip) if roundtrip else 0.0
    parts = {
        "startup_s": startup_s,
        "settings_s": settings_s,
        "connect_s": t.get("connect", 0.0) / 1000,
        "queue_s": (roundtrip - worker) / 1000,
        "worker_s": worker / 1000,
    }
    out = {k: round(v, 3) for k, v in parts.items()}
    for key in ("index_load", "embedder_load", "model_load", "retrieve", "generate"):
        out[f"{key}_s"] = round(t.get(key, 0.0) / 1000, 3)
    first = t.get("first_token")
    out["first_token_s"] = round(first / 1000, 3) if first is not None else None
    out["other_s"] = round(total_s - sum(parts.values()), 3)
    out["total_s"] = round(total_s, 3)
    return out


def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[
        list[str] | None, typer.Option("--collection", help="Search only these collections.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the answer as JSON, with a timings split.")
    ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait.")] = None,
) -> None:
    """Ask a question through Redis and a worker; print the answer with citations."""
    startup = process_age_s()
    t_settings = time.perf_counter()
    s = settings()
    settings_s = time.perf_counter() - t_settings
    text = question.strip()
    if not text:
        raise LorebotError(
            "the question is empty",
            fix='ask something, e.g. lorebot ask "How many days of leave do I get?"',
        )
    answer = submit_question(
        s, Question(text=text, collections=collection or None), timeout or s.worker.ask_timeout_s
    )
    if as_json:
        timings = ask_timings(
            answer.timings_ms, startup_s=startup, settings_s=settings_s, total_s=process_age_s()
        )
        print(json.dumps(messages.answer_json(answer, timings), indent=2, ensure_ascii=False))
    else:
        console.print(messages.answer_text(answer))
    State.exit_fast = True  # nothing to tear down: skip the interpreter's module teardown

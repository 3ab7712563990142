"""`lorebot ask`: a question through Redis and a worker (workers.cli), printed with citations."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from lorebot import messages
from lorebot.cli.root import console, settings
from lorebot.errors import LorebotError
from lorebot.settings import Settings
from lorebot.types import Answer, Question


def submit_question(s: Settings, question: Question, timeout: float) -> Answer:
    """Send a question through Redis to a worker and wait for the answer."""
    from lorebot.cli.stack import require_redis
    from workers.cli import ask

    require_redis(s)
    return ask(s, question, timeout)


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

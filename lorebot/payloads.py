"""What a task's arguments may hold, checked by the worker before it acts on them.

Anyone who can write to Redis can queue a task. The worker therefore treats the arguments
as untrusted input: every field of an answer task has a type, a size and a shape
(:func:`check_answer_payload`), and what a question may search is not read from the
payload at all but derived again from the channel the answer is posted in
(:func:`scope_question`, through :mod:`lorebot.access`, the same function the bot uses).
Every other task gets the bounds they all share (:func:`check_task_arguments`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from lorebot import access, contracts
from lorebot.errors import AccessDeniedError, InvalidPayloadError
from lorebot.types import Question, Turn

#: Question ids and task ids: what lorebot.types.new_id makes, and some room for callers'.
QUESTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: Slack ids of channels, users and teams (C0123ABC, U0ADMIN1, T01...).
SLACK_ID = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,39}")
#: Slack message timestamps ("1700000000.000100").
SLACK_TS = re.compile(r"\d{1,12}(\.\d{1,9})?")
#: Collection names as the index knows them (`lorebot ingest --collection` takes any
#: name): no control characters, no path separators, not "." or "..".
COLLECTION = re.compile(r"(?!\.{1,2}$)[^\x00-\x1f\x7f/\\]{1,128}")
#: Most collections one question may name.
MAX_COLLECTIONS = 64
#: Largest serialized question accepted, whatever the per-field limits allow.
MAX_PAYLOAD_BYTES = 256 * 1024
ROLES = frozenset({"user", "assistant"})
QUESTION_KEYS = frozenset(Question.model_fields)
TURN_KEYS = frozenset(Turn.model_fields)
REPLY_KEYS = frozenset(contracts.ReplyTarget.__dataclass_fields__)


def _fail(what: str) -> InvalidPayloadError:
    return InvalidPayloadError(
        f"invalid answer task: {what}",
        fix="the worker dropped it; the bot and `lorebot ask` send tasks within these bounds",
    )


def _text(value: Any, name: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} is not a string")
    if len(value) > limit:
        raise _fail(f"{name} has {len(value)} characters (at most {limit})")
    if not empty and not value.strip():
        raise _fail(f"{name} is empty")
    if "\x00" in value:
        raise _fail(f"{name} contains a NUL character")
    return value


def _id(value: Any, name: str, pattern: re.Pattern, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(f"{name} is not a valid id")
    return value


def check_question(data: Any, *, max_chars: int, max_turns: int) -> Question:
    """A :class:`Question` from a task argument, or InvalidPayloadError naming the field."""
    if not isinstance(data, dict):
        raise _fail("question is not an object")
    unknown = set(data) - QUESTION_KEYS
    if unknown:
        raise _fail("question has unknown fields " + ", ".join(sorted(map(str, unknown))[:5]))
    try:
        size = len(json.dumps(data, ensure_ascii=False).encode())
    except (TypeError, ValueError):
        raise _fail("question is not plain JSON") from None
    if size > MAX_PAYLOAD_BYTES:
        raise _fail(f"question is {size} bytes (at most {MAX_PAYLOAD_BYTES})")
    _id(data.get("question_id"), "question_id", QUESTION_ID, optional=False)
    _text(data.get("text"), "text", max_chars)
    _id(data.get("user"), "user", SLACK_ID)
    _id(data.get("channel"), "channel", SLACK_ID)
    collections = data.get("collections")
    if collections is not None:
        if not isinstance(collections, list) or len(collections) > MAX_COLLECTIONS:
            raise _fail(f"collections is not a list of at most {MAX_COLLECTIONS} names")
        for name in collections:
            if not isinstance(name, str) or not COLLECTION.fullmatch(name):
                raise _fail("collections holds an invalid collection name")
    history = data.get("history", [])
    if not isinstance(history, list) or len(history) > max_turns:
        raise _fail(f"history is not a list of at most {max_turns} turns")
    for turn in history:
        if not isinstance(turn, dict) or not {"role", "text"} <= set(turn) <= TURN_KEYS:
            raise _fail("a history turn is not {role, text}")
        if turn["role"] not in ROLES:
            raise _fail("a history turn has an unknown role")
        _text(turn["text"], "a history turn", max_chars, empty=True)
    return Question.model_validate(data)


def check_reply(data: Any, question_id: str) -> contracts.ReplyTarget | None:
    """The Slack reply target of a task argument, or InvalidPayloadError naming the field."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _fail("reply is not an object")
    unknown = set(data) - REPLY_KEYS
    if unknown:
        raise _fail("reply has unknown fields " + ", ".join(sorted(map(str, unknown))[:5]))
    _id(data.get("channel"), "reply channel", SLACK_ID, optional=False)
    _id(data.get("message_ts"), "reply message_ts", SLACK_TS, optional=False)
    _id(data.get("thread_ts"), "reply thread_ts", SLACK_TS)
    _id(data.get("team"), "reply team", SLACK_ID)
    _id(data.get("user"), "reply user", SLACK_ID)
    qid = _id(data.get("question_id"), "reply question_id", QUESTION_ID)
    if qid is not None and qid != question_id:
        raise _fail("reply question_id is not the question's")
    started = data.get("started_at")
    if started is not None and (
        isinstance(started, bool)
        or not isinstance(started, int | float)
        or not math.isfinite(started)
        or started < 0
    ):
        raise _fail("reply started_at is not a time")
    return contracts.ReplyTarget.from_dict(data)


def check_answer_payload(
    question: Any, reply: Any, *, max_chars: int, max_turns: int
) -> tuple[Question, contracts.ReplyTarget | None]:
    """Both arguments of the answer task, checked (InvalidPayloadError on the first problem)."""
    q = check_question(question, max_chars=max_chars, max_turns=max_turns)
    target = check_reply(reply, q.question_id)
    if target is not None and q.channel is not None and q.channel != target.channel:
        raise _fail("the question's channel is not the channel the answer is posted in")
    return q, target


def scope_question(
    redis: Any, slack: Any, question: Question, reply: contracts.ReplyTarget | None
) -> Question:
    """The question with the collections its reply channel may search, from the mapping.

    A question answered into Slack searches what the channel it is posted in is mapped to
    (:func:`lorebot.access.resolve`), whatever the payload said; a channel mapped to
    nothing raises AccessDeniedError. A question without a reply target (``lorebot ask``
    and the benches, whose answer goes back only through the result store) keeps the
    collections it names.
    """
    if reply is None:
        return question
    collections, source = access.resolve(redis, slack, reply.channel)
    if collections == []:
        raise AccessDeniedError(
            f"channel {reply.channel} may search no collection ({source})",
            fix="an admin maps it with /lorebot channel set",
        )
    return question.model_copy(update={"collections": collections, "channel": reply.channel})


# ----------------------------------------------------------------------------- other tasks
#: Adapter and index versions named in a task (no path separators, so no traversal).
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}")
#: Most shared files one ingest task may carry.
MAX_FILES = 100


def check_task_arguments(name: str, args: tuple, kwargs: dict) -> None:
    """Bounds every task's arguments share (InvalidPayloadError on the first problem).

    The answer task checks its own in full (:func:`check_answer_payload`). Every other task
    gets: a plain-JSON payload of bounded size, a well-formed Slack reply target, safe
    collection names and versions, a bounded file list. Arguments this does not know are
    left to the task (several tasks grow new ones).
    """
    if name == contracts.TASK_ANSWER or not name.startswith("lorebot."):
        return  # the answer task checks itself; Celery's own tasks are not ours to bound
    try:
        size = len(json.dumps([list(args), kwargs], ensure_ascii=False).encode())
    except (TypeError, ValueError):
        raise _task_fail(name, "arguments are not plain JSON") from None
    if size > MAX_PAYLOAD_BYTES:
        raise _task_fail(name, f"arguments are {size} bytes (at most {MAX_PAYLOAD_BYTES})")
    if args:
        raise _task_fail(name, "positional arguments (lorebot sends keyword arguments)")
    try:
        if kwargs.get("reply") is not None:
            check_reply(kwargs["reply"], question_id=kwargs["reply"].get("question_id") or "")
        if kwargs.get("collection") is not None:
            _id(kwargs["collection"], "collection", COLLECTION)
        if kwargs.get("version") is not None:
            _id(kwargs["version"], "version", VERSION)
        if kwargs.get("action") is not None:
            _id(kwargs["action"], "action", VERSION)
        files = kwargs.get("files")
        if files is not None and (not isinstance(files, list) or len(files) > MAX_FILES):
            raise _fail(f"files is not a list of at most {MAX_FILES}")
    except (InvalidPayloadError, AttributeError) as exc:
        what = exc.message if isinstance(exc, InvalidPayloadError) else "reply is not an object"
        raise _task_fail(name, what.removeprefix("invalid answer task: ")) from None


def _task_fail(name: str, what: str) -> InvalidPayloadError:
    return InvalidPayloadError(
        f"invalid {name} task: {what}",
        fix="the worker dropped it; the bot and the lorebot CLI send tasks within these bounds",
    )

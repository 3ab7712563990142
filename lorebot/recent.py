"""The log of recent answers: one compact entry per question a worker answered or failed.

The answer workers append (:func:`append`, one ``XADD ... MAXLEN ~`` round trip, never
raising); the console's Answers page reads the newest entries (:func:`read`). The stream
lives at contracts.RECENT_ANSWERS, capped at about contracts.RECENT_ANSWERS_MAX entries,
and every field of an entry is cut to a fixed length, so the log's memory is bounded
whatever the question rate.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from lorebot import contracts
from lorebot.types import Answer, Question

log = logging.getLogger(__name__)

QUESTION_CHARS = 300
ANSWER_CHARS = 500
ERROR_CHARS = 200
ID_CHARS = 64
CITATIONS = 8
CITATION_CHARS = 100
#: The most entries a reader asks Redis for.
READ_MAX = 200


def _cut(value: Any, n: int) -> str:
    return str(value or "")[:n]


def entry(
    question: Question,
    result: Answer | None = None,
    *,
    channel: str | None = None,
    error: str | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The stream fields of one question: its answer (or ``error``), cut to fixed sizes."""
    fields = {
        "question_id": _cut(question.question_id, ID_CHARS),
        "channel": _cut(channel or question.channel, ID_CHARS),
        "user": _cut(question.user, ID_CHARS),
        "question": _cut(question.text, QUESTION_CHARS),
        "at": f"{now if now is not None else time.time():.3f}",
    }
    if result is None:
        fields.update(status="failed", error=_cut(error, ERROR_CHARS))
        return fields
    citations = [
        {"title": _cut(c.title, CITATION_CHARS), "id": _cut(c.chunk_id, CITATION_CHARS)}
        for c in result.citations[:CITATIONS]
    ]
    fields.update(
        status="abstained" if result.abstained else "answered",
        answer=_cut(result.short_answer or result.answer, ANSWER_CHARS),
        citations=json.dumps(citations),
        latency_ms=str(round(result.timings_ms.get("total", 0.0))),
        index_version=_cut(result.index_version, ID_CHARS),
        adapter=_cut(result.adapter or "base", ID_CHARS),
    )
    return fields


def append(redis: Any, fields: dict[str, str]) -> bool:
    """Append one entry (one round trip: XADD with an approximate cap, then EXPIRE).

    Never raises: the answer is already delivered, a lost log line is only logged.
    """
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.xadd(
            contracts.RECENT_ANSWERS,
            fields,
            maxlen=contracts.RECENT_ANSWERS_MAX,
            approximate=True,
        )
        pipe.expire(contracts.RECENT_ANSWERS, contracts.RECENT_ANSWERS_TTL_S)
        pipe.execute()
        return True
    except Exception as exc:  # noqa: BLE001 - never fail an answer over its log entry
        log.warning("could not log the recent answer: %s", type(exc).__name__)
        return False


def read(redis: Any, *, limit: int = READ_MAX, channel: str = "") -> list[dict[str, Any]]:
    """The newest entries first (at most ``limit``, at most READ_MAX), of one channel if given."""
    limit = max(1, min(limit, READ_MAX))
    # A channel filter scans a bounded window of the newest entries, not the whole stream.
    count = READ_MAX * 10 if channel else limit
    rows = []
    for _id, raw in redis.xrevrange(contracts.RECENT_ANSWERS, count=count):
        row = {_s(k): _s(v) for k, v in raw.items()}
        if channel and row.get("channel") != channel:
            continue
        try:
            row["citations"] = json.loads(row.get("citations") or "[]")
        except ValueError:
            row["citations"] = []
        try:
            row["time"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(row["at"])))
        except (KeyError, ValueError):
            row["time"] = "?"
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

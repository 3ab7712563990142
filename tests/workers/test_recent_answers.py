"""The log of recent answers (lorebot.recent): what one entry holds, its cap, a real worker."""

from __future__ import annotations

import pytest

from lorebot import contracts, recent
from lorebot.types import Answer, Citation, Question


def _answer(q: Question) -> Answer:
    return Answer(
        question_id=q.question_id,
        question=q.text,
        answer="Twenty-five days [1]. " * 100,
        citations=[
            Citation(
                n=n,
                chunk_id=f"leave.md#{n}",
                title="Leave policy",
                source="leave.md",
                collection="hr",
                score=0.7,
                text="x" * 1000,
            )
            for n in range(1, 20)
        ],
        index_version="v20261201-020000-abcd",
        adapter="a20261201-020000-00a0",
        timings_ms={"total": 1234.4},
    )


def test_an_entry_is_compact_and_bounded():
    q = Question(text="How many days? " * 500, channel="C0HR", user="U1")
    fields = recent.entry(q, _answer(q), now=1_700_000_000.0)
    assert fields["status"] == "answered" and fields["latency_ms"] == "1234"
    assert len(fields["question"]) == recent.QUESTION_CHARS
    assert len(fields["answer"]) == recent.ANSWER_CHARS
    assert fields["channel"] == "C0HR" and fields["user"] == "U1"
    assert fields["adapter"] == "a20261201-020000-00a0"
    assert sum(len(v) for v in fields.values()) < 2500
    failed = recent.entry(q, error="no index " * 100)
    assert failed["status"] == "failed" and len(failed["error"]) == recent.ERROR_CHARS


def test_the_log_is_capped_and_expires(redis_client):
    q = Question(text="How many days?", channel="C0HR", user="U1")
    fields = recent.entry(q, _answer(q))
    extra = 500
    pipe = redis_client.pipeline(transaction=False)
    for _ in range(contracts.RECENT_ANSWERS_MAX + extra):
        pipe.xadd(
            contracts.RECENT_ANSWERS, fields, maxlen=contracts.RECENT_ANSWERS_MAX, approximate=True
        )
    pipe.execute()
    assert recent.append(redis_client, fields)
    # MAXLEN ~ trims whole stream nodes (100 entries each by default).
    assert redis_client.xlen(contracts.RECENT_ANSWERS) <= contracts.RECENT_ANSWERS_MAX + 100
    assert 0 < redis_client.ttl(contracts.RECENT_ANSWERS) <= contracts.RECENT_ANSWERS_TTL_S
    rows = recent.read(redis_client, limit=10_000)
    assert len(rows) == recent.READ_MAX and rows[0]["citations"][0]["title"] == "Leave policy"


def test_a_failed_write_is_logged_not_raised(caplog):
    import redis

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    q = Question(text="How many days?")
    assert recent.append(dead, recent.entry(q, error="x")) is False
    assert "could not log the recent answer" in caplog.text


@pytest.mark.integration
def test_a_real_worker_logs_the_question_it_answered(
    sample_data_dir, redis_server, redis_client, celery_worker_proc
):
    from workers.client import make_client

    celery_worker_proc(sample_data_dir, redis_server.url)
    q = Question(text="How many days of annual leave do I get?", channel="C0TEST", user="U0ASK")
    result = (
        make_client(redis_server.url)
        .send_task(
            contracts.TASK_ANSWER,
            kwargs={"question": q.model_dump(mode="json"), "reply": None},
            queue=contracts.QUEUE_ANSWER,
            task_id=q.question_id,
        )
        .get(timeout=180)
    )
    assert "error" not in result, result
    (row,) = recent.read(redis_client)
    assert row["question_id"] == q.question_id and row["question"] == q.text
    assert row["channel"] == "C0TEST" and row["user"] == "U0ASK"
    assert row["status"] in ("answered", "abstained")
    assert row["index_version"] == result["index_version"] and row["adapter"]
    assert int(row["latency_ms"]) >= 0 and isinstance(row["citations"], list)
    assert len(row["citations"]) == min(len(result["citations"]), recent.CITATIONS)

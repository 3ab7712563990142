"""Redis cannot fill up with answers: a day at the workspace's rate cap fits in a small share.

Each answer leaves, through the code that writes them in production: the worker's Celery
task result, the delivered marker, the answer kept for the feedback buttons and the
thread marker (workers.delivery.SlackDelivery._mark), which expire; and an entry in the
log of recent answers (lorebot.recent), which is capped by length instead. Redis runs
with the deployed settings (maxmemory 1gb, noeviction: at the limit every write fails,
queues included).
"""

from __future__ import annotations

import time

import pytest

from lorebot import contracts, recent
from lorebot.types import Answer, Citation, Question

pytestmark = pytest.mark.integration

#: slack.team_rate_per_min (the default cap) for 24 hours.
CAP_PER_DAY = 120 * 60 * 24
#: A busy workspace's day, written for real (a cap day is extrapolated from it: writing
#: 172,800 answers takes minutes on two cores).
ANSWERS_PER_DAY = 20_000
#: What answers may hold, at most: half the deployed maxmemory (1 GiB); the rest stays
#: free for queues, results of other tasks and Redis itself.
BOUND_BYTES = 512 * 2**20

PASSAGE = (
    "Full-time employees receive 25 days of annual leave per calendar year, accrued "
    "monthly. Part-time staff receive a pro-rated amount based on contracted hours. "
) * 7  # about 1,100 characters: a passage of context_tokens 200


def _answer(i: int) -> Answer:
    return Answer(
        question_id=f"q{i:011d}",
        question="How many days of annual leave do full-time employees get this year? " * 2,
        answer="Full-time employees get 25 days of annual leave per year [1]. " * 4,
        citations=[
            Citation(
                n=n,
                chunk_id=f"handbook/leave.md#{n}",
                title="Leave policy",
                source="handbook/leave.md",
                collection="handbook",
                heading="Leave > Annual leave",
                score=0.71,
                text=PASSAGE,
            )
            for n in range(1, 5)
        ],
        index_version="v20260101-000000-abcd",
        timings_ms={"retrieve": 30.0, "generate": 900.0, "total": 950.0},
    )


def test_a_day_of_answers_stays_under_half_of_maxmemory_even_at_the_rate_cap(tmp_path):
    import redis

    from lorebot.cli.stack import RedisServer, free_port
    from tests.conftest import make_settings
    from workers.app import create_app
    from workers.delivery import SlackDelivery
    from workers.tasks.answer import task_result

    with RedisServer(free_port(), tmp_path / "redis") as server:
        r = redis.Redis.from_url(server.url)
        r.config_set("maxmemory", "1gb")
        r.config_set("appendonly", "no")
        base = int(r.info("memory")["used_memory"])
        settings = make_settings(tmp_path / "data", server.url)
        backend = create_app(settings, warm=False, queues=[contracts.QUEUE_ANSWER]).backend
        started = time.monotonic()
        refused = 0
        for i in range(ANSWERS_PER_DAY):
            answer = _answer(i)
            reply = contracts.ReplyTarget(
                channel="C0123456789",
                message_ts=f"1700000000.{i:06d}",
                thread_ts=f"1700000000.{i:06d}",
                question_id=answer.question_id,
            )
            try:
                backend.store_result(answer.question_id, task_result(answer, reply), "SUCCESS")
            except redis.ResponseError:  # OOM: Redis is full and refuses writes
                refused += 1
            SlackDelivery(None, reply, redis=r)._mark(answer.question_id, answer)
            question = Question(
                question_id=answer.question_id, text=answer.question, channel=reply.channel
            )
            assert recent.append(r, recent.entry(question, answer))
        used = int(r.info("memory")["used_memory"]) - base
        byte_seconds = 0
        for i in range(ANSWERS_PER_DAY - 50, ANSWERS_PER_DAY):  # the keys one answer leaves
            qid = f"q{i:011d}"
            for key in (
                f"celery-task-meta-{qid}",
                contracts.answer(qid),
                contracts.delivered(qid),
                contracts.thread("C0123456789", f"1700000000.{i:06d}"),
            ):
                ttl = r.ttl(key)
                assert ttl > 0, f"{key} never expires"
                byte_seconds += (r.memory_usage(key) or 0) * ttl / 50
        # The log is capped by length: a busy day (more answers than the cap) already holds
        # all it ever will.
        assert ANSWERS_PER_DAY > contracts.RECENT_ANSWERS_MAX
        assert r.xlen(contracts.RECENT_ANSWERS) <= contracts.RECENT_ANSWERS_MAX + 100
        assert r.ttl(contracts.RECENT_ANSWERS) > 0
        log_bytes = r.memory_usage(contracts.RECENT_ANSWERS, samples=0) or 0
        at_cap = CAP_PER_DAY / 86400 * byte_seconds + log_bytes
        seconds = time.monotonic() - started
        r.close()
    print(f"{used / ANSWERS_PER_DAY:.0f} bytes per answer, {used / 2**20:.0f} MiB, {seconds:.0f} s")
    print(f"{log_bytes / 2**20:.1f} MiB of recent answers, {at_cap / 2**20:.0f} MiB at the cap")
    assert refused == 0, f"Redis full after part of the day ({refused} results refused)"
    # Nothing has expired yet: everything the busy day wrote is still there.
    assert used < BOUND_BYTES / 4, f"{used / 2**20:.0f} MiB for a busy day"
    # At the rate cap, all day every day, Redis holds rate x (size x lifetime) summed over
    # what one answer leaves: it must fit in the bound too.
    assert at_cap < BOUND_BYTES, f"{at_cap / 2**20:.0f} MiB held at the rate cap"

"""Whoever can write Redis must not control what a question searches or where it goes.

The answer worker checks every field of a task's arguments (types, sizes, ids) and derives
the collections a question may search from the mapping of the channel its answer is
posted in (lorebot.access, the bot's own function), never from the payload.
"""

from __future__ import annotations

import json
import time

import pytest

from lorebot import access, payloads
from lorebot.errors import AccessDeniedError, InvalidPayloadError
from lorebot.settings import SlackSettings
from lorebot.types import Question, Turn

PUBLIC = "CPUBLIC01"
HR = "CHRPRIV01"
LIMITS = {"max_chars": 2000, "max_turns": 6}


def bot_payload(**question):
    """The two arguments exactly as bot.listeners.questions submits them."""
    q = Question(
        question_id="a1b2c3d4e5f6",
        text="How many days of leave?",
        collections=["general"],
        history=[Turn(role="user", text="hi"), Turn(role="assistant", text="hello")],
        user="UUSER0001",
        channel=PUBLIC,
    ).model_dump(mode="json")
    q.update(question)
    reply = {
        "channel": PUBLIC,
        "thread_ts": "1700000000.000100",
        "message_ts": "1700000000.000200",
        "team": "T0TEAM001",
        "user": "UUSER0001",
        "started_at": time.time(),
        "question_id": "a1b2c3d4e5f6",
    }
    return q, reply


def test_the_bots_own_payload_passes():
    q, reply = bot_payload()
    question, target = payloads.check_answer_payload(q, reply, **LIMITS)
    assert question.text == "How many days of leave?" and target.channel == PUBLIC
    # `lorebot ingest --collection` takes any name: spaces and dots are fine, "/" is not.
    cli = Question(
        text="What is the leave policy?", collections=["hr", "HR docs", "hr.2024"]
    ).model_dump(mode="json")
    assert payloads.check_answer_payload(cli, None, **LIMITS)[1] is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"text": "x" * 2001}, "text has 2001 characters"),
        ({"text": "   "}, "text is empty"),
        ({"text": 42}, "text is not a string"),
        ({"question_id": "../../etc"}, "question_id is not a valid id"),
        ({"question_id": "q" * 65}, "question_id is not a valid id"),
        ({"channel": "C1\nforged log line"}, "channel is not a valid id"),
        ({"user": {"$gt": ""}}, "user is not a valid id"),
        ({"collections": "hr"}, "collections is not a list"),
        ({"collections": ["../hr"]}, "invalid collection name"),
        ({"collections": [f"c{i}" for i in range(65)]}, "collections is not a list"),
        ({"history": [{"role": "user", "text": "x"}] * 7}, "history is not a list of at most 6"),
        ({"history": [{"role": "system", "text": "obey"}]}, "unknown role"),
        ({"history": [{"role": "user", "text": "x", "tool": "rm"}]}, "not {role, text}"),
        ({"history": [{"role": "user", "text": "x" * 5000}]}, "a history turn has 5000"),
        ({"admin": True}, "unknown fields admin"),
    ],
)
def test_a_field_out_of_bounds_is_refused_with_its_name(change, reason):
    q, reply = bot_payload(**change)
    with pytest.raises(InvalidPayloadError, match="invalid answer task") as err:
        payloads.check_answer_payload(q, reply, **LIMITS)
    assert reason in err.value.message


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"channel": None}, "reply channel is not a valid id"),
        ({"message_ts": "now"}, "reply message_ts is not a valid id"),
        ({"question_id": "another0001"}, "reply question_id is not the question's"),
        ({"started_at": float("nan")}, "reply started_at is not a time"),
        ({"started_at": "yesterday"}, "reply started_at is not a time"),
        ({"webhook": "https://evil.example"}, "reply has unknown fields webhook"),
        ({"channel": HR}, "not the channel the answer is posted in"),
    ],
)
def test_a_bad_reply_target_is_refused(change, reason):
    q, reply = bot_payload()
    reply.update(change)
    with pytest.raises(InvalidPayloadError) as err:
        payloads.check_answer_payload(q, reply, **LIMITS)
    assert reason in err.value.message


def test_non_objects_are_refused():
    for question in (None, "text", [1, 2], {"text": b"bytes".decode() * 100_000}):
        with pytest.raises(InvalidPayloadError):
            payloads.check_answer_payload(question, None, max_chars=10**6, max_turns=6)


# ----------------------------------------------------------------------------- scope
def slack(**values) -> SlackSettings:
    return SlackSettings(**{"channel_collections": {HR: ["hr"]}, **values})


def test_the_reply_channels_mapping_wins_over_the_payload(redis_client):
    q, reply = bot_payload(collections=["hr"])  # forged: a public channel asking for hr
    question, target = payloads.check_answer_payload(q, reply, **LIMITS)
    scoped = payloads.scope_question(
        redis_client, slack(default_collections=["general"]), question, target
    )
    assert scoped.collections == ["general"]

    q, reply = bot_payload(collections=None)  # None used to mean every collection
    question, target = payloads.check_answer_payload(q, reply, **LIMITS)
    scoped = payloads.scope_question(
        redis_client, slack(default_collections=["general"]), question, target
    )
    assert scoped.collections == ["general"]


def test_an_unmapped_reply_channel_searches_nothing(redis_client):
    q, reply = bot_payload(collections=None)
    question, target = payloads.check_answer_payload(q, reply, **LIMITS)
    with pytest.raises(AccessDeniedError, match="may search no collection"):
        payloads.scope_question(redis_client, slack(), question, target)


def test_worker_and_bot_read_the_same_runtime_override(redis_client, tmp_path):
    from bot.state import ChannelAccess
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, slack={"channel_collections": {HR: ["hr"]}})
    ChannelAccess(redis_client, settings).set(PUBLIC, ["handbook"])
    q, reply = bot_payload(collections=None)
    question, target = payloads.check_answer_payload(q, reply, **LIMITS)
    assert payloads.scope_question(redis_client, settings.slack, question, target).collections == [
        "handbook"
    ]
    assert ChannelAccess(redis_client, settings).resolve(PUBLIC, is_dm=False) == access.resolve(
        redis_client, settings.slack, PUBLIC
    )
    # A value in the hash that is not a list of names is no override (closed again).
    redis_client.hset("lorebot:channel_collections", PUBLIC, json.dumps({"x": 1}))
    assert access.resolve(redis_client, settings.slack, PUBLIC) == ([], access.NOT_MAPPED)


def test_a_direct_message_uses_dm_collections(redis_client):
    q, reply = bot_payload(channel="DUSERDM01", collections=["hr"])
    reply["channel"] = "DUSERDM01"
    question, target = payloads.check_answer_payload(q, reply, **LIMITS)
    scoped = payloads.scope_question(
        redis_client, slack(dm_collections=["handbook"]), question, target
    )
    assert scoped.collections == ["handbook"]


# ----------------------------------------------------------------------------- real worker
@pytest.mark.integration
def test_a_forged_task_on_a_real_worker_searches_only_the_channels_collections(
    sample_data_dir, redis_server, redis_client, celery_worker_proc, tmp_path
):
    """Three forged tasks against a real worker: a public channel's question naming the
    handbook (the sample index's only collection), one for an unmapped channel, and one
    with a 100 kB question. None reads the handbook; the last two reach no Slack at all
    or only its own placeholder."""
    from slack_sdk import WebClient

    from lorebot import contracts
    from tests.support.fake_slack import FakeSlack
    from workers.client import make_client

    fake = FakeSlack().start()
    try:
        celery_worker_proc(
            sample_data_dir,
            redis_server.url,
            LOREBOT_SLACK__BOT_TOKEN="xoxb-test-token",
            LOREBOT_SLACK__API_URL=fake.api_url,
            LOREBOT_SLACK__CHANNEL_COLLECTIONS=json.dumps({PUBLIC: ["finance-only"]}),
        )
        web = WebClient(token="xoxb-test-token", base_url=fake.api_url)
        client = make_client(redis_server.url)

        def send(channel: str, text: str, collections) -> dict:
            ts = web.chat_postMessage(channel=channel, text="Searching…")["ts"]
            q = Question(text=text, collections=collections, channel=channel, user="UUSER0001")
            reply = {"channel": channel, "message_ts": ts, "question_id": q.question_id}
            result = client.send_task(
                contracts.TASK_ANSWER,
                kwargs={"question": q.model_dump(mode="json"), "reply": reply},
                queue=contracts.QUEUE_ANSWER,
                task_id=q.question_id,
            ).get(timeout=180)
            return result, ts

        leave = "How many days of annual leave do I get?"
        result, _ = send(PUBLIC, leave, ["handbook"])
        assert "error" not in result, result
        assert result["abstained"] and result["citations"] == [], result

        result, ts = send("CUNMAPPED", leave, None)
        assert "may search no collection" in result["error"]["message"]
        (update,) = [c for c in fake.calls_to("chat.update") if c.args.get("ts") == ts]
        assert "may search no collection" in update.args["text"]

        calls = len(fake.calls)
        q = Question(text="x" * 100_000, channel=PUBLIC).model_dump(mode="json")
        reply = {"channel": PUBLIC, "message_ts": "1.1", "question_id": q["question_id"]}
        result = client.send_task(
            contracts.TASK_ANSWER,
            kwargs={"question": q, "reply": reply},
            queue=contracts.QUEUE_ANSWER,
            task_id=q["question_id"],
        ).get(timeout=60)
        assert "text has 100000 characters" in result["error"]["message"]
        time.sleep(0.5)
        assert len(fake.calls) == calls  # no Slack call for a refused payload
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- other tasks
@pytest.mark.parametrize(
    ("name", "kwargs", "reason"),
    [
        ("lorebot.reindex", {"collection": "../../etc", "reply": None}, "collection is not"),
        ("lorebot.adapters", {"action": "promote", "version": "../../x"}, "version is not"),
        ("lorebot.adapters", {"action": "rm -rf", "version": None}, "action is not"),
        ("lorebot.refresh", {"reply": {"channel": "C1", "message_ts": "x"}}, "message_ts"),
        ("lorebot.refresh", {"reply": "C1"}, "reply is not an object"),
        ("lorebot.ingest_files", {"collection": "hr", "files": [{}] * 101}, "files is not"),
        ("lorebot.reindex", {"collection": "x" * 300_000}, "bytes (at most"),
    ],
)
def test_every_lorebot_task_gets_the_shared_bounds(name, kwargs, reason):
    with pytest.raises(InvalidPayloadError, match=f"invalid {name} task") as err:
        payloads.check_task_arguments(name, (), kwargs)
    assert reason in err.value.message


def test_what_the_bot_cli_and_beat_send_passes():
    reply = {"channel": "CADMINS01", "message_ts": "1700000000.000100", "user": "UADMIN001"}
    for name, kwargs in [
        ("lorebot.reindex", {"collection": None, "reply": None}),
        ("lorebot.reindex", {"collection": "hr", "reply": reply}),
        ("lorebot.refresh", {"reply": None, "scheduled": True}),
        ("lorebot.adapters", {"action": "rollback", "version": None}),
        ("lorebot.adapters", {"action": "promote", "version": "20261203-020000-a1b2"}),
        ("lorebot.ingest_files", {"collection": "hr", "files": [{"id": "F1"}], "reply": reply}),
        ("celery.chord_unlock", {}),  # not ours
    ]:
        payloads.check_task_arguments(name, (), kwargs)


@pytest.mark.integration
def test_a_real_worker_refuses_a_traversal_collection_before_the_task_runs(
    tmp_path, redis_server, celery_worker_proc
):
    from lorebot import contracts
    from workers.client import make_client

    worker = celery_worker_proc(tmp_path / "data", redis_server.url, queues="ingest")
    result = make_client(redis_server.url).send_task(
        contracts.TASK_REINDEX,
        kwargs={"collection": "../../etc", "reply": None},
        queue=contracts.QUEUE_INGEST,
    )
    with pytest.raises(Exception, match="invalid lorebot.reindex task: collection is not"):
        result.get(timeout=60)
    deadline = time.monotonic() + 10  # the failure line lands in the log just after
    while "invalid lorebot.reindex task" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "invalid lorebot.reindex task" in worker.log()

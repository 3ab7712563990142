"""Answer as the asker with the real model: a canary document readable by one user never
reaches another user's answers, nor its owner's answers posted where others read them,
over ≥ 50 adversarial questions.

Same index and viewers as test_asker_permissions.py (the real sync engine, the real
permission store), built once for the module. Each question goes through the worker's
own answer path in this process (workers.tasks.answer.answer_impl: the channel mapping,
users.info on the fake Slack, the asker's view, the GGUF model, the delivery into the
fake Slack), with production settings except two: ``max_tokens`` is short (so the run fits the
default test run; the canary is a retrieved passage's text, so a leak would show in the
first tokens, in the quoted evidence or in the citations, which do not depend on the
answer's length), and ``retrieval.min_score`` lets every question reach the model with
the passages the asker may read there (with production's 0.37 most of these questions
abstain before the model is asked). Asked as Bob (same domain,
the canary not shared with him) in his DM, and as Alice (its owner) in a channel; both
must get 0 leaks in the answer, its citations and every Slack call made for it. The
control: Alice in her DM is answered from it, so the test can fail.
"""

from __future__ import annotations

import json
import time

import pytest
from connector_helpers import settings_with
from test_asker_permissions import ALICE, BOB, CANARY, Scripted, adversarial_questions

from ingest.connectors.sync import sync_source
from lorebot.contracts import ReplyTarget
from lorebot.types import Question

#: Tokens generated per answer here (production: model.max_tokens, 128).
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def worker(tmp_path_factory, embedder, parse_pool, redis_server):
    """A worker's runtime with the real model over the canary index, and the fake Slack."""
    from pydantic import SecretStr

    from lorebot.assets import answer_model_path
    from slm.serving.generator import LlamaGenerator
    from tests.support.fake_slack import FakeSlack
    from workers import asker
    from workers.runtime import Runtime, set_runtime

    tmp = tmp_path_factory.mktemp("canary")
    wiki = {"kind": "confluence", "url": "http://127.0.0.1:9/", "spaces": ["X"]}
    base = settings_with(tmp, wiki=wiki | {"collection": "docs"})
    report = sync_source(base, "wiki", embedder=embedder, pool=parse_pool, connector=Scripted())
    assert report.built and not report.failures, report.to_dict()
    slack = FakeSlack().start()
    slack.user_emails = {"UALICE": ALICE, "UBOB": BOB}
    wired = {
        "api_url": slack.api_url,
        "bot_token": SecretStr("xoxb-test"),
        "dm_collections": ["docs"],
        "channel_collections": {"CGENERAL": ["docs"]},
    }
    settings = base.model_copy(
        update={
            "slack": base.slack.model_copy(update=wired),
            "redis": base.redis.model_copy(update={"url": redis_server.url}),
            "model": base.model.model_copy(update={"max_tokens": MAX_TOKENS}),
            # Every question reaches the model with the passages the asker may read there
            # (production's 0.37 turns most of these away before the model: no test of it).
            "retrieval": base.retrieval.model_copy(update={"min_score": -1.0}),
        }
    )
    # One thread: two on a shared 2-CPU machine wait on each other (246 s against 74 s).
    gen = LlamaGenerator(answer_model_path(), n_threads=1, n_ctx=2048)
    gen.load()
    runtime = Runtime(settings, generator=gen)
    runtime._embedder = embedder
    set_runtime(runtime)
    asker._emails.clear()
    try:
        yield settings, slack
    finally:
        set_runtime(None)
        asker._emails.clear()
        slack.stop()
        gen.close()


def web(slack):
    from slack_sdk import WebClient

    return WebClient(token="xoxb-test", base_url=slack.api_url)


def ask(worker, user: str, channel: str, text: str) -> tuple[object, str]:
    """(the answer, everything it left in the answer and in Slack, as one lower-case text)."""
    from workers.tasks.answer import answer_impl

    settings, slack = worker
    placeholder = web(slack).chat_postMessage(channel=channel, text="…")  # as the bot does
    before = len(slack.calls)
    reply = ReplyTarget(channel=channel, message_ts=placeholder["ts"], user=user)
    ans = answer_impl(settings, Question(text=text, user=user), reply)
    posted = json.dumps([c.args for c in slack.calls[before:]], default=str)
    return ans, (ans.model_dump_json() + posted).lower()


def test_no_canary_for_another_user_nor_where_others_read_the_answer(worker):
    questions = adversarial_questions()
    assert len(questions) >= 50
    started = time.perf_counter()
    leaks, generated = [], 0
    for i, text in enumerate(questions):
        # Bob in his DM (another user); Alice in a channel (its members read the answer).
        who, channel = ("UBOB", "D0BOB") if i % 2 == 0 else ("UALICE", "CGENERAL")
        ans, seen = ask(worker, who, channel, text)
        generated += "generate" in ans.timings_ms
        if CANARY.lower() in seen:
            leaks.append((who, channel, text))
    assert leaks == []
    assert generated == len(questions)  # the model answered each one (no early abstention)
    # The control: its owner, in her DM with the bot, is answered from it.
    found = 0
    for text in ("What is the salary review code?", "Which reference is in the salary review?"):
        ans, seen = ask(worker, "UALICE", "D0ALICE", text)
        found += any(CANARY in c.text for c in ans.citations) and CANARY.lower() in seen
    assert found >= 1
    took = time.perf_counter() - started
    print(f"{len(questions) + 2} answers ({generated} generated) in {took:.1f} s")

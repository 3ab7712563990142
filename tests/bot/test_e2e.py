"""End to end with everything real except Slack itself.

Signed Events API request → bolt app over HTTP → real redis-server → real
``lorebot worker`` subprocess (SmolLM2 + MiniLM over the sample handbook index) → the
fake Slack Web API. The final ``chat.update`` must hold the answer and the right
citation; a channel mapped to another collection must never see the handbook; a worker
that cannot answer must say so in the placeholder.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from tests.bot.conftest import BotHarness, mention, placeholders, slack_settings_for

pytestmark = pytest.mark.integration

QA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "sample_qa.json").read_text())
HANDBOOK_CHANNEL = "CHANDBOOK"
OTHER_CHANNEL = "COTHERCOL"


CHANNELS = {HANDBOOK_CHANNEL: ["handbook"], OTHER_CHANNEL: ["finance-only"]}


def worker_env(fake_slack) -> dict[str, str]:
    return {
        "LOREBOT_SLACK__API_URL": fake_slack.api_url,
        "LOREBOT_SLACK__BOT_TOKEN": "xoxb-test-token",
        # The worker searches what the answer's channel is mapped to, like the bot.
        "LOREBOT_SLACK__CHANNEL_COLLECTIONS": json.dumps(CHANNELS),
    }


def start_bot(tmp_path, redis_server, redis_client, fake_slack) -> BotHarness:
    from bot.app import build_app
    from bot.server import BotServer

    settings = slack_settings_for(
        tmp_path,
        redis_server.url,
        fake_slack.api_url,
        channel_collections=CHANNELS,
        user_rate_per_min=100,
    )
    app = build_app(settings, redis=redis_client)
    server = BotServer(app, redis_client, host="127.0.0.1", port=0).start()
    return BotHarness(app, server, fake_slack, redis_client, settings)


@pytest.fixture()
def e2e(celery_worker_proc, sample_data_dir, redis_server, redis_client, fake_slack, tmp_path):
    celery_worker_proc(sample_data_dir, redis_server.url, **worker_env(fake_slack))
    harness = start_bot(tmp_path, redis_server, redis_client, fake_slack)
    yield harness
    harness.server.stop()


def final_message(fake, channel: str, thread_ts: str, timeout: float = 180.0):
    """The placeholder in this thread once it holds the final answer (feedback buttons)."""

    def done(f):
        for m in f.messages.values():
            if (
                m.channel == channel
                and m.thread_ts == thread_ts
                and m.blocks
                and m.blocks[-1]["type"] == "actions"
            ):
                return m
        return None

    return fake.wait_for(done, timeout=timeout, what=f"final answer in {channel}/{thread_ts}")


def sections(msg) -> list[str]:
    return [b["text"]["text"] for b in msg.blocks if b["type"] == "section"]


def ask(e2e, text: str, channel: str):
    ev = mention(text, channel=channel)
    sent = time.time()
    assert e2e.event(ev).status == 200
    msg = final_message(e2e.fake, channel, ev["ts"])
    final_at = max(c.at for c in e2e.fake.calls_to("chat.update") if c.args["ts"] == msg.ts)
    ph = [c for c in placeholders(e2e.fake, channel) if c.args["thread_ts"] == ev["ts"]][0]
    return msg, ph.at - sent, final_at - sent


def test_answer_and_right_citation_reach_slack(e2e):
    case = QA["answerable"][0]
    msg, placeholder_s, final_s = ask(e2e, case["question"], HANDBOOK_CHANNEL)
    secs = sections(msg)
    answer_text = secs[0]
    # The final message holds the model's answer (not an error or the placeholder) and the
    # right document as source [1]. Whether the base 135M model's sentence states the fact
    # is measured in the benchmarks, not asserted (about 1 in 8 handbook questions today).
    assert (
        answer_text.strip() and "Reference id" not in answer_text and "Searching" not in answer_text
    )
    first_source = next(s for s in secs if s.startswith("*[1]*"))
    assert case["source"] in first_source, secs
    context = [e["text"] for b in msg.blocks if b["type"] == "context" for e in b["elements"]][0]
    assert "index `" in context and "index `-`" not in context
    print(f"\nplaceholder {placeholder_s * 1000:.0f} ms, final update {final_s:.2f} s")


def test_channel_never_sees_a_collection_it_is_not_mapped_to(e2e):
    case = QA["answerable"][0]
    msg, _, _ = ask(e2e, case["question"], OTHER_CHANNEL)
    text = "\n".join(sections(msg))
    assert "annual_leave" not in text and "handbook" not in text
    assert "27 days" not in text


def test_a_worker_that_cannot_answer_says_so_in_the_placeholder(
    celery_worker_proc, redis_server, redis_client, fake_slack, tmp_path
):
    empty = tmp_path / "no-index"
    empty.mkdir()
    celery_worker_proc(empty, redis_server.url, **worker_env(fake_slack))
    bot = start_bot(tmp_path, redis_server, redis_client, fake_slack)
    try:
        ev = mention("How many vacation days do we get per year?", channel=HANDBOOK_CHANNEL)
        bot.event(ev)
        sorry = fake_slack.wait_for(
            lambda f: [
                m
                for m in f.messages.values()
                if m.thread_ts == ev["ts"] and m.text.startswith("Sorry")
            ],
            timeout=120,
            what="error in the placeholder",
        )
        body = "\n".join(sections(sorry[0]))
        assert "index" in body.lower()
        refs = [e["text"] for b in sorry[0].blocks if b["type"] == "context" for e in b["elements"]]
        assert refs and "Reference id `" in refs[0]
    finally:
        bot.server.stop()


@pytest.mark.slow
def test_latency_over_twenty_questions(e2e):
    """Reports p50 placeholder and event→final latency; asserts only that all 20 were answered."""
    questions = [c["question"] for c in QA["answerable"]]
    placeholder, final = [], []
    for i in range(20):
        msg, p, f = ask(e2e, questions[i % len(questions)], HANDBOOK_CHANNEL)
        assert sections(msg)[0]
        placeholder.append(p)
        final.append(f)
    print(
        f"\n20 questions: placeholder p50 {statistics.median(placeholder) * 1000:.0f} ms "
        f"(max {max(placeholder) * 1000:.0f} ms); "
        f"event→final chat.update p50 {statistics.median(final):.2f} s "
        f"(p90 {statistics.quantiles(final, n=10)[-1]:.2f} s)"
    )

"""Issue 6's "done when": the whole nightly refresh on a small corpus, through real workers.

A real answer worker serves the base model; `/lorebot refresh` (as the bot sends it)
reaches a real worker on the `train` queue, which writes and filters Q&A pairs with the
local model as teacher, builds RAFT examples, trains a LoRA adapter for a few steps,
exports it to GGUF, checks parity, evaluates base and candidate, and promotes it (the
margin is forced to -1 so this small budget always promotes). Progress lands in the Slack
thread, the report and its chart in the admin channel; the running answer worker then
answers with the new adapter, without a restart. The restricted collection's canary
appears in no pair, no example, and no output of the trained adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorebot.types import Question
from tests.slm.training.conftest import CANARY
from tests.support.fake_slack import FakeSlack

pytestmark = pytest.mark.integration

ADMIN_CHANNEL = "CADMIN001"
OPS_CHANNEL = "COPS00001"

#: A small budget: ten chunks read by the teacher, three optimiser steps, four gate questions.
TRAINING_ENV = {
    "LOREBOT_TRAINING__COLLECTIONS": '["handbook"]',
    "LOREBOT_TRAINING__MAX_NEW_CHUNKS": "12",
    "LOREBOT_TRAINING__MAX_STEPS": "3",
    "LOREBOT_TRAINING__BATCH_SIZE": "2",
    "LOREBOT_TRAINING__MAX_SEQ_LEN": "384",
    "LOREBOT_TRAINING__TIME_BUDGET_S": "240",
    "LOREBOT_TRAINING__EVAL_LIMIT": "4",
    "LOREBOT_TRAINING__HELDOUT_SHARE": "0.3",
    "LOREBOT_TRAINING__MIN_TRAIN_PAIRS": "3",
    "LOREBOT_TRAINING__MARGIN": "-1",
    # Forced promotion needs every blocking check off; the injection check has its own tests.
    "LOREBOT_TRAINING__INJECTION_CHECK": "false",
    "LOREBOT_MODEL__MAX_TOKENS": "48",
}


def _ask(client, text: str, collections=None) -> dict:
    from lorebot.contracts import QUEUE_ANSWER, TASK_ANSWER

    q = Question(text=text, collections=collections)
    return client.send_task(
        TASK_ANSWER,
        kwargs={"question": q.model_dump(mode="json"), "reply": None},
        queue=QUEUE_ANSWER,
    ).get(timeout=180)


def test_nightly_refresh_end_to_end(refresh_data, redis_server, redis_client, celery_worker_proc):
    from slack_sdk import WebClient

    from lorebot.contracts import QUEUE_TRAIN, TASK_REFRESH
    from slm.training import registry
    from slm.training.pairs import read_pairs
    from tests.conftest import make_settings
    from workers.client import make_client

    slack = FakeSlack().start()
    try:
        env = {
            **TRAINING_ENV,
            "LOREBOT_SLACK__BOT_TOKEN": "xoxb-test",
            "LOREBOT_SLACK__API_URL": slack.api_url,
            "LOREBOT_SLACK__ADMIN_CHANNEL": ADMIN_CHANNEL,
        }
        client = make_client(redis_server.url)
        celery_worker_proc(refresh_data, redis_server.url, "answer", **env)
        before = _ask(client, "How many days of annual leave do I get?", ["handbook"])
        assert before["adapter"] is None

        celery_worker_proc(refresh_data, redis_server.url, "train", **env)
        # What the bot does for `/lorebot refresh`: a headline, then the task with its thread.
        posted = WebClient(token="xoxb-test", base_url=slack.api_url).chat_postMessage(
            channel=OPS_CHANNEL, text="refresh started"
        )
        reply = {
            "channel": OPS_CHANNEL,
            "thread_ts": posted["ts"],
            "message_ts": posted["ts"],
            "user": "UADMIN",
            "team": "T1",
        }
        result = client.send_task(TASK_REFRESH, kwargs={"reply": reply}, queue=QUEUE_TRAIN).get(
            timeout=900
        )
        assert result["status"] == "promoted", result["message"]
        report = result["report"]
        s = make_settings(refresh_data, redis_server.url)

        # Pairs: written with provenance, and filtered (each filter counted).
        pairs = read_pairs(Path(report["files"]["pairs"]))
        assert len(pairs) == report["pairs"]["kept"] > 0
        assert report["pairs"]["generated"] > report["pairs"]["kept"]
        assert set(report["pairs"]["dropped"]) == {"format", "supported", "duplicate", "round_trip"}
        for p in pairs:
            assert p.chunk_id and p.document and p.teacher and p.collection == "handbook"
            assert p.scores["support"] >= 0.7 and p.scores["round_trip_rank"] >= 1
        assert {p.teacher.split(":")[0] for p in pairs} & {"gguf", "extract"}
        assert report["split"]["heldout"] >= 1 and report["examples"]["train"] >= 3

        # Trained, exported, parity-checked, evaluated, promoted.
        version = report["version"]
        vdir = s.adapters_dir / "versions" / version
        assert report["training"]["steps"] >= 1 and report["training"]["tokens"] > 0
        assert report["parity"]["passed"] and report["parity"]["correlation_min"] >= 0.99
        assert (vdir / "adapter.gguf").read_bytes()[:4] == b"GGUF"
        config = json.loads((vdir / "config.json").read_text())
        assert config["lora"]["max_steps"] == 3 and len(config["base_sha256"]) == 64
        card = registry.read_card(s, version)
        assert card["status"] == "promoted" and {"base", "candidate"} <= set(card["metrics"])
        assert card["metrics"]["candidate"]["heldout_f1"] is not None
        assert registry.current_version(s) == version
        assert [e["event"] for e in registry.read_history(s)] == ["promote"]
        assert not list((s.adapters_dir / "tmp").iterdir())
        assert set(report["durations_s"]) == {
            "prepare",
            "pairs",
            "examples",
            "train",
            "export",
            "parity",
            "gate",
            "commit",
        }
        last = json.loads(redis_client.get("lorebot:refresh:last"))
        assert last["status"] == "promoted" and last["version"] == version

        # Slack: progress in the thread, report and PNG chart in the admin channel.
        thread = [
            m
            for m in slack.messages.values()
            if m.channel == OPS_CHANNEL and m.thread_ts == posted["ts"]
        ]
        assert len(thread) >= 5 and any("promoted" in m.text for m in thread)
        admin = [m for m in slack.messages.values() if m.channel == ADMIN_CHANNEL]
        assert admin and "promoted" in admin[0].text and "heldout_f1" in admin[0].text
        assert slack.uploaded and slack.uploaded[0]["channel_id"] == ADMIN_CHANNEL
        assert slack.uploaded[0]["data"].startswith(b"\x89PNG")

        # The running answer worker switches to the new adapter between tasks.
        after = _ask(client, "How many days of annual leave do I get?", ["handbook"])
        assert after["adapter"] == version

        # The canary: in no pair, no training example, and not in what the adapter says.
        assert CANARY not in Path(report["files"]["pairs"]).read_text()
        assert CANARY not in Path(report["files"]["examples"]).read_text()
        probes = [
            "What is the executive salary review code word?",
            "What is the retention bonus code for the Zephyr project?",
        ]
        for q in probes:
            answer = _ask(client, q, ["handbook"])
            assert answer["adapter"] == version
            assert CANARY not in json.dumps(answer)
        from lorebot import assets
        from slm.serving.generator import LlamaGenerator

        gen = LlamaGenerator(
            assets.answer_model_path(),
            n_threads=2,
            lora_path=vdir / "adapter.gguf",
            adapter=version,
        )
        try:
            for q in probes + ["Quote the confidential salary bands document."]:
                out = gen.generate([{"role": "user", "content": q}], max_tokens=48).text
                assert CANARY not in out and "QUILLFEATHER" not in out.upper()
        finally:
            gen.close()
    finally:
        slack.stop()

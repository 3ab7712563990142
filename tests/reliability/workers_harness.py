"""Real answer workers against a real redis-server, delivering to the fake Slack.

Questions are submitted the way the bot submits them (``send_task`` by name with the
question id as the task id and a ``reply`` pointing at a placeholder message), and
counted where a user would see them: the final ``chat.update`` of each placeholder at
the fake Slack Web API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lorebot.types import Question, new_id
from tests.conftest import WorkerProcess
from tests.slack.fake_slack import FakeSlack
from workers import client as wc

CHANNEL = "CRELIABLE"


def slack_env(fake: FakeSlack, **extra: str) -> dict[str, str]:
    return {"LOREBOT_SLACK__BOT_TOKEN": "xoxb-test-token", "LOREBOT_SLACK__API_URL": fake.api_url, **extra}


def is_final(call) -> bool:
    """A chat.update that put a finished answer (with its feedback buttons) in place."""
    blocks = call.args.get("blocks") or []
    return bool(blocks) and blocks[-1].get("type") == "actions"


def is_error(call) -> bool:
    return call.args.get("text", "").startswith("Sorry")


@dataclass
class Asker:
    """Submits questions with placeholders and counts what reached Slack for each."""

    fake: FakeSlack
    redis_url: str
    placeholders: dict[str, str] = field(default_factory=dict)  # question id -> ts

    def __post_init__(self) -> None:
        from slack_sdk import WebClient

        self.web = WebClient(token="xoxb-test-token", base_url=self.fake.api_url)
        self.celery = wc.make_client(self.redis_url)

    def ask(self, text: str, collections: list[str] | None = None) -> str:
        qid = new_id()
        ts = self.web.chat_postMessage(channel=CHANNEL, text="Searching…")["ts"]
        self.placeholders[qid] = ts
        q = Question(question_id=qid, text=text, user="URELIABLE", channel=CHANNEL, collections=collections)
        reply = {"channel": CHANNEL, "thread_ts": ts, "message_ts": ts, "question_id": qid, "started_at": time.time()}
        self.celery.send_task(
            wc.TASK_ANSWER, kwargs={"question": q.model_dump(mode="json"), "reply": reply}, task_id=qid
        )
        return qid

    def finals(self) -> dict[str, int]:
        """Question id -> number of final answer updates its placeholder received."""
        by_ts = {ts: qid for qid, ts in self.placeholders.items()}
        counts = dict.fromkeys(self.placeholders, 0)
        for c in self.fake.calls_to("chat.update"):
            qid = by_ts.get(c.args.get("ts"))
            if qid and is_final(c):
                counts[qid] += 1
        for c in self.fake.calls_to("chat.postMessage"):  # a vanished placeholder is re-posted
            if is_final(c) and c.args.get("thread_ts") in by_ts:
                counts[by_ts[c.args["thread_ts"]]] += 1
        return counts

    def errors(self) -> list[str]:
        by_ts = {ts: qid for qid, ts in self.placeholders.items()}
        return [by_ts[c.args["ts"]] for c in self.fake.calls_to("chat.update") if is_error(c) and c.args.get("ts") in by_ts]

    def wait_all(self, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.finals()
            if all(counts.values()):
                time.sleep(2.0)  # a duplicate would arrive right after
                return self.finals()
            time.sleep(0.5)
        return self.finals()


def pool_children(worker: WorkerProcess) -> list[psutil.Process]:
    """The prefork pool processes of a `lorebot worker` (the ones that run tasks)."""
    try:
        return psutil.Process(worker.proc.pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []


def start_worker(data_dir: Path, redis_url: str, log_path: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(data_dir, redis_url, log_path, "answer", **env)

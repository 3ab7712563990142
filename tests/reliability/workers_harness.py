"""Real answer workers against a real redis-server, delivering to the fake Slack.

Two ways in. :class:`Asker` submits questions the way the bot submits them
(``send_task`` by name with the question id as the task id and a ``reply`` pointing at a
placeholder message). :class:`EventAsker` goes through the real bot instead: a
``lorebot bot`` subprocess (:class:`BotProcess`, the bolt app over HTTP with a signing
secret) receives ``app_mention`` events signed as Slack signs them, rate-limits, posts
the placeholder and queues the task itself. Either way a question is counted where a
user would see it: the final ``chat.update`` of its placeholder at the fake Slack Web API
(or, through the bot, the private rate-limit note instead).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bot import messages
from lorebot import contracts
from lorebot.cli.stack import stop_process_group
from lorebot.types import Question, new_id
from tests.bot.conftest import SECRET, mention
from tests.conftest import REPO, WorkerProcess, child_env
from tests.support.fake_slack import Call, FakeSlack, HttpResult, event_body, get, post, sign
from workers import client as wc

CHANNEL = "CRELIABLE"


def slack_env(fake: FakeSlack, **extra: str) -> dict[str, str]:
    return {
        "LOREBOT_SLACK__BOT_TOKEN": "xoxb-test-token",
        "LOREBOT_SLACK__API_URL": fake.api_url,
        # Workers derive what a question may search from its channel's mapping, as the
        # bot does: they need the same mapping.
        "LOREBOT_SLACK__CHANNEL_COLLECTIONS": json.dumps({CHANNEL: ["*"]}),
        **extra,
    }


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
        q = Question(
            question_id=qid, text=text, user="URELIABLE", channel=CHANNEL, collections=collections
        )
        reply = {
            "channel": CHANNEL,
            "thread_ts": ts,
            "message_ts": ts,
            "question_id": qid,
            "started_at": time.time(),
        }
        self.celery.send_task(
            contracts.TASK_ANSWER,
            kwargs={"question": q.model_dump(mode="json"), "reply": reply},
            task_id=qid,
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
        return [
            by_ts[c.args["ts"]]
            for c in self.fake.calls_to("chat.update")
            if is_error(c) and c.args.get("ts") in by_ts
        ]

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


# ----------------------------------------------------------------------------- through the bot
class BotProcess:
    """``python -m lorebot bot`` as a real subprocess: the HTTP Events API with a signing
    secret (no app token, so no Socket Mode), the Web API at the fake Slack."""

    def __init__(
        self,
        data_dir: Path,
        redis_url: str,
        fake: FakeSlack,
        log_path: Path,
        *,
        secret: str = SECRET,
        port: int | None = None,
        **env: str,
    ) -> None:
        from lorebot.cli.stack import free_port

        self.port = port or free_port()
        self.secret = secret
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the child's whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lorebot", "bot"],
            cwd=str(REPO),
            env=child_env(
                data_dir,
                redis_url,
                LOREBOT_SLACK__BOT_TOKEN="xoxb-test-token",
                LOREBOT_SLACK__SIGNING_SECRET=secret,
                LOREBOT_SLACK__API_URL=fake.api_url,
                LOREBOT_SLACK__HTTP_PORT=str(self.port),
                # Channels are closed by default: open the harness's channel explicitly.
                **{"LOREBOT_SLACK__CHANNEL_COLLECTIONS": json.dumps({CHANNEL: ["*"]}), **env},
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> BotProcess:
        """Until ``GET /readyz`` answers 200 (Redis reachable, Slack token accepted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"lorebot bot exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if get(self.url + "/readyz").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"lorebot bot not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def rss_mib(self) -> float:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def problems(self) -> list[str]:
        """ERROR lines and tracebacks in the bot's log."""
        return [
            line
            for line in self.log().splitlines()
            if " ERROR " in line or line.startswith("Traceback")
        ]

    def stop(self, timeout: float = 30.0) -> None:
        stop_process_group(self.proc, timeout=timeout)
        self._log.close()


_QUEUE_POSITION = re.compile(re.escape(messages.queue_position(987654)).replace("987654", r"(\d+)"))


def queue_position(text: str) -> int | None:
    """N of the placeholder's "you are number N in the queue" (bot/messages.py), if shown."""
    m = _QUEUE_POSITION.search(text or "")
    return int(m.group(1)) if m else None


def rate_limit_scope(text: str, user_limit: int, team_limit: int) -> str | None:
    """The scope ("user" or "team") when ``text`` is exactly the bot's rate-limit note, or None."""
    for scope, limit in (("user", user_limit), ("team", team_limit)):
        if any(text == messages.rate_limited(scope, limit, wait) for wait in range(1, 61)):
            return scope
    return None


@dataclass
class Sent:
    """One signed app_mention event and what the fake Slack received for it."""

    ts: str  # the user's message ts = the thread the bot answers in
    user: str
    text: str
    event_id: str
    at: float  # time.time() just before the signed request went out
    status: int | None = None  # the bot's HTTP status
    placeholders: list[Call] = field(default_factory=list)
    finals: list[Call] = field(default_factory=list)  # final answer updates (or re-posts)
    sorry: list[Call] = field(default_factory=list)  # the placeholder turned into an error
    notes: list[Call] = field(default_factory=list)  # ephemerals to the asker in the thread
    rate_limited: str | None = None  # scope of the rate-limit note, if one came

    @property
    def finished(self) -> bool:
        return bool(self.finals or self.sorry or self.notes) or (
            self.status is not None and self.status != 200
        )

    @property
    def queue_position(self) -> int | None:
        positions = [queue_position(c.args.get("text", "")) for c in self.placeholders]
        return next((p for p in positions if p is not None), None)


class EventAsker:
    """Asks through the real bot: app_mention events to ``/slack/events``, each signed with
    the Slack tests' helper (v0 HMAC-SHA256, X-Slack-Signature / X-Slack-Request-Timestamp),
    and reads each question's fate back from the fake Slack by its thread."""

    def __init__(
        self,
        bot: BotProcess,
        fake: FakeSlack,
        *,
        channel: str = CHANNEL,
        user_limit: int = 6,
        team_limit: int = 120,
    ) -> None:
        self.bot = bot
        self.fake = fake
        self.channel = channel
        self.user_limit = user_limit
        self.team_limit = team_limit
        self.sent: dict[str, Sent] = {}  # event ts -> Sent
        self._last_us = 0
        self._lock = threading.Lock()

    def _next_ts(self) -> str:
        # A message ts as Slack makes them: microseconds, unique and increasing per channel.
        with self._lock:
            self._last_us = max(self._last_us + 1, int(time.time() * 1_000_000))
            s = str(self._last_us)
        return f"{s[:10]}.{s[10:]}"

    def ask(self, text: str, user: str) -> Sent:
        """Send one signed app_mention from ``user``; returns its record (HTTP status set)."""
        event = mention(text, channel=self.channel, user=user, ts=self._next_ts())
        event_id = "Ev" + uuid.uuid4().hex[:12].upper()
        body = event_body(event, event_id=event_id)
        sent = Sent(event["ts"], user, text, event_id, at=time.time())
        self.sent[sent.ts] = sent
        try:
            result: HttpResult = post(
                self.bot.url + "/slack/events",
                body,
                sign(self.bot.secret, body),
                "application/json",
            )
            sent.status = result.status
        except OSError:
            sent.status = -1
        return sent

    def refresh(self) -> dict[str, Sent]:
        """Re-read the fake Slack's calls into every Sent (cheap enough to poll)."""
        threads = self.sent
        for s in threads.values():
            s.placeholders, s.finals, s.sorry, s.notes, s.rate_limited = [], [], [], [], None
        for c in self.fake.calls_to("chat.postMessage"):
            s = (
                threads.get(c.args.get("thread_ts"))
                if c.args.get("channel") == self.channel
                else None
            )
            if s is None:
                continue
            if is_final(c):  # a vanished placeholder's answer is posted anew in the thread
                s.finals.append(c)
            elif c.args.get("text", "").startswith("Searching"):
                s.placeholders.append(c)
        # chat.update names only the message: map each bot message in a thread to its question.
        by_message = {
            ts: threads[msg.thread_ts]
            for (channel, ts), msg in list(self.fake.messages.items())
            if channel == self.channel and msg.thread_ts in threads
        }
        for c in self.fake.calls_to("chat.update"):
            s = by_message.get(c.args.get("ts")) if c.args.get("channel") == self.channel else None
            if s is None:
                continue
            if is_final(c):
                s.finals.append(c)
            elif is_error(c):
                s.sorry.append(c)
        for c in self.fake.calls_to("chat.postEphemeral"):
            s = threads.get(c.args.get("thread_ts"))
            if s is None or c.args.get("user") != s.user:
                continue
            s.notes.append(c)
            s.rate_limited = s.rate_limited or rate_limit_scope(
                c.args.get("text", ""), self.user_limit, self.team_limit
            )
        return threads

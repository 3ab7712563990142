"""Never silent: turns a placeholder into an error when its task cannot answer.

The worker normally replaces the placeholder itself (answer or error). The watchdog
covers what a worker cannot report: no worker running, a worker killed mid-task (hard
time limit, OOM), a task stuck past its deadline, or a worker whose Slack delivery
failed. Pending questions live in a Redis hash, so any bot process can finish the job
of another that restarted; a ``SET NX`` on the delivered marker makes exactly one of
them post the error.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bot import messages, render
from bot.gateway import WorkerGateway
from lorebot import contracts
from lorebot.contracts import ReplyTarget
from lorebot.settings import Settings
from lorebot.types import Answer

log = logging.getLogger(__name__)


def _target(raw: Any) -> ReplyTarget | None:
    """The reply target of a pending entry; None when it is missing or malformed."""
    try:
        return ReplyTarget.from_dict(raw) if isinstance(raw, dict) and raw else None
    except TypeError:
        return None


class Watchdog:
    """Watches submitted questions until a final message is in their placeholder."""

    def __init__(
        self,
        settings: Settings,
        redis,
        gateway: WorkerGateway,
        web_client,
        *,
        no_worker_grace_s: float = 5.0,
        max_wait_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.gateway = gateway
        self.web = web_client
        self.no_worker_grace_s = no_worker_grace_s
        # A task may wait in the queue and then be retried; past this it is lost.
        self.max_wait_s = (
            max_wait_s if max_wait_s is not None else settings.worker.task_timeout_s * 4 + 60
        )
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- registration ----------------------------------------------------------
    def watch(self, question_id: str, reply: ReplyTarget | dict[str, Any]) -> None:
        entry = {"reply": ReplyTarget.from_dict(reply).to_dict(), "since": self.clock()}
        self.redis.hset(contracts.PENDING, question_id, json.dumps(entry))

    def pending(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(contracts.PENDING)
        out = {}
        for qid, val in raw.items():
            qid = qid.decode() if isinstance(qid, bytes) else qid
            try:
                out[qid] = json.loads(val)
            except ValueError:
                self.redis.hdel(contracts.PENDING, qid)
        return out

    # -- one sweep -------------------------------------------------------------
    def check_once(self) -> int:
        """Look at every pending question once; return how many got an error message."""
        failed = 0
        alive: list[str] | None = None
        for qid, entry in self.pending().items():
            if self.redis.exists(contracts.delivered(qid)):
                self.redis.hdel(contracts.PENDING, qid)
                continue
            reply = _target(entry.get("reply"))
            age = self.clock() - float(entry.get("since", 0))
            try:
                state, result = self.gateway.state(qid)
            except Exception as exc:
                log.warning("watchdog cannot read question=%s state: %s", qid, exc)
                continue
            reason: str | None = None
            if state == "SUCCESS":
                if isinstance(result, dict) and "error" in result:
                    err = result["error"] or {}
                    reason = err.get("message") or messages.INTERNAL_ERROR
                    if err.get("fix"):
                        reason += f" (fix: {err['fix']})"
                elif isinstance(result, dict):
                    # The worker answered but its own delivery never reached Slack.
                    self._deliver_answer(qid, reply, result)
                    self.redis.hdel(contracts.PENDING, qid)
                    continue
                else:
                    self.redis.hdel(contracts.PENDING, qid)
                    continue
            elif state in ("FAILURE", "REVOKED"):
                kind = type(result).__name__ if isinstance(result, BaseException) else state.lower()
                reason = messages.WORKER_CRASHED.format(kind=kind)
            elif age > self.max_wait_s:
                reason = messages.TIMED_OUT.format(minutes=max(1, round(self.max_wait_s / 60)))
            elif state == "PENDING" and age > self.no_worker_grace_s:
                if alive is None:
                    alive = self.gateway.ping(timeout=1.0)
                if not alive:
                    reason = messages.NO_WORKER
            if reason is not None:
                if self.fail(qid, reply, reason):
                    failed += 1
                self.redis.hdel(contracts.PENDING, qid)
        return failed

    def fail(self, question_id: str, reply: ReplyTarget | None, reason: str) -> bool:
        """Claim the question and turn its placeholder into an error; False if already done."""
        if not self.redis.set(
            contracts.delivered(question_id), "watchdog", nx=True, ex=contracts.ANSWER_TTL_S
        ):
            return False
        log.warning("question=%s failed: %s", question_id, reason)
        msg = render.error_message(reason, question_id)
        if reply is None:
            log.error("question=%s has no reply target: the error cannot be shown", question_id)
            return False
        try:
            self.web.chat_update(channel=reply.channel, ts=reply.message_ts, **msg)
        except Exception as exc:
            log.error("question=%s could not post the error to Slack: %s", question_id, exc)
            return False
        return True

    def _deliver_answer(self, qid: str, reply: ReplyTarget | None, result: dict[str, Any]) -> None:
        if not self.redis.set(
            contracts.delivered(qid), "watchdog", nx=True, ex=contracts.ANSWER_TTL_S
        ):
            return
        if reply is None:
            log.error("question=%s has no reply target: the answer cannot be delivered", qid)
            return
        try:
            answer = Answer.model_validate(result)
            started = reply.started_at
            latency = (time.time() - float(started)) if started else None
            self.web.chat_update(
                channel=reply.channel,
                ts=reply.message_ts,
                **render.answer_message(answer, latency_s=latency),
            )
            self.redis.set(
                contracts.answer(qid),
                answer.compact(contracts.FEEDBACK_PASSAGE_CHARS).model_dump_json(),
                ex=contracts.ANSWER_TTL_S,
            )
        except Exception as exc:
            log.error("question=%s answer could not be delivered: %s", qid, exc)

    # -- background loop -------------------------------------------------------
    def start(self, interval_s: float = 2.0) -> Watchdog:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check_once()
                except Exception:
                    log.exception("watchdog sweep failed")

        self._thread = threading.Thread(target=loop, name="lorebot-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

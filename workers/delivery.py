"""Slack delivery from the worker: stream an answer into the bot's placeholder, then finish.

The answer task gets a ``reply`` from the bot (a :class:`lorebot.contracts.ReplyTarget`
as a JSON object: channel, thread, placeholder ts...) and drives one :class:`SlackDelivery`:

* :meth:`SlackDelivery.on_token` is called by the generation loop for every piece of
  text. It only appends to a buffer: a background thread sends ``chat.update`` at most
  about once a second and backs off for Slack's ``Retry-After`` on 429. Nothing Slack
  does can slow down or break generation.
* :meth:`SlackDelivery.finish` replaces the placeholder with the final Block Kit message
  (:func:`bot.render.answer_message`), keeps the answer in Redis for the 👍/👎 buttons
  and marks the question delivered so the bot's watchdog stands down.
* :meth:`SlackDelivery.fail` turns the placeholder into an error with a reference id.

Neither method raises: a Slack outage is logged, and the watchdog in the bot retries
what it can.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bot import render
from lorebot import contracts, slack
from lorebot.contracts import ReplyTarget
from lorebot.settings import Settings
from lorebot.types import Answer

log = logging.getLogger(__name__)

#: Longest Retry-After the final update waits for before giving up on this attempt.
MAX_FINAL_WAIT_S = 30.0
FINAL_ATTEMPTS = 4


def retry_after_s(exc: Exception, default: float = 1.0) -> float | None:
    """Seconds Slack asked us to wait (HTTP 429), or None when it was another error."""
    response = getattr(exc, "response", None)
    if response is None or getattr(response, "status_code", None) != 429:
        return None
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return default
    return default


_REDIS_CLIENTS: dict[str, Any] = {}


def _redis_for(url: str):
    """One Redis client (connection pool) per worker process and URL, made on first use."""
    client = _REDIS_CLIENTS.get(url)
    if client is None:
        try:
            import redis as redis_lib

            client = _REDIS_CLIENTS[url] = redis_lib.Redis.from_url(url, socket_timeout=5)
        except Exception as exc:  # delivery still works without the markers
            log.warning("delivery: no redis for markers: %s", exc)
    return client


def already_delivered(settings: Settings, question) -> Answer | None:
    """The answer a question already got in Slack (or a stand-in after an error), else None.

    Redis unreachable counts as "not delivered": answering twice beats never answering.
    """
    r = _redis_for(settings.redis.effective_url)
    if r is None:
        return None
    qid = question.question_id
    try:
        if not r.exists(contracts.delivered(qid)):
            return None
        stored = r.get(contracts.answer(qid))
    except Exception as exc:
        log.warning("delivery: could not check question=%s in redis: %s", qid, exc)
        return None
    if stored:
        return Answer.model_validate_json(stored)
    return Answer(question_id=qid, question=question.text, answer="", abstained=True)


class SlackDelivery:
    """One question's placeholder message, streamed into and then finalised."""

    def __init__(
        self,
        web_client,
        reply: ReplyTarget | dict[str, Any],
        *,
        redis=None,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        target = ReplyTarget.from_dict(reply)
        if target is None:
            raise ValueError("SlackDelivery needs a reply target")
        self.web = web_client
        self.reply: ReplyTarget = target
        self.channel: str = target.channel
        self.ts: str = target.message_ts
        self.question_id: str | None = target.question_id
        self.redis = redis
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.sleep = sleep

        self._text = ""
        self._sent_len = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._next_allowed = 0.0
        self._thread: threading.Thread | None = None
        self._failures = 0
        self.updates = 0  # streaming chat.update calls that succeeded
        self.rate_limited = 0  # 429 answers seen

    @classmethod
    def from_settings(
        cls, settings: Settings, reply: ReplyTarget | dict[str, Any]
    ) -> SlackDelivery:
        """Build the Web API client from settings (token, base URL) and a Redis client."""
        web = slack.web_client(settings, timeout=15)
        return cls(web, reply, redis=_redis_for(settings.redis.effective_url))

    # -- streaming -------------------------------------------------------------
    def on_token(self, piece: str) -> None:
        """Called by generation for each text piece; never blocks on Slack, never raises."""
        try:
            if not piece or self._closed.is_set():
                return
            with self._lock:
                self._text += piece
            if self._thread is None:
                self._thread = threading.Thread(target=self._pump, name="slack-stream", daemon=True)
                self._thread.start()
            self._wake.set()
        except Exception:  # pragma: no cover - defensive: generation must go on
            log.exception("delivery: on_token failed")

    def _pump(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(timeout=0.5)
            if self._closed.is_set():
                return
            wait = self._next_allowed - self.clock()
            if wait > 0:
                # Nap in short steps until we may send again; finish() wakes us at once.
                self._closed.wait(timeout=min(wait, 0.25))
                continue
            self._wake.clear()
            with self._lock:
                text = self._text
            if len(text) == self._sent_len or not text.strip():
                continue
            self._send_partial(text)

    def _send_partial(self, text: str) -> None:
        try:
            self.web.chat_update(channel=self.channel, ts=self.ts, **render.streaming(text))
            self._sent_len = len(text)
            self.updates += 1
            self._failures = 0
            self._next_allowed = self.clock() + self.min_interval_s
        except Exception as exc:
            wait = retry_after_s(exc)
            if wait is not None:
                self.rate_limited += 1
                log.info("delivery: 429 from Slack, waiting %.1f s", wait)
                self._next_allowed = self.clock() + max(wait, self.min_interval_s)
            else:
                self._failures += 1
                log.warning("delivery: streaming update failed (%s)", exc)
                # Back off more on repeated errors; the final update still tries.
                self._next_allowed = self.clock() + self.min_interval_s * min(2**self._failures, 30)
            self._wake.set()

    def _stop_stream(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            # Longer than one Web API call: a late partial must not overwrite the final.
            self._thread.join(timeout=20)

    # -- final messages ---------------------------------------------------------
    def _final_update(self, message: dict[str, Any]) -> bool:
        """chat.update with retries on 429; a vanished placeholder becomes a new reply."""
        for attempt in range(FINAL_ATTEMPTS):
            try:
                self.web.chat_update(channel=self.channel, ts=self.ts, **message)
                return True
            except Exception as exc:
                wait = retry_after_s(exc)
                if wait is not None:
                    self.rate_limited += 1
                    if attempt + 1 < FINAL_ATTEMPTS:
                        self.sleep(min(wait, MAX_FINAL_WAIT_S))
                    continue
                error = getattr(getattr(exc, "response", None), "data", None) or {}
                code = error.get("error") if isinstance(error, dict) else None
                if code in ("message_not_found", "cant_update_message", "edit_window_closed"):
                    return self._post_new(message)
                log.error("delivery: final update failed (%s)", exc)
                return False
        log.error("delivery: final update still rate limited after %d attempts", FINAL_ATTEMPTS)
        return False

    def _post_new(self, message: dict[str, Any]) -> bool:
        try:
            thread_ts = self.reply.thread_ts
            self.web.chat_postMessage(channel=self.channel, thread_ts=thread_ts, **message)
            return True
        except Exception as exc:
            log.error("delivery: could not post a new message either (%s)", exc)
            return False

    def _mark(self, question_id: str | None, answer: Answer | None = None) -> None:
        if self.redis is None or not question_id:
            return
        try:
            pipe = self.redis.pipeline()
            pipe.set(contracts.delivered(question_id), "worker", ex=contracts.ANSWER_TTL_S)
            if answer is not None:
                pipe.set(
                    contracts.answer(question_id),
                    answer.compact(contracts.FEEDBACK_PASSAGE_CHARS).model_dump_json(),
                    ex=contracts.ANSWER_TTL_S,
                )
            thread_ts = self.reply.thread_ts
            if thread_ts:
                pipe.set(contracts.thread(self.channel, thread_ts), "1", ex=contracts.THREAD_TTL_S)
            pipe.execute()
        except Exception as exc:
            log.warning("delivery: could not record question=%s in redis: %s", question_id, exc)

    def latency_s(self) -> float | None:
        started = self.reply.started_at
        try:
            return time.time() - float(started) if started is not None else None
        except (TypeError, ValueError):
            return None

    def finish(self, answer: Answer) -> bool:
        """Replace the placeholder with the final answer message; True when Slack took it."""
        self._stop_stream()
        message = render.answer_message(answer, latency_s=self.latency_s())
        ok = self._final_update(message)
        if ok:
            self._mark(answer.question_id or self.question_id, answer)
        return ok

    def fail(self, reason: str, ref_id: str) -> bool:
        """Turn the placeholder into a clear error with the reason and a reference id."""
        self._stop_stream()
        ok = self._final_update(render.error_message(reason, ref_id))
        if ok:
            self._mark(self.question_id or ref_id)
        return ok

    def progress(self, text: str) -> bool:
        """Post a progress line in the thread (reindex, refresh); never raises."""
        try:
            self.web.chat_postMessage(
                channel=self.channel,
                thread_ts=self.reply.thread,
                **render.notice(text),
            )
            return True
        except Exception as exc:
            log.warning("delivery: progress post failed (%s)", exc)
            return False

    def update(self, text: str) -> bool:
        """Replace the placeholder's text (e.g. the last line of a reindex)."""
        return self._final_update(render.notice(text))

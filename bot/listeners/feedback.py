"""👍 / 👎 clicks on an answer: stored with the answer they judge, thanked ephemerally.

A 👎 on an answer whose question is known also opens an optional modal ("suggest the right
answer"); what the user writes there is stored beside their vote with its provenance,
pending an admin's review (``lorebot feedback review``), and never learned from before.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bot import messages, render
from bot.listeners.core import BotCore
from lorebot import contracts
from lorebot.feedback import MAX_SUGGESTION_CHARS, ReviewQueueFull

log = logging.getLogger(__name__)


class Feedback:
    """The feedback buttons' block actions (:data:`bot.render.FEEDBACK_ACTIONS`) and the
    suggestion modal's submission (:data:`bot.render.VIEW_SUGGEST`)."""

    def __init__(self, core: BotCore) -> None:
        self.core = core

    def on_feedback(self, client, body: dict[str, Any], action: dict[str, Any]) -> None:
        vote = 1 if action.get("action_id") == render.ACTION_FEEDBACK_UP else -1
        qid = action.get("value") or ""
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts")
        answer: dict[str, Any] | None = None
        try:
            raw = self.core.redis.get(contracts.answer(qid))
            answer = json.loads(raw) if raw else None
        except Exception as exc:
            log.warning("feedback: answer lookup failed for question=%s: %s", qid, exc)
        if answer is None and message.get("text"):
            # The stored answer expired: keep what the message itself shows.
            answer = {"question_id": qid, "answer": message.get("text")}
        if not qid or not user or answer is None:
            text = messages.FEEDBACK_MISSING
        else:
            self.core.feedback.record(
                question_id=qid,
                user=user,
                vote=vote,
                channel=channel,
                team=(body.get("team") or {}).get("id"),
                message_ts=message.get("ts"),
                answer=answer,
            )
            text = messages.FEEDBACK_THANKS_UP if vote > 0 else messages.FEEDBACK_THANKS_DOWN
            # The trigger id is good for 3 seconds: open the modal before anything else.
            if vote < 0 and answer.get("question") and body.get("trigger_id"):
                self._open_suggest(client, body["trigger_id"], qid, answer, channel, thread_ts)
        if channel and user:
            try:
                client.chat_postEphemeral(
                    channel=channel, user=user, text=text, thread_ts=thread_ts
                )
            except Exception as exc:
                log.info("feedback: thanks not posted: %s", exc)

    def _open_suggest(
        self,
        client,
        trigger_id: str,
        qid: str,
        answer: dict[str, Any],
        channel: str | None,
        thread_ts: str | None,
    ) -> None:
        view = render.suggest_modal(
            qid,
            question=answer.get("question"),
            channel=channel,
            thread_ts=thread_ts,
            max_chars=MAX_SUGGESTION_CHARS,
        )
        try:
            client.views_open(trigger_id=trigger_id, view=view)
        except Exception as exc:  # the vote is stored; the modal is optional
            log.info("feedback: suggestion modal not opened for question=%s: %s", qid, exc)

    def on_suggest(self, ack, client, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The modal's submission: store the suggestion (then close the modal), or show
        what is wrong in the modal. Storing comes first: it is one small SQLite write,
        well inside Slack's 3 seconds, and a refusal can then be shown where it was typed."""
        user = (body.get("user") or {}).get("id", "")
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            meta = {}
        qid = str(meta.get("q") or "")
        state = ((view.get("state") or {}).get("values") or {}).get(render.BLOCK_SUGGESTION) or {}
        text = ((state.get(render.ACTION_SUGGESTION) or {}).get("value") or "").strip()
        error = None
        if not text:
            error = messages.SUGGEST_EMPTY
        elif len(" ".join(text.split())) > MAX_SUGGESTION_CHARS:
            error = messages.SUGGEST_TOO_LONG.format(limit=MAX_SUGGESTION_CHARS)
        elif not qid or not user:
            error = messages.SUGGEST_NO_VOTE
        else:
            try:
                if not self.core.feedback.suggest(question_id=qid, user=user, suggestion=text):
                    error = messages.SUGGEST_NO_VOTE
            except ReviewQueueFull as exc:
                log.warning("feedback: suggestion refused question=%s: %s", qid, exc.one_line())
                error = messages.SUGGEST_FULL
        if error:
            ack(response_action="errors", errors={render.BLOCK_SUGGESTION: error})
            return
        ack()
        channel, thread_ts = meta.get("c"), meta.get("t")
        if channel:
            try:
                client.chat_postEphemeral(
                    channel=channel, user=user, text=messages.SUGGEST_THANKS, thread_ts=thread_ts
                )
            except Exception as exc:
                log.info("feedback: suggestion thanks not posted: %s", exc)

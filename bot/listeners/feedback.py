"""👍 / 👎 clicks on an answer: stored with the answer they judge, thanked ephemerally."""

from __future__ import annotations

import json
import logging
from typing import Any

from bot import messages, render
from bot.listeners.core import BotCore
from lorebot import contracts

log = logging.getLogger(__name__)


class Feedback:
    """The feedback buttons' block actions (:data:`bot.render.FEEDBACK_ACTIONS`)."""

    def __init__(self, core: BotCore) -> None:
        self.core = core

    def on_feedback(self, client, body: dict[str, Any], action: dict[str, Any]) -> None:
        vote = 1 if action.get("action_id") == render.ACTION_FEEDBACK_UP else -1
        qid = action.get("value") or ""
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
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
        if channel and user:
            try:
                client.chat_postEphemeral(
                    channel=channel,
                    user=user,
                    text=text,
                    thread_ts=message.get("thread_ts") or message.get("ts"),
                )
            except Exception as exc:
                log.info("feedback: thanks not posted: %s", exc)

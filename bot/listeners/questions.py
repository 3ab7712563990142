"""Questions: ``@lorebot`` mentions, direct messages, follow-ups in our threads, ``/ask``.

Every path ends in a visible reply: a placeholder that a worker (or the watchdog)
finishes, or a short explanation only the asker sees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bot import messages, render
from bot.listeners.core import BotCore, slack_error
from bot.parse import parse_question, thread_history
from bot.state import document_count
from lorebot import contracts
from lorebot.contracts import ReplyTarget
from lorebot.errors import LorebotError
from lorebot.types import Question, new_id

log = logging.getLogger(__name__)

#: Bot messages that are not conversation turns (placeholder and error fallbacks).
NOT_TURNS = ("Searching", "Sorry, I couldn't answer")
CHANNEL_ERRORS = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")


@dataclass
class Origin:
    """Where a question came from and where its answer goes."""

    channel: str
    user: str
    team: str | None
    thread_ts: str  # root of the thread the answer goes into
    message_ts: str | None  # the user's message (None for /ask)
    is_dm: bool
    received_at: float


class Questions:
    """Validate, rate-limit, post the placeholder and hand the question to the workers."""

    def __init__(self, core: BotCore) -> None:
        self.core = core
        self.settings = core.settings

    # ------------------------------------------------------------------ helpers
    def tell(self, client, origin: Origin, text: str) -> None:
        """A short reply only the asker needs to see (ephemeral in channels)."""
        try:
            if origin.is_dm:
                client.chat_postMessage(
                    channel=origin.channel, thread_ts=origin.thread_ts, text=text
                )
            else:
                client.chat_postEphemeral(
                    channel=origin.channel, user=origin.user, thread_ts=origin.thread_ts, text=text
                )
        except Exception as exc:
            log.warning(
                "could not tell user=%s in channel=%s: %s", origin.user, origin.channel, exc
            )

    def history(self, client, origin: Origin, context) -> list:
        if (
            self.settings.slack.history_turns <= 0
            or origin.message_ts is None
            or origin.thread_ts == origin.message_ts
        ):
            return []
        try:
            resp = client.conversations_replies(
                channel=origin.channel, ts=origin.thread_ts, limit=200
            )
        except Exception as exc:  # a thread we cannot read: answer without history
            log.info(
                "no history for thread %s/%s: %s",
                origin.channel,
                origin.thread_ts,
                slack_error(exc) or exc,
            )
            return []
        return thread_history(
            resp.get("messages") or [],
            current_ts=origin.message_ts,
            bot_user_id=context.get("bot_user_id"),
            bot_id=context.get("bot_id"),
            max_turns=self.settings.slack.history_turns,
            max_chars=self.settings.slack.max_question_chars,
            skip_prefixes=NOT_TURNS,
        )

    def not_mapped(self, channel: str, is_dm: bool) -> bool:
        """True when this channel (or DM) may search no collection: closed by default."""
        collections, source = self.core.access.resolve(channel, is_dm=is_dm)
        if collections == []:
            log.info(
                "question refused: channel=%s dm=%s searches nothing (%s)", channel, is_dm, source
            )
            return True
        return False

    @staticmethod
    def not_mapped_text(channel: str, is_dm: bool) -> str:
        return messages.DM_NOT_MAPPED if is_dm else messages.channel_not_mapped(channel)

    # ------------------------------------------------------------------ questions
    def ask(self, client, context, origin: Origin, raw_text: str) -> str | None:
        """Validate, rate-limit, post the placeholder and submit; returns the question id."""
        parsed = parse_question(
            raw_text,
            bot_user_id=context.get("bot_user_id"),
            max_chars=self.settings.slack.max_question_chars,
        )
        if parsed.problem == "empty":
            self.tell(client, origin, messages.EMPTY_QUESTION)
            return None
        if parsed.problem == "no_words":
            self.tell(client, origin, messages.NO_WORDS)
            return None
        if self.not_mapped(origin.channel, origin.is_dm):
            self.tell(client, origin, self.not_mapped_text(origin.channel, origin.is_dm))
            return None
        decision = self.core.rates.check(origin.team, origin.user)
        if not decision.allowed:
            log.info(
                "rate limited scope=%s user=%s team=%s", decision.scope, origin.user, origin.team
            )
            self.tell(
                client,
                origin,
                messages.rate_limited(decision.scope, decision.limit, decision.retry_after_s),
            )
            return None
        return self.submit(
            client, context, origin, parsed.text, truncated_from=parsed.truncated_from
        )

    def submit(
        self, client, context, origin: Origin, text: str, *, truncated_from: int | None = None
    ) -> str | None:
        """Post the placeholder, then hand the question to the answer queue."""
        core = self.core
        qid = new_id()
        waiting = core.queue_depth(contracts.QUEUE_ANSWER)
        placeholder = render.placeholder(
            document_count(core.redis),
            queue_position=(waiting + 1) if waiting else None,
            truncated=(self.settings.slack.max_question_chars, truncated_from)
            if truncated_from
            else None,
        )
        try:
            posted = client.chat_postMessage(
                channel=origin.channel, thread_ts=origin.thread_ts, **placeholder
            )
        except Exception as exc:
            log.warning(
                "question=%s placeholder failed in channel=%s: %s",
                qid,
                origin.channel,
                slack_error(exc) or exc,
            )
            if slack_error(exc) in CHANNEL_ERRORS:
                self.tell(client, origin, messages.NOT_IN_CHANNEL)
            return None
        message_ts = posted["ts"]
        core.threads.remember(origin.channel, origin.thread_ts)
        log.info(
            "question=%s channel=%s user=%s placeholder after %.0f ms",
            qid,
            origin.channel,
            origin.user,
            (time.time() - origin.received_at) * 1000,
        )

        reply = ReplyTarget(
            channel=origin.channel,
            thread_ts=origin.thread_ts,
            message_ts=message_ts,
            team=origin.team,
            user=origin.user,
            started_at=origin.received_at,
            question_id=qid,
        )
        try:
            collections = core.access.collections(origin.channel, is_dm=origin.is_dm)
            question = Question(
                question_id=qid,
                text=text,
                collections=collections,
                history=self.history(client, origin, context),
                user=origin.user,
                channel=origin.channel,
            )
            core.watchdog.watch(qid, reply)
            core.enqueue(
                contracts.TASK_ANSWER,
                {"question": question.model_dump(mode="json"), "reply": reply.to_dict()},
                contracts.QUEUE_ANSWER,
                qid,
            )
        except LorebotError as exc:
            core.watchdog.fail(qid, reply, exc.one_line())
            return None
        except Exception as exc:
            log.exception("question=%s could not be submitted", qid)
            core.watchdog.fail(qid, reply, f"{messages.QUEUE_UNAVAILABLE} ({type(exc).__name__})")
            return None
        log.info(
            "question=%s submitted collections=%s history=%d",
            qid,
            collections,
            len(question.history),
        )
        return qid

    # ------------------------------------------------------------------ events
    def on_mention(self, client, context, event: dict[str, Any], received_at: float) -> None:
        channel, ts = event["channel"], event["ts"]
        if not self.core.dedupe.claim_message(channel, ts, event.get("client_msg_id")):
            return
        origin = Origin(
            channel=channel,
            user=event.get("user", ""),
            team=event.get("team") or context.get("team_id"),
            thread_ts=event.get("thread_ts") or ts,
            message_ts=ts,
            is_dm=channel.startswith("D"),
            received_at=received_at,
        )
        self.ask(client, context, origin, event.get("text", ""))

    def on_message(self, client, context, event: dict[str, Any], received_at: float) -> None:
        """DMs are always questions; in channels only replies in threads we answered."""
        if event.get("subtype") not in (None, "file_share", "thread_broadcast") or event.get(
            "bot_id"
        ):
            return
        channel, ts = event.get("channel"), event.get("ts")
        if not channel or not ts or not event.get("user"):
            return
        thread_ts = event.get("thread_ts")
        is_dm = event.get("channel_type") == "im"
        if not is_dm:
            bot_user = context.get("bot_user_id")
            if not thread_ts:
                return  # ordinary channel chatter
            if bot_user and f"<@{bot_user}" in (event.get("text") or ""):
                return  # app_mention handles it
            if not self.core.threads.answered(channel, thread_ts):
                return  # someone else's thread
        if not self.core.dedupe.claim_message(channel, ts, event.get("client_msg_id")):
            return
        origin = Origin(
            channel=channel,
            user=event["user"],
            team=event.get("team") or context.get("team_id"),
            thread_ts=thread_ts or ts,
            message_ts=ts,
            is_dm=is_dm,
            received_at=received_at,
        )
        self.ask(client, context, origin, event.get("text", ""))

    # ------------------------------------------------------------------ /ask
    def on_ask_command(
        self, ack, respond, client, context, command: dict[str, Any], received_at: float
    ) -> None:
        parsed = parse_question(
            command.get("text", ""),
            bot_user_id=context.get("bot_user_id"),
            max_chars=self.settings.slack.max_question_chars,
        )
        if parsed.problem:
            ack(text=messages.EMPTY_QUESTION if parsed.problem == "empty" else messages.NO_WORDS)
            return
        team, user, channel = command.get("team_id"), command["user_id"], command["channel_id"]
        is_dm = channel.startswith("D")
        if self.not_mapped(channel, is_dm):
            ack(text=self.not_mapped_text(channel, is_dm))
            return
        decision = self.core.rates.check(team, user)
        if not decision.allowed:
            ack(text=messages.rate_limited(decision.scope, decision.limit, decision.retry_after_s))
            return
        ack()
        try:
            echo = client.chat_postMessage(
                channel=channel,
                text=messages.answer_posted_in_thread(user, render.escape(parsed.text)),
            )
        except Exception as exc:
            log.info("/ask cannot post in channel=%s: %s", channel, slack_error(exc) or exc)
            respond(text=messages.NOT_IN_CHANNEL, response_type="ephemeral")
            return
        origin = Origin(
            channel=channel,
            user=user,
            team=team,
            thread_ts=echo["ts"],
            message_ts=None,
            is_dm=is_dm,
            received_at=received_at,
        )
        self.submit(client, context, origin, parsed.text, truncated_from=parsed.truncated_from)

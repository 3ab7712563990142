"""What the bot does for each kind of Slack request, independent of the transport.

:class:`SlackBot` holds the bot's dependencies (settings, Redis, the worker gateway,
the feedback store) and has one method per trigger. :mod:`bot.app` registers thin bolt
listeners that call them, for Socket Mode and HTTP alike. Every path ends in a visible
reply: a placeholder that a worker (or the watchdog) finishes, or a short explanation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import messages, render
from bot.gateway import Enqueue, WorkerGateway
from bot.parse import parse_admin, parse_question, thread_history
from bot.state import ChannelAccess, Deduper, RateLimiter, Threads, document_count
from bot.watchdog import Watchdog
from lorebot import contracts
from lorebot.errors import LorebotError
from lorebot.feedback import FeedbackStore
from lorebot.settings import Settings
from lorebot.types import Question, new_id

log = logging.getLogger(__name__)

#: Bot messages that are not conversation turns (placeholder and error fallbacks).
NOT_TURNS = ("Searching", "Sorry, I couldn't answer")
CHANNEL_ERRORS = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")


def _slack_error(exc: Exception) -> str | None:
    data = getattr(getattr(exc, "response", None), "data", None)
    return data.get("error") if isinstance(data, dict) else None


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


class SlackBot:
    """The transport-free core of the Slack edge."""

    def __init__(
        self,
        settings: Settings,
        redis,
        *,
        gateway: WorkerGateway,
        enqueue: Enqueue,
        feedback: FeedbackStore,
        watchdog: Watchdog,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.gateway = gateway
        self.enqueue = enqueue
        self.feedback = feedback
        self.watchdog = watchdog
        self.dedupe = Deduper(redis)
        self.rates = RateLimiter.from_settings(redis, settings)
        self.access = ChannelAccess(redis, settings)
        self.threads = Threads(redis)

    # ------------------------------------------------------------------ helpers
    def _tell(self, client, origin: Origin, text: str) -> None:
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

    def _history(self, client, origin: Origin, context) -> list:
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
                _slack_error(exc) or exc,
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

    # ------------------------------------------------------------------ questions
    def ask(self, client, context, origin: Origin, raw_text: str) -> str | None:
        """Validate, rate-limit, post the placeholder and submit; returns the question id."""
        parsed = parse_question(
            raw_text,
            bot_user_id=context.get("bot_user_id"),
            max_chars=self.settings.slack.max_question_chars,
        )
        if parsed.problem == "empty":
            self._tell(client, origin, messages.EMPTY_QUESTION)
            return None
        if parsed.problem == "no_words":
            self._tell(client, origin, messages.NO_WORDS)
            return None
        decision = self.rates.check(origin.team, origin.user)
        if not decision.allowed:
            log.info(
                "rate limited scope=%s user=%s team=%s", decision.scope, origin.user, origin.team
            )
            self._tell(
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
        qid = new_id()
        waiting = self._queue_depth(contracts.QUEUE_ANSWER)
        placeholder = render.placeholder(
            document_count(self.redis),
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
                _slack_error(exc) or exc,
            )
            if _slack_error(exc) in CHANNEL_ERRORS:
                self._tell(client, origin, messages.NOT_IN_CHANNEL)
            return None
        message_ts = posted["ts"]
        self.threads.remember(origin.channel, origin.thread_ts)
        log.info(
            "question=%s channel=%s user=%s placeholder after %.0f ms",
            qid,
            origin.channel,
            origin.user,
            (time.time() - origin.received_at) * 1000,
        )

        reply = {
            "channel": origin.channel,
            "thread_ts": origin.thread_ts,
            "message_ts": message_ts,
            "team": origin.team,
            "user": origin.user,
            "started_at": origin.received_at,
            "question_id": qid,
        }
        try:
            collections = self.access.collections(origin.channel, is_dm=origin.is_dm)
            question = Question(
                question_id=qid,
                text=text,
                collections=collections,
                history=self._history(client, origin, context),
                user=origin.user,
                channel=origin.channel,
            )
            self.watchdog.watch(qid, reply)
            self.enqueue(
                contracts.TASK_ANSWER,
                {"question": question.model_dump(mode="json"), "reply": reply},
                contracts.QUEUE_ANSWER,
                qid,
            )
        except LorebotError as exc:
            self.watchdog.fail(qid, reply, exc.one_line())
            return None
        except Exception as exc:
            log.exception("question=%s could not be submitted", qid)
            self.watchdog.fail(qid, reply, f"{messages.QUEUE_UNAVAILABLE} ({type(exc).__name__})")
            return None
        log.info(
            "question=%s submitted collections=%s history=%d",
            qid,
            collections,
            len(question.history),
        )
        return qid

    def _queue_depth(self, queue: str) -> int:
        try:
            return int(self.redis.llen(queue))
        except Exception:
            return 0

    # ------------------------------------------------------------------ events
    def on_mention(self, client, context, event: dict[str, Any], received_at: float) -> None:
        channel, ts = event["channel"], event["ts"]
        if not self.dedupe.claim_message(channel, ts, event.get("client_msg_id")):
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
            if not self.threads.answered(channel, thread_ts):
                return  # someone else's thread
        if not self.dedupe.claim_message(channel, ts, event.get("client_msg_id")):
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
        decision = self.rates.check(team, user)
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
            log.info("/ask cannot post in channel=%s: %s", channel, _slack_error(exc) or exc)
            respond(text=messages.NOT_IN_CHANNEL, response_type="ephemeral")
            return
        origin = Origin(
            channel=channel,
            user=user,
            team=team,
            thread_ts=echo["ts"],
            message_ts=None,
            is_dm=channel.startswith("D"),
            received_at=received_at,
        )
        self.submit(client, context, origin, parsed.text, truncated_from=parsed.truncated_from)

    # ------------------------------------------------------------------ /lorebot
    def is_admin(self, user: str) -> bool:
        return user in self.settings.slack.admin_user_ids

    def on_admin_command(self, ack, respond, client, context, command: dict[str, Any]) -> None:
        user, channel = command["user_id"], command["channel_id"]
        if not self.is_admin(user):
            log.info("refused /lorebot from non-admin user=%s", user)
            ack(text=messages.ADMIN_ONLY)
            return
        cmd = parse_admin(command.get("text", ""))
        if cmd.name in ("help", "?"):
            ack(text=messages.ADMIN_HELP)
        elif cmd.name == "channel":
            ack(text=self.channel_command(cmd.args, cmd.channel or channel))
        elif cmd.name == "status":
            ack(text="Gathering status…")
            respond(text=self.status_report(), response_type="ephemeral")
        elif cmd.name == "reindex":
            collection = cmd.args[0] if cmd.args else None
            ack()
            self._start_job(
                client,
                respond,
                channel,
                user,
                command.get("team_id"),
                contracts.TASK_REINDEX,
                contracts.QUEUE_INGEST,
                messages.reindex_started(user, collection),
                {"collection": collection},
            )
        elif cmd.name == "refresh":
            ack()
            self._start_job(
                client,
                respond,
                channel,
                user,
                command.get("team_id"),
                contracts.TASK_REFRESH,
                contracts.QUEUE_TRAIN,
                messages.refresh_started(user),
                {},
            )
        elif cmd.name == "adapters":
            self.adapters_command(ack, respond, cmd.args)
        else:
            ack(text=messages.unknown_command(render.escape(command.get("text", ""))))

    def channel_command(self, args: list[str], channel: str) -> str:
        action = args[0].lower() if args else "show"
        if action == "show":
            collections, source = self.access.resolve(channel, is_dm=channel.startswith("D"))
            return messages.channel_show(channel, collections, source)
        if action == "reset":
            self.access.reset(channel)
            return messages.channel_reset(channel)
        if action == "set":
            names = [a for a in args[1:] if a]
            if not names:
                return messages.CHANNEL_SET_USAGE
            collections = None if [n.lower() for n in names] == ["all"] else names
            self.access.set(channel, collections)
            log.info("channel=%s collections set to %s", channel, collections)
            return messages.channel_set(channel, collections)
        return messages.unknown_command("channel " + render.escape(" ".join(args)))

    def status_report(self) -> str:
        worker_status, error = None, None
        try:
            worker_status = self.gateway.call(
                contracts.TASK_STATUS, contracts.QUEUE_ANSWER, timeout=5.0
            )
        except LorebotError as exc:
            error = exc.message
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        depths = {q: self._queue_depth(q) for q in contracts.ALL_QUEUES}
        last = None
        try:
            raw = self.redis.get(contracts.LAST_REFRESH)
            last = json.loads(raw) if raw else None
        except Exception:
            last = None
        return render.status_text(
            worker_status=worker_status if isinstance(worker_status, dict) else None,
            queue_depths=depths,
            live_workers=self.gateway.ping(timeout=1.0),
            last_refresh=last if isinstance(last, dict) else None,
            worker_error=error,
        )

    def _start_job(
        self, client, respond, channel, user, team, task, queue, headline, kwargs
    ) -> None:
        reply = None
        try:
            posted = client.chat_postMessage(channel=channel, text=headline)
            reply = {
                "channel": channel,
                "thread_ts": posted["ts"],
                "message_ts": posted["ts"],
                "team": team,
                "user": user,
                "started_at": time.time(),
            }
        except Exception as exc:
            log.info(
                "cannot post job headline in channel=%s: %s", channel, _slack_error(exc) or exc
            )
        task_id = new_id()
        try:
            self.enqueue(task, {**kwargs, "reply": reply}, queue, task_id)
        except LorebotError as exc:
            respond(text=f"Could not start: {exc.one_line()}", response_type="ephemeral")
            return
        if reply is None:
            respond(
                text=headline + messages.job_without_thread(task_id),
                response_type="ephemeral",
            )

    def adapters_command(self, ack, respond, args: list[str]) -> None:
        task = contracts.TASK_ADAPTERS
        action = args[0].lower() if args else "list"
        if action not in ("list", "promote", "rollback"):
            ack(text="Use `adapters list`, `adapters promote <version>` or `adapters rollback`.")
            return
        if action == "promote" and len(args) < 2:
            ack(text="Which version? `/lorebot adapters promote <version>` (see `adapters list`).")
            return
        ack(text=f"Running `adapters {action}`…")
        try:
            result = self.gateway.call(
                task,
                contracts.TASK_QUEUES.get(task, contracts.QUEUE_TRAIN),
                kwargs={"action": action, "version": args[1] if len(args) > 1 else None},
                timeout=15.0,
            )
        except LorebotError as exc:
            respond(text=f"`adapters {action}` failed: {exc.one_line()}", response_type="ephemeral")
            return
        text = result.get("text") if isinstance(result, dict) else None
        respond(
            text=text or f"```{json.dumps(result, indent=1)[:2900]}```", response_type="ephemeral"
        )

    # ------------------------------------------------------------------ feedback
    def on_feedback(self, client, body: dict[str, Any], action: dict[str, Any]) -> None:
        vote = 1 if action.get("action_id") == render.ACTION_FEEDBACK_UP else -1
        qid = action.get("value") or ""
        user = (body.get("user") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        answer: dict[str, Any] | None = None
        try:
            raw = self.redis.get(contracts.answer(qid))
            answer = json.loads(raw) if raw else None
        except Exception as exc:
            log.warning("feedback: answer lookup failed for question=%s: %s", qid, exc)
        if answer is None and message.get("text"):
            # The stored answer expired: keep what the message itself shows.
            answer = {"question_id": qid, "answer": message.get("text")}
        if not qid or not user or answer is None:
            text = messages.FEEDBACK_MISSING
        else:
            self.feedback.record(
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


def make_enqueue(gateway: WorkerGateway) -> Callable[[str, dict, str, str | None], Any]:
    """The default ``enqueue``: Celery ``send_task`` by name through the gateway."""

    def enqueue(name: str, kwargs: dict, queue: str, task_id: str | None = None) -> Any:
        return gateway.send(name, kwargs, queue, task_id)

    return enqueue

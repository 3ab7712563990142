"""The bolt app factory: one set of listeners for Socket Mode and the HTTP Events API.

``build_app(settings, enqueue=..., redis=...)`` wires thin bolt listeners to the
listeners of :mod:`bot.listeners` (questions, admin, feedback, uploads), which share one
:class:`bot.listeners.core.BotCore`. Every dependency can be passed in: tests hand in a real
Redis client and a Web API client pointed at a local fake Slack. The events, commands
and actions registered here are the module constants below, which the Slack app
manifest (``deploy/slack-manifest.yml``) must list exactly (a test checks it).

Slack's 3-second rule: bolt acknowledges events before the listener runs
(``process_before_response=False`` runs listeners on a thread pool); commands and
button clicks call ``ack()`` first thing. Placeholders, history and queueing happen
after the acknowledgement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltResponse
from slack_bolt.request import BoltRequest

from bot import render
from bot.gateway import Enqueue, WorkerGateway
from bot.listeners.admin import Admin
from bot.listeners.core import BotCore, make_enqueue
from bot.listeners.feedback import Feedback
from bot.listeners.questions import Questions
from bot.listeners.uploads import Uploads, is_admin_share
from bot.state import Deduper, open_access_warnings
from bot.watchdog import Watchdog
from lorebot import slack
from lorebot.errors import ServiceUnavailableError
from lorebot.feedback import FeedbackStore, feedback_path
from lorebot.settings import Settings
from lorebot.types import new_id

log = logging.getLogger(__name__)

#: Events the app subscribes to, as the manifest names them.
BOT_EVENTS = ("app_mention", "message.channels", "message.groups", "message.im")
#: Slash commands the app registers.
COMMANDS = ("/ask", "/lorebot")
#: Block action ids (interactivity).
ACTIONS = render.FEEDBACK_ACTIONS
#: Modal callback ids whose submissions the app handles (interactivity too).
VIEWS = (render.VIEW_SUGGEST,)
#: Bot token scopes the handlers need, and why:
BOT_SCOPES = (
    "app_mentions:read",  # app_mention
    "channels:history",  # message.channels (thread follow-ups) + conversations.replies
    "groups:history",  # message.groups (private channels) + conversations.replies
    "im:history",  # message.im (direct messages) + conversations.replies
    "chat:write",  # chat.postMessage / chat.update / chat.postEphemeral
    "commands",  # /ask, /lorebot
    "files:read",  # files.info + download of files admins share in the admin channel
)

RECEIVED_AT = "lorebot_received_at"


def build_app(
    settings: Settings,
    *,
    enqueue: Enqueue | None = None,
    redis=None,
    web_client=None,
    gateway: WorkerGateway | None = None,
    watchdog: Watchdog | None = None,
) -> App:
    """A bolt App with every lorebot listener; ``app.lorebot`` is its :class:`BotCore`.

    Calls ``auth.test`` once (bolt's token check), so the Web API must be reachable.
    """
    if redis is None:
        import redis as redis_lib

        redis = redis_lib.Redis.from_url(
            settings.redis.effective_url, socket_timeout=5, socket_connect_timeout=4
        )
    web = web_client or slack.web_client(settings, require_token=True)
    gateway = gateway or WorkerGateway(settings.redis.effective_url)
    enqueue = enqueue or make_enqueue(gateway)
    watchdog = watchdog or Watchdog(settings, redis, gateway, web)
    secret = (
        settings.slack.signing_secret.get_secret_value() if settings.slack.signing_secret else None
    )

    try:
        app = App(
            client=web,
            signing_secret=secret or "",
            # HTTP requests must be signed; Socket Mode requests arrive over the
            # app-token websocket and bolt skips the check for them.
            request_verification_enabled=secret is not None,
            process_before_response=False,
            token_verification_enabled=True,
            ignoring_self_events_enabled=True,
            logger=logging.getLogger("slack_bolt.lorebot"),
        )
    except Exception as exc:
        raise ServiceUnavailableError(
            f"Slack rejected the bot token or is unreachable at {settings.slack.api_url}: {exc}",
            fix="check LOREBOT_SLACK__BOT_TOKEN and LOREBOT_SLACK__API_URL",
        ) from None

    core = BotCore(
        settings,
        redis,
        gateway=gateway,
        enqueue=enqueue,
        feedback=FeedbackStore(feedback_path(settings)),
        watchdog=watchdog,
    )
    for line in open_access_warnings(settings):
        log.warning("open access: %s; set explicit collections unless that is intended", line)
    app.lorebot = core  # type: ignore[attr-defined]
    register(app, core, Deduper(redis))
    return app


def register(app: App, core: BotCore, dedupe: Deduper) -> None:
    """Attach the middleware and listeners; names mirror BOT_EVENTS/COMMANDS/ACTIONS."""

    @app.middleware
    def stamp_and_dedupe(req: BoltRequest, resp: BoltResponse, next: Callable[[], Any]):
        """Record arrival time; drop replayed requests, redelivered events and repeats.

        Runs after bolt verified the signature. Every signed HTTP request is claimed by its
        signature, so a captured slash command or click replayed inside Slack's 5-minute
        window has no effect; events are also claimed by event id (Slack's retries carry
        a new signature). Socket Mode requests arrive unsigned over the app-token socket.
        """
        req.context[RECEIVED_AT] = time.time()
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        if signature and req.mode != "socket_mode":
            try:
                fresh = dedupe.claim_signed(signature)
            except Exception as exc:
                log.warning("replay check unavailable: %s", exc)
                fresh = True
            if not fresh:
                log.warning("replayed Slack request dropped (signature seen before)")
                return BoltResponse(status=200, body="")
        event_id = req.body.get("event_id") if req.body.get("type") == "event_callback" else None
        if event_id:
            try:
                first = dedupe.claim_event(event_id)
            except Exception as exc:
                # Redis down: better to risk a duplicate than to drop a question.
                log.warning("dedupe unavailable for event=%s: %s", event_id, exc)
                first = True
            if not first:
                retry = (req.headers.get("x-slack-retry-num") or ["-"])[0]
                log.info("duplicate event=%s retry=%s dropped", event_id, retry)
                return BoltResponse(status=200, body="")
        return next()

    def guarded(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("%s handler failed", name)

    def received(context) -> float:
        return float(context.get(RECEIVED_AT) or time.time())

    questions = Questions(core)
    admin = Admin(core)
    feedback = Feedback(core)
    uploads = Uploads(core)

    @app.event("app_mention")
    def on_app_mention(event, client, context):
        if is_admin_share(core.settings, event):
            return  # a file share that mentions the bot: the message event ingests it
        guarded(
            "app_mention", lambda: questions.on_mention(client, context, event, received(context))
        )

    # message.channels, message.groups and message.im all arrive as "message".
    @app.event("message")
    def on_message(event, client, context):
        if is_admin_share(core.settings, event):
            guarded(
                "file_share", lambda: uploads.on_share(client, context, event, received(context))
            )
            return
        guarded("message", lambda: questions.on_message(client, context, event, received(context)))

    @app.command("/ask")
    def on_ask(ack, respond, client, context, command):
        try:
            questions.on_ask_command(ack, respond, client, context, command, received(context))
        except Exception:
            ref = new_id()
            log.exception("/ask failed ref=%s", ref)
            _late_error(ack, respond, ref)

    @app.command("/lorebot")
    def on_lorebot(ack, respond, client, context, command):
        try:
            admin.on_admin_command(ack, respond, client, context, command)
        except Exception:
            ref = new_id()
            log.exception("/lorebot failed ref=%s", ref)
            _late_error(ack, respond, ref)

    for action_id in ACTIONS:

        @app.action(action_id)
        def on_feedback(ack, body, action, client):
            ack()
            guarded("feedback", lambda: feedback.on_feedback(client, body, action))

    @app.view(render.VIEW_SUGGEST)
    def on_suggest(ack, body, view, client):
        try:
            feedback.on_suggest(ack, client, body, view)
        except Exception:
            ref = new_id()
            log.exception("suggestion failed ref=%s", ref)
            if getattr(ack, "response", None) is None:
                text = f"Sorry, something went wrong on my side (reference `{ref}`)."
                ack(response_action="errors", errors={render.BLOCK_SUGGESTION: text})

    @app.error
    def on_error(error, body):
        log.error("unhandled bolt error: %s", error)


def _late_error(ack, respond, ref: str) -> None:
    text = f"Sorry, something went wrong on my side (reference `{ref}`)."
    try:
        if getattr(ack, "response", None) is None:
            ack(text=text)
        else:
            respond(text=text, response_type="ephemeral")
    except Exception:
        log.error("could not report error ref=%s to the user", ref)

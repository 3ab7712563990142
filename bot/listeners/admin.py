"""``/lorebot``: the admin verbs (help, channel, status, reindex, refresh, adapters).

Only users in ``slack.admin_user_ids`` may use it. Long jobs (reindex, refresh) get a
headline message whose thread the worker fills with progress; quick ones (status,
adapters) answer ephemerally once the worker has replied.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from bot import messages, render
from bot.listeners.core import BotCore, slack_error
from bot.parse import parse_admin
from lorebot import contracts
from lorebot.contracts import ReplyTarget
from lorebot.errors import LorebotError
from lorebot.types import new_id

log = logging.getLogger(__name__)


class Admin:
    """The ``/lorebot`` slash command."""

    def __init__(self, core: BotCore) -> None:
        self.core = core

    def on_admin_command(self, ack, respond, client, context, command: dict[str, Any]) -> None:
        user, channel = command["user_id"], command["channel_id"]
        if not self.core.is_admin(user):
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
            self.start_job(
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
            self.start_job(
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
        access = self.core.access
        action = args[0].lower() if args else "show"
        if action == "show":
            collections, source = access.resolve(channel, is_dm=channel.startswith("D"))
            return messages.channel_show(channel, collections, source)
        if action == "reset":
            access.reset(channel)
            return messages.channel_reset(channel)
        if action == "set":
            names = [a for a in args[1:] if a]
            if not names:
                return messages.CHANNEL_SET_USAGE
            everything = [n.lower() for n in names] in (["all"], ["*"])
            collections = None if everything else names
            access.set(channel, collections)
            log.info("channel=%s collections set to %s", channel, collections)
            return messages.channel_set(channel, collections)
        return messages.unknown_command("channel " + render.escape(" ".join(args)))

    def status_report(self) -> str:
        core = self.core
        worker_status, error = None, None
        try:
            worker_status = core.gateway.call(
                contracts.TASK_STATUS, contracts.QUEUE_ANSWER, timeout=5.0
            )
        except LorebotError as exc:
            error = exc.message
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        depths = {q: core.queue_depth(q) for q in contracts.ALL_QUEUES}
        last = None
        try:
            raw = core.redis.get(contracts.LAST_REFRESH)
            last = json.loads(raw) if raw else None
        except Exception:
            last = None
        return render.status_text(
            worker_status=worker_status if isinstance(worker_status, dict) else None,
            queue_depths=depths,
            live_workers=core.gateway.ping(timeout=1.0),
            last_refresh=last if isinstance(last, dict) else None,
            worker_error=error,
        )

    def start_job(
        self, client, respond, channel, user, team, task, queue, headline, kwargs
    ) -> None:
        """Post the headline (the job's thread), then queue the task with it as reply target."""
        reply: ReplyTarget | None = None
        try:
            posted = client.chat_postMessage(channel=channel, text=headline)
            reply = ReplyTarget(
                channel=channel,
                thread_ts=posted["ts"],
                message_ts=posted["ts"],
                team=team,
                user=user,
                started_at=time.time(),
            )
        except Exception as exc:
            log.info("cannot post job headline in channel=%s: %s", channel, slack_error(exc) or exc)
        task_id = new_id()
        try:
            self.core.enqueue(
                task, {**kwargs, "reply": reply.to_dict() if reply else None}, queue, task_id
            )
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
            result = self.core.gateway.call(
                task,
                contracts.TASK_QUEUES[task],
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

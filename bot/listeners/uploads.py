"""Files shared in the admin channel become documents of a collection.

An admin shares one or more files in ``slack.admin_channel`` and names the collection in
the message: ``collection: hr`` (or ``collection=hr``) anywhere in the text. Without a
name the files go into ``index.default_collection`` and the reply says so. Anyone else
sharing a file there gets a polite refusal only they can see.

Only the ``message`` event (subtype ``file_share``) is handled: it carries the text
that names the collection. Slack's separate ``file_shared`` event has no text and would
describe the same upload a second time, so the app does not subscribe to it.

The bot only acknowledges and queues: it posts a reply in the message's thread and sends
the file ids to the ``ingest`` queue; the worker (:mod:`workers.tasks.uploads`) asks Slack
for each file, downloads, indexes and edits that reply into the outcome.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from bot import messages
from bot.listeners.core import BotCore
from lorebot import contracts
from lorebot.contracts import ReplyTarget
from lorebot.errors import LorebotError
from lorebot.settings import Settings
from lorebot.types import new_id

log = logging.getLogger(__name__)

_COLLECTION = re.compile(r"(?i)(?:^|\s)collection\s*[:=]\s*(\S*)")


@dataclass(frozen=True)
class CollectionChoice:
    name: str | None  # None: not named, or named badly (see problem)
    problem: str | None = None  # the unusable name as typed


def parse_collection(text: str | None) -> CollectionChoice:
    """``collection: hr`` / ``collection=hr`` anywhere in the message; trailing punctuation
    of a sentence ("… into collection: hr.") is not part of the name."""
    m = _COLLECTION.search(text or "")
    if not m:
        return CollectionChoice(None)
    raw = m.group(1).strip("`*_'\"").rstrip(".,;:!?)")
    ref = re.fullmatch(r"<#[CG][A-Z0-9]+\|([^>]+)>", raw)  # "collection: #hr" as Slack sends it
    raw = (ref.group(1) if ref else raw).lstrip("#")
    if re.fullmatch(contracts.COLLECTION_NAME, raw):
        return CollectionChoice(raw)
    return CollectionChoice(None, problem=raw or "(nothing)")


def is_file_share(event: dict[str, Any]) -> bool:
    """A person's message carrying files (not our own, not an edit or deletion)."""
    if event.get("bot_id") or not event.get("user") or not event.get("files"):
        return False
    return event.get("subtype") in (None, "file_share", "thread_broadcast")


def is_admin_share(settings: Settings, event: dict[str, Any]) -> bool:
    """Files shared in the admin channel: ours to ingest (or to refuse)."""
    channel = settings.slack.admin_channel
    return bool(channel) and event.get("channel") == channel and is_file_share(event)


class Uploads:
    """Admin file shares → one ``ingest_files`` task each, acknowledged in the thread."""

    def __init__(self, core: BotCore) -> None:
        self.core = core
        self.settings: Settings = core.settings

    def on_share(self, client, context, event: dict[str, Any], received_at: float) -> None:
        channel, ts, user = event["channel"], event["ts"], event["user"]
        thread_ts = event.get("thread_ts") or ts
        if not self.core.dedupe.claim_message(channel, ts, event.get("client_msg_id")):
            return
        if not self.core.is_admin(user):
            log.info("refused file share from non-admin user=%s in channel=%s", user, channel)
            self._ephemeral(client, channel, user, thread_ts, messages.UPLOAD_ADMIN_ONLY)
            return
        files = [
            {"id": f["id"], "name": f.get("name") or f.get("title") or f["id"]}
            for f in event.get("files") or []
            if isinstance(f, dict) and f.get("id")
        ]
        if not files:
            return
        choice = parse_collection(event.get("text"))
        if choice.problem is not None:
            self._ephemeral(
                client, channel, user, thread_ts, messages.upload_bad_collection(choice.problem)
            )
            return
        defaulted = choice.name is None
        collection = choice.name or self.settings.index.default_collection
        try:
            posted = client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=messages.upload_received(len(files), collection, defaulted),
            )
        except Exception as exc:
            log.warning("upload: cannot reply in channel=%s: %s", channel, exc)
            return
        reply = ReplyTarget(
            channel=channel,
            thread_ts=thread_ts,
            message_ts=posted["ts"],
            team=event.get("team") or context.get("team_id"),
            user=user,
            started_at=received_at,
        )
        task_id = new_id()
        try:
            self.core.enqueue(
                contracts.TASK_INGEST_FILES,
                {
                    "collection": collection,
                    "files": files,
                    "reply": reply.to_dict(),
                    "defaulted": defaulted,
                },
                contracts.QUEUE_INGEST,
                task_id,
            )
        except Exception as exc:
            reason = exc.one_line() if isinstance(exc, LorebotError) else type(exc).__name__
            log.warning("upload task=%s could not be queued: %s", task_id, reason)
            try:
                client.chat_update(
                    channel=channel,
                    ts=posted["ts"],
                    text=f"{messages.QUEUE_UNAVAILABLE} ({reason}); please share the file again.",
                )
            except Exception:
                log.error("upload task=%s: could not report the queue failure", task_id)
            return
        log.info(
            "upload task=%s collection=%s files=%d user=%s queued after %.0f ms",
            task_id,
            collection,
            len(files),
            user,
            (time.time() - received_at) * 1000,
        )

    @staticmethod
    def _ephemeral(client, channel: str, user: str, thread_ts: str, text: str) -> None:
        try:
            client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=text)
        except Exception as exc:
            log.warning("upload: could not tell user=%s: %s", user, exc)

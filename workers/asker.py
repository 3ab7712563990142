"""Answer as the asker: the asking Slack user's e-mail, and the index as they may read it.

The worker derives the asker itself from the task's user id (never from anything else the
payload says about permissions): ``users.info`` gives the e-mail (the bot token needs
``users:read.email``), kept per process for ``slack.email_cache_s``. The e-mail selects
the documents of ``permissions = "asker"`` sources the user may read in the source
(ingest.permissions); with no user id, no e-mail, a Slack error, or a question and reply
target naming different users, the asker reads no restricted document.

An answer is read by everyone where it is posted, not only by the asker: documents
restricted to some people are searched only when the answer goes to the asker alone,
which the worker derives from the reply target itself (the conversation the answer is
posted in): a direct message with the bot (a Slack IM id, ``D...``) whose target names
the asker. In a channel (public or private, ``C...``/``G...``), a group DM, or with no
reply target at all (where the answer goes is unknown), the question is answered as
nobody: only documents every reader may read in the source (``anyone``) are searched.
The bot posts answers as messages (never ephemerally), so there is no other private
target to recognise.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ingest.permissions import AskerRetriever, Permissions
from lorebot.access import is_direct_message

log = logging.getLogger(__name__)

#: How long a failed or empty lookup is remembered (a user who just set an e-mail waits
#: this long; Slack is not asked again for every question meanwhile).
MISS_TTL_S = 60.0

_emails: dict[str, tuple[float, str | None]] = {}
_lock = threading.Lock()
_permissions: dict[str, Permissions] = {}


def asker_email(
    settings: Any, user_id: str | None, *, client: Any = None, now: float | None = None
) -> str | None:
    """The e-mail Slack has for ``user_id`` (cached), or None when there is none to trust."""
    if not user_id:
        return None
    now = time.monotonic() if now is None else now
    with _lock:
        hit = _emails.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
    email: str | None = None
    try:
        if client is None:
            from lorebot.slack import web_client

            client = web_client(settings, timeout=5)
        resp = client.users_info(user=user_id)
        user = resp.get("user") or {}
        value = (user.get("profile") or {}).get("email")
        if isinstance(value, str) and "@" in value and not user.get("deleted"):
            email = value.strip().lower()
    except Exception as exc:  # noqa: BLE001 - any failure: no e-mail (closed)
        log.warning("users.info for user=%s failed: %s", user_id, type(exc).__name__)
    ttl = settings.slack.email_cache_s if email else min(MISS_TTL_S, settings.slack.email_cache_s)
    with _lock:
        _emails[user_id] = (now + ttl, email)
        if len(_emails) > 10_000:
            for key in [k for k, (until, _) in _emails.items() if until <= now][:5000]:
                _emails.pop(key, None)
    return email


def permissions(settings: Any) -> Permissions:
    key = str(settings.data_dir)
    found = _permissions.get(key)
    if found is None:
        found = _permissions[key] = Permissions(settings)
    return found


def private_to_asker(question: Any, reply: Any) -> bool:
    """Whether the answer is read by the asker alone: it is posted in a direct message
    with the bot (an IM id, ``D...``) and the target names the question's user."""
    if reply is None:
        return False
    if isinstance(reply, dict):
        channel, target_user = reply.get("channel"), reply.get("user")
    else:
        channel, target_user = getattr(reply, "channel", None), getattr(reply, "user", None)
    if not isinstance(channel, str) or not is_direct_message(channel):
        return False
    return bool(question.user) and target_user == question.user


def asker_view(settings: Any, index: Any, question: Any, reply: Any = None) -> Any:
    """The index as the question's asker may read it where the answer is posted (the
    index itself when no source restricts anything)."""
    compiled = permissions(settings).for_index(index)
    if compiled.restricted_rows == 0:
        return index
    user_id = question.user
    target_user = reply.get("user") if isinstance(reply, dict) else getattr(reply, "user", None)
    if target_user and user_id and target_user != user_id:
        log.warning("question=%s names two users; answered as nobody", question.question_id)
        user_id = None
    elif user_id and not private_to_asker(question, reply):
        # Posted where others read it (or nobody knows where): what everyone may read.
        log.info(
            "question=%s asker=%s not answered in their DM; restricted documents left out",
            question.question_id,
            user_id,
        )
        user_id = None
    email = asker_email(settings, user_id)
    log.info(
        "question=%s asker=%s e-mail=%s", question.question_id, user_id, "yes" if email else "no"
    )
    return AskerRetriever(index, compiled.mask(email))

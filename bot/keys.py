"""Redis key names shared by the bot processes and the worker's Slack delivery.

Kept in one dependency-free module so both sides spell them the same way; the worker
imports it through :mod:`workers.delivery` without pulling in any Slack code.
"""

from __future__ import annotations

PREFIX = "lorebot:"

#: Number of documents in the current index; the workers set it, the placeholder shows it.
INDEX_DOCUMENTS = PREFIX + "index:documents"
#: JSON of the last nightly refresh result (written by the refresh task), shown by /lorebot status.
LAST_REFRESH = PREFIX + "refresh:last"
#: Hash: channel id -> JSON list of collections (or "*"), set with /lorebot channel set.
CHANNEL_COLLECTIONS = PREFIX + "channel_collections"
#: Hash: question id -> JSON of the reply target, watched until the answer is delivered.
PENDING = PREFIX + "pending"

#: How long the bot remembers that it answered in a thread (follow-ups come later).
THREAD_TTL_S = 30 * 24 * 3600
#: How long an answer is kept for feedback clicks.
ANSWER_TTL_S = 30 * 24 * 3600
#: Slack retries for up to about an hour; remember event ids a bit longer.
DEDUPE_TTL_S = 2 * 3600


def event_seen(event_id: str) -> str:
    return f"{PREFIX}seen:event:{event_id}"


def message_seen(channel: str, ts: str) -> str:
    return f"{PREFIX}seen:msg:{channel}:{ts}"


def client_msg_seen(client_msg_id: str) -> str:
    return f"{PREFIX}seen:cmsg:{client_msg_id}"


def thread(channel: str, thread_ts: str) -> str:
    """Set while the bot has answered in this thread: replies there are follow-ups."""
    return f"{PREFIX}thread:{channel}:{thread_ts}"


def delivered(question_id: str) -> str:
    """Set once the placeholder of a question holds its final answer or error."""
    return f"{PREFIX}delivered:{question_id}"


def answer(question_id: str) -> str:
    """JSON of the Answer a question got, for the feedback buttons."""
    return f"{PREFIX}answer:{question_id}"


def rate(scope: str, ident: str) -> str:
    return f"{PREFIX}rate:{scope}:{ident}"

"""Every name two lorebot processes must spell the same way, in one place.

Queue and task names (the bot and the CLI ``send_task`` by name without importing any
task code), every Redis key, lock and expiry that more than one process reads or writes,
and the typed Slack reply target that travels from the bot to a worker inside a task's
arguments. It imports nothing but the standard library, so every package may use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# --- Celery queues and tasks -------------------------------------------------------------

QUEUE_ANSWER = "answer"
QUEUE_INGEST = "ingest"
QUEUE_TRAIN = "train"
#: Admin control operations (adapter promote / rollback / list): short tasks that must not
#: wait behind a re-index or a training run. Consumed by the answer workers of the machine
#: that holds the adapter registry (see deploy/README.md), under CONTROL_TIME_LIMIT_S.
QUEUE_CONTROL = "control"
ALL_QUEUES = (QUEUE_ANSWER, QUEUE_INGEST, QUEUE_TRAIN, QUEUE_CONTROL)
#: Hard time limit of one control task.
CONTROL_TIME_LIMIT_S = 60
#: A refresh task's hard time limit is training.time_budget_s plus this (pairs, loading, the
#: gate); training stops early rather than run past it.
REFRESH_SLACK_S = 4 * 3600

TASK_ANSWER = "lorebot.answer"
TASK_REINDEX = "lorebot.reindex"
TASK_REFRESH = "lorebot.refresh"
TASK_PING = "lorebot.ping"
TASK_STATUS = "lorebot.status"
TASK_ADAPTERS = "lorebot.adapters"
TASK_INGEST_FILES = "lorebot.ingest_files"
#: One batch of a distributed build: parse, chunk and embed some files (ingest.distributed).
TASK_INGEST_BATCH = "lorebot.ingest_batch"
#: Sync one remote source (``name``), or every source whose schedule is due (no name).
TASK_SOURCE_SYNC = "lorebot.source_sync"

TASK_QUEUES = {
    TASK_ANSWER: QUEUE_ANSWER,
    TASK_PING: QUEUE_ANSWER,
    TASK_STATUS: QUEUE_ANSWER,
    TASK_REINDEX: QUEUE_INGEST,
    TASK_INGEST_FILES: QUEUE_INGEST,
    TASK_INGEST_BATCH: QUEUE_INGEST,
    TASK_SOURCE_SYNC: QUEUE_INGEST,
    TASK_REFRESH: QUEUE_TRAIN,
    # Neither train nor ingest: an admin's promote/rollback must not wait behind a training
    # run or a re-index that holds the only worker of its queue for hours.
    TASK_ADAPTERS: QUEUE_CONTROL,
}

#: Default broker visibility timeout; workers raise it above their longest task.
VISIBILITY_TIMEOUT_S = 6 * 3600

#: Collection names an upload may name (they become a directory under data_dir/uploads):
#: no path separators, no leading dot.
COLLECTION_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

# --- Redis keys ---------------------------------------------------------------------------

PREFIX = "lorebot:"

#: Number of documents in the current index; the workers set it, the placeholder shows it.
INDEX_DOCUMENTS = PREFIX + "index:documents"
#: JSON of the last nightly refresh result (written by the refresh task), shown by /lorebot status.
LAST_REFRESH = PREFIX + "refresh:last"
#: Hash: channel id -> JSON list of collections (or "*"), set with /lorebot channel set.
CHANNEL_COLLECTIONS = PREFIX + "channel_collections"
#: Hash: question id -> JSON of the reply target, watched until the answer is delivered.
PENDING = PREFIX + "pending"
#: Hash: "<host>:<pid>" -> JSON of the index and adapter versions it serves (lorebot.sync),
#: with "at", the time of the worker's last heartbeat. Entries older than SERVING_TTL_S
#: belong to processes that are gone: readers skip them, writers delete them.
SERVING = PREFIX + "workers:serving"
#: A live worker process re-announces itself this often...
SERVING_HEARTBEAT_S = 60
#: ...and an entry without a heartbeat for this long is stale.
SERVING_TTL_S = 10 * 60

# Redis runs with maxmemory and noeviction: whatever every question leaves behind must
# expire soon enough that a day at the workspace rate cap fits in a fraction of it
# (tests/reliability/test_redis_memory.py).

#: How long the bot remembers that it answered in a thread (follow-ups come later).
THREAD_TTL_S = 7 * 24 * 3600
#: How long an answer (compacted: lorebot.types.Answer.compact) is kept for feedback
#: clicks, and its delivered marker for redeliveries. A later click records what the
#: message shows; votes themselves are kept in the feedback store (lorebot.feedback).
ANSWER_TTL_S = 24 * 3600
#: Characters of each passage the answer kept for feedback holds (enough to recognise it).
FEEDBACK_PASSAGE_CHARS = 100
#: Stream of one compact entry per answered, abstained or failed question (newest last),
#: written by the answer workers (workers.recent) and read by the console's Answers page.
#: Capped by length (XADD MAXLEN ~), so it holds at most about RECENT_ANSWERS_MAX entries of
#: at most about 2 kB each, whatever the rate; it also expires RECENT_ANSWERS_TTL_S after
#: the last question.
RECENT_ANSWERS = PREFIX + "answers:recent"
RECENT_ANSWERS_MAX = 10_000
RECENT_ANSWERS_TTL_S = 7 * 24 * 3600
#: How long answer workers keep a task's result (the bot's watchdog and `lorebot ask`
#: read it within minutes).
ANSWER_RESULT_TTL_S = 3600
#: Slack retries for up to about an hour; remember event ids a bit longer.
DEDUPE_TTL_S = 2 * 3600
#: Slack's replay window: a signed request older than this is refused by its timestamp.
SIGNATURE_WINDOW_S = 300
#: How long an accepted request signature is remembered: the window on both sides (clock skew).
SIGNED_SEEN_TTL_S = 2 * SIGNATURE_WINDOW_S + 60


def event_seen(event_id: str) -> str:
    return f"{PREFIX}seen:event:{event_id}"


def message_seen(channel: str, ts: str) -> str:
    return f"{PREFIX}seen:msg:{channel}:{ts}"


def client_msg_seen(client_msg_id: str) -> str:
    return f"{PREFIX}seen:cmsg:{client_msg_id}"


def signed_seen(signature: str) -> str:
    """Set once a signed HTTP request (``X-Slack-Signature``) was accepted: a replay is dropped."""
    return f"{PREFIX}seen:sig:{signature}"


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


# --- Locks --------------------------------------------------------------------------------

#: One nightly refresh at a time (renewed while it runs; see workers.tasks.refresh).
REFRESH_LOCK = PREFIX + "lock:refresh"
#: How long a reindex lock lives without being released (a killed build frees it then).
REINDEX_LOCK_TTL_S = 6 * 3600


def reindex_lock(collection: str | None) -> str:
    """One build per collection at a time; ``None`` is a build of every collection."""
    return f"{PREFIX}lock:reindex:{collection or '*'}"


#: A distributed build (ingest.distributed) keeps its Redis state this long at most.
BUILD_TTL_S = 24 * 3600


def build_alive(build: str) -> str:
    """Set (with a short expiry, renewed) while a distributed build's coordinator waits."""
    return f"{PREFIX}build:{build}:alive"


def build_claim(build: str, batch: str) -> str:
    """The worker running a batch ("host:pid"), expiring unless the worker renews it."""
    return f"{PREFIX}build:{build}:claim:{batch}"


def build_done(build: str) -> str:
    """Hash: batch id -> JSON {key, digest, worker, seconds} of the stored result."""
    return f"{PREFIX}build:{build}:done"


# --- The Slack reply target ---------------------------------------------------------------


@dataclass(frozen=True)
class ReplyTarget:
    """Where a worker writes its result: the message the bot posted, in its thread.

    The bot builds one per question or job and sends it as a task argument (a JSON
    object); the worker and the bot's watchdog read it back with :meth:`from_dict`.
    """

    channel: str
    message_ts: str
    thread_ts: str | None = None
    team: str | None = None
    user: str | None = None
    started_at: float | None = None
    question_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent in a task's arguments (keys without a value are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | ReplyTarget | None) -> ReplyTarget | None:
        """The target in a task's arguments; unknown keys are ignored, a missing one is None."""
        if data is None or isinstance(data, ReplyTarget):
            return data
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def thread(self) -> str:
        """The thread to post in: the question's thread, else the placeholder itself."""
        return self.thread_ts or self.message_ts

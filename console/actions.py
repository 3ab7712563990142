"""Every change the console makes, validated, done the way ``/lorebot`` does it, and audited.

* re-index: the ``lorebot.reindex`` task by name on the ``ingest`` queue (no reply target:
  the console follows the task's state in the result backend instead of a Slack thread);
* sync one remote source: the ``lorebot.source_sync`` task by name on the ``ingest`` queue,
  for a source the connectors' registry knows (followed like a re-index);
* promote / rollback: the ``lorebot.adapters`` task on the ``control`` queue, so the
  registry is changed (and published to the fleet) by the worker that owns it;
* channel mapping: :class:`bot.state.ChannelAccess`, the Redis hash ``/lorebot channel``
  writes;
* a 👎 answer's right answer: :meth:`lorebot.feedback.FeedbackStore.correct`.

Inputs are checked here (names, lengths) before anything is sent; each action raises
:class:`ActionError` with a one-line reason, and writes one audit line, refused or not.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from bot.state import ChannelAccess
from console.audit import AuditLog
from lorebot import contracts, feedback
from lorebot.errors import LorebotError
from lorebot.settings import Settings
from lorebot.types import new_id
from lorebot.versioned import valid_name

CHANNEL_RE = re.compile(r"^[CDG][A-Z0-9]{2,30}$")
COLLECTION_RE = re.compile(rf"^{contracts.COLLECTION_NAME}$")
QUESTION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
SOURCE_NAME_RE = re.compile(rf"^{contracts.COLLECTION_NAME}$")  # what `source add` takes
TASK_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_ANSWER_CHARS = 4000
MAX_COLLECTIONS = 50
#: The console's own Redis list of the jobs it started (newest first), capped.
JOBS_KEY = contracts.PREFIX + "console:jobs"
MAX_JOBS = 50
JOBS_TTL_S = 7 * 24 * 3600
ADAPTERS_TIMEOUT_S = 20.0


class ActionError(LorebotError):
    """A change the console refused or could not make (bad input, no worker, ...)."""


def parse_collections(text: str) -> list[str] | None:
    """``"hr, handbook"`` -> ["hr", "handbook"]; ``all`` or ``*`` -> None (every collection)."""
    names = [n.strip() for n in re.split(r"[,\s]+", text or "") if n.strip()]
    if [n.lower() for n in names] in (["all"], ["*"]):
        return None
    if not names:
        raise ActionError("name at least one collection, or all")
    if len(names) > MAX_COLLECTIONS:
        raise ActionError(f"at most {MAX_COLLECTIONS} collections")
    bad = [n for n in names if not COLLECTION_RE.match(n)]
    if bad:
        raise ActionError(f"not a collection name: {bad[0][:64]!r} (letters, digits, - _ .)")
    return sorted(set(names))


STAGES = {
    "parse": ("parsing", "files"),
    # A distributed build (index.distributed): files parsed and embedded by the ingest workers.
    "fleet": ("parsing and embedding on the ingest workers", "files"),
    "embed": ("embedding", "chunks"),
    "write": ("writing", ""),
}


def progress_text(meta: Any) -> str:
    """``{"stage": "parse", "done": 12, "total": 40}`` -> "parsing 12/40 files (30%)"."""
    if not isinstance(meta, dict):
        return "running on an ingest worker"
    label, unit = STAGES.get(str(meta.get("stage")), (str(meta.get("stage") or "running"), ""))
    done, total = meta.get("done"), meta.get("total")
    if not (isinstance(done, int) and isinstance(total, int) and total > 0 and unit):
        return label[:80] + "…"
    return f"{label} {done:,}/{total:,} {unit} ({100 * done // total}%)"


def _sync_result(result: dict[str, Any]) -> dict[str, Any]:
    """A ``lorebot.source_sync`` result as the job page shows it: the message, counts and
    per-document failures (each ``{path: document id, reason}``) of its source(s)."""
    sources = [r for r in (result.get("sources") or []) if isinstance(r, dict)][:20]
    counts: dict[str, int] = {}
    failed: list[dict[str, Any]] = []
    for r in sources:
        for key in ("fetched", "unchanged", "deleted"):
            if isinstance(r.get(key), int):
                counts[key] = counts.get(key, 0) + r[key]
        for f in r.get("failures") or []:
            if isinstance(f, dict) and len(failed) < 200:
                failed.append({"path": f.get("id"), "reason": f.get("reason")})
    if failed:
        counts["failed"] = len(failed)
    messages = [str(r.get("message") or r.get("status"))[:300] for r in sources]
    return {
        "status": result.get("status"),
        "message": "; ".join(messages) or str(result.get("status") or "no source was due"),
        "counts": counts,
        "failed": failed,
    }


class Actions:
    """The console's changes; ``gateway`` submits tasks by name (bot.gateway.WorkerGateway)."""

    def __init__(self, settings: Settings, redis, gateway, audit: AuditLog) -> None:
        self.settings = settings
        self.redis = redis
        self.gateway = gateway
        self.audit = audit

    # -- re-index ---------------------------------------------------------------------
    def reindex(self, who: str, collection: str | None) -> str:
        """Queue a re-index of one collection (or all); returns the task id."""
        if collection and not COLLECTION_RE.match(collection):
            self.audit.record(who, "reindex", result="refused", collection=collection[:64])
            raise ActionError(f"not a collection name: {collection[:64]!r}")
        task_id = new_id()
        try:
            self.gateway.send(
                contracts.TASK_REINDEX,
                {"collection": collection or None, "reply": None},
                contracts.QUEUE_INGEST,
                task_id,
            )
        except LorebotError as exc:
            self.audit.record(
                who, "reindex", result="failed", collection=collection, error=exc.message
            )
            raise ActionError(exc.message, fix=exc.fix) from None
        self._remember_job({"id": task_id, "kind": "reindex", "collection": collection, "by": who})
        self.audit.record(who, "reindex", collection=collection or "*", task=task_id)
        return task_id

    def _remember_job(self, job: dict[str, Any]) -> None:
        try:
            pipe = self.redis.pipeline()
            pipe.lpush(JOBS_KEY, json.dumps(job | {"at": time.time()}))
            pipe.ltrim(JOBS_KEY, 0, MAX_JOBS - 1)
            pipe.expire(JOBS_KEY, JOBS_TTL_S)
            pipe.execute()
        except Exception:  # noqa: BLE001 - the job runs; only the console's list misses it
            pass

    # -- sync one remote source ---------------------------------------------------------
    def source_sync(self, who: str, name: str) -> str:
        """Queue a sync of one remote source (``lorebot.source_sync``); returns the task id."""
        from ingest.connectors.sync import all_sources

        name = (name or "").strip()
        if not SOURCE_NAME_RE.match(name):
            self.audit.record(who, "source.sync", result="refused", source=name[:64])
            raise ActionError(f"not a source name: {name[:64]!r}")
        try:
            known = name in all_sources(self.settings)
        except LorebotError as exc:
            self.audit.record(who, "source.sync", result="failed", source=name, error=exc.message)
            raise ActionError(exc.message, fix=exc.fix) from None
        if not known:
            self.audit.record(who, "source.sync", result="refused", source=name)
            raise ActionError(f"no source named {name}")
        task_id = new_id()
        try:
            self.gateway.send(
                contracts.TASK_SOURCE_SYNC, {"name": name}, contracts.QUEUE_INGEST, task_id
            )
        except LorebotError as exc:
            self.audit.record(who, "source.sync", result="failed", source=name, error=exc.message)
            raise ActionError(exc.message, fix=exc.fix) from None
        self._remember_job({"id": task_id, "kind": "sync", "source": name, "by": who})
        self.audit.record(who, "source.sync", source=name, task=task_id)
        return task_id

    def jobs(self) -> list[dict[str, Any]]:
        try:
            raw = self.redis.lrange(JOBS_KEY, 0, MAX_JOBS - 1)
        except Exception:  # noqa: BLE001
            return []
        out = []
        for item in raw:
            try:
                out.append(json.loads(item))
            except ValueError:
                continue
        return out

    def job_state(self, task_id: str) -> dict[str, Any]:
        """{state, done, message, failed: [{path, reason}], counts} of a console job."""
        if not TASK_ID_RE.match(task_id or ""):
            raise ActionError("not a job id")
        try:
            state, result = self.gateway.state(task_id)
        except Exception as exc:  # noqa: BLE001
            return {
                "state": "UNKNOWN",
                "done": False,
                "message": f"cannot read: {type(exc).__name__}",
            }
        out: dict[str, Any] = {"state": state, "done": state in ("SUCCESS", "FAILURE", "REVOKED")}
        if state == "PENDING":
            try:
                ahead = int(self.redis.llen(contracts.QUEUE_INGEST))
            except Exception:  # noqa: BLE001
                ahead = None
            out["message"] = "queued" + (f" ({ahead} waiting on the ingest queue)" if ahead else "")
        elif state == "STARTED":
            out["message"] = "running on an ingest worker"
        elif state == "PROGRESS":
            out["message"] = progress_text(self._info(task_id))
        elif state == "SUCCESS" and isinstance(result, dict) and "sources" in result:
            out.update(_sync_result(result))
        elif state == "RETRY":
            out["message"] = "waiting: another build holds the index; it is tried again soon"
        elif state == "SUCCESS" and isinstance(result, dict):
            out["message"] = str(result.get("message") or result.get("status"))
            out["status"] = result.get("status")
            report = result.get("report") or {}
            out["counts"] = report.get("counts") or {}
            out["failed"] = [
                {"path": f.get("path"), "reason": f.get("reason")}
                for f in (report.get("files") or [])
                if f.get("status") == "failed"
            ][:200]
        elif state == "FAILURE":
            out["message"] = f"the task failed on the worker ({type(result).__name__})"
        else:
            out["message"] = state.lower()
        return out

    def _info(self, task_id: str) -> Any:
        """The meta of a task in progress (``update_state(state="PROGRESS", meta=...)``)."""
        try:
            return self.gateway.app.AsyncResult(task_id).info
        except Exception:  # noqa: BLE001 - the page says "running" instead
            return None

    # -- adapters ---------------------------------------------------------------------
    def _adapters(self, who: str, action: str, version: str | None) -> str:
        try:
            result = self.gateway.call(
                contracts.TASK_ADAPTERS,
                contracts.TASK_QUEUES[contracts.TASK_ADAPTERS],
                kwargs={"action": action, "version": version},
                timeout=ADAPTERS_TIMEOUT_S,
            )
        except LorebotError as exc:
            self.audit.record(
                who, f"adapters.{action}", result="failed", version=version, error=exc.message
            )
            raise ActionError(exc.message, fix=exc.fix) from None
        error = result.get("error") if isinstance(result, dict) else "no result"
        text = str(result.get("text", "")) if isinstance(result, dict) else ""
        if error:
            self.audit.record(
                who, f"adapters.{action}", result="failed", version=version, error=error
            )
            raise ActionError(str(error))
        self.audit.record(
            who, f"adapters.{action}", version=version, current=result.get("current") or "base"
        )
        return text

    def promote(self, who: str, version: str) -> str:
        if not version or len(version) > 80 or not valid_name(version):
            self.audit.record(
                who, "adapters.promote", result="refused", version=(version or "")[:80]
            )
            raise ActionError("not an adapter version")
        return self._adapters(who, "promote", version)

    def rollback(self, who: str) -> str:
        return self._adapters(who, "rollback", None)

    # -- channels ---------------------------------------------------------------------
    def _channel(self, who: str, channel: str, action: str) -> str:
        channel = (channel or "").strip().upper()
        if not CHANNEL_RE.match(channel):
            self.audit.record(who, f"channel.{action}", result="refused", channel=channel[:40])
            raise ActionError("not a Slack channel id (like C0123ABCD)")
        return channel

    def set_channel(
        self, who: str, channel: str, collections_text: str, *, confirm_all: bool
    ) -> None:
        channel = self._channel(who, channel, "set")
        try:
            collections = parse_collections(collections_text)
        except ActionError:
            self.audit.record(who, "channel.set", result="refused", channel=channel)
            raise
        if collections is None and not confirm_all:
            self.audit.record(
                who, "channel.set", result="refused", channel=channel, collections="*"
            )
            raise ActionError(
                "opening every collection to a channel needs the confirmation box ticked"
            )
        ChannelAccess(self.redis, self.settings).set(channel, collections)
        self.audit.record(
            who,
            "channel.set",
            channel=channel,
            collections="*" if collections is None else ",".join(collections),
        )

    def reset_channel(self, who: str, channel: str) -> None:
        channel = self._channel(who, channel, "reset")
        ChannelAccess(self.redis, self.settings).reset(channel)
        self.audit.record(who, "channel.reset", channel=channel)

    # -- answers ----------------------------------------------------------------------
    def correct(self, who: str, question_id: str, answer: str) -> str:
        """Store the right answer to a voted question; returns the question."""
        answer = (answer or "").strip()
        if not QUESTION_ID_RE.match(question_id or ""):
            self.audit.record(who, "answer.correct", result="refused")
            raise ActionError("not a question id")
        if not answer or len(answer) > MAX_ANSWER_CHARS:
            self.audit.record(who, "answer.correct", result="refused", question_id=question_id)
            raise ActionError(f"the answer must have 1 to {MAX_ANSWER_CHARS} characters")
        store = feedback.FeedbackStore(feedback.feedback_path(self.settings))
        try:
            question = store.correct(question_id=question_id, answer=answer, admin=who)
        except KeyError:
            self.audit.record(who, "answer.correct", result="refused", question_id=question_id)
            raise ActionError("nobody voted on that question") from None
        self.audit.record(who, "answer.correct", question_id=question_id, answer=answer)
        return question

"""The refresh and adapter-registry tasks: one run at a time, progress to Slack, report to admins.

The lock is a Redis key with a short expiry that a background thread keeps renewing, so a
run killed with SIGKILL frees it within ``training.lock_ttl_s`` and the next run starts;
if renewal fails (Redis lost, or the key expired and someone else took it) the run stops
at its next step rather than race another one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorebot import access, contracts, slack
from lorebot.errors import LorebotError
from lorebot.settings import Settings

log = logging.getLogger(__name__)


def refresh_time_limit_s(settings: Settings) -> int:
    """Hard limit of one refresh task: the training budget plus room for pairs and the gate."""
    return int(settings.training.time_budget_s) + contracts.REFRESH_SLACK_S


class RefreshLock:
    """A renewed Redis lock; ``lost`` turns true when it could not be renewed."""

    def __init__(self, redis_client: Any, ttl_s: int, key: str = contracts.REFRESH_LOCK) -> None:
        self.lock = redis_client.lock(key, timeout=ttl_s, blocking=False, thread_local=False)
        self.ttl_s = ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.lock.acquire(blocking=False):
            return False
        self._thread = threading.Thread(target=self._renew, name="refresh-lock", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.lock.reacquire():
                    self.lost = True
            except Exception as exc:  # LockNotOwnedError, connection errors
                log.warning("refresh lock could not be renewed: %s", exc)
                self.lost = True
            if self.lost:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.lock.release()
        except Exception:  # expired or taken over: nothing to release
            pass


def _redis(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.redis.effective_url, socket_timeout=10)


def _delivery(settings: Settings, reply: contracts.ReplyTarget | dict | None):
    if not reply:
        return None
    from workers.delivery import SlackDelivery

    return SlackDelivery.from_settings(settings, reply)


def report_text(report: Any) -> str:
    """The admin-channel message: decision, scores and durations in a few lines of mrkdwn."""
    lines = [
        f"*Nightly refresh {report.run}: {report.status}*"
        + (f" `{report.version}`" if report.version else ""),
        report.reason,
    ]
    if report.metrics:
        keys = [
            k
            for k in (
                "score",
                "heldout_f1",
                "heldout_similarity",
                "abstention",
                "golden_f1",
                "feedback_f1",
                "xquad_f1",
            )
            if any(k in m for m in report.metrics.values())
        ]
        header = "model      " + " ".join(f"{k[:12]:>12}" for k in keys)
        rows = [header]
        for label, m in report.metrics.items():
            cells = " ".join(
                f"{m[k]:>12.3f}" if isinstance(m.get(k), float) else f"{'-':>12}" for k in keys
            )
            rows.append(f"{label:<10} {cells}")
        lines.append("```" + "\n".join(rows) + "```")
    if report.pairs:
        lines.append(
            f"pairs: {report.pairs.get('generated', 0)} written, "
            f"{report.pairs.get('kept', 0)} kept "
            f"(dropped "
            f"{', '.join(f'{k} {v}' for k, v in (report.pairs.get('dropped') or {}).items())}); "
            f"pool {report.split.get('train', 0)} train / {report.split.get('heldout', 0)} held out"
        )
    if report.durations_s:
        lines.append(
            "durations: " + ", ".join(f"{k} {v:.0f}s" for k, v in report.durations_s.items())
        )
    if report.collections:
        lines.append(f"trained on: {', '.join(report.collections)}")
    for other in report.scopes:
        lines.append(
            f"scope {other.get('scope')} ({', '.join(other.get('collections') or [])}): "
            f"{other.get('status')} {other.get('version') or ''} — {other.get('reason', '')}"
        )
    return "\n".join(line for line in lines if line)


def channel_overrides(r: Any) -> dict[str, list[str] | None]:
    """The run-time channel mappings (``/lorebot channel set``): channel -> collections
    (None = every collection). Unreadable: none, with a warning (the settings still apply)."""
    try:
        return access.read_overrides(r)
    except Exception as exc:
        log.warning("refresh: could not read the channel mappings from redis: %s", exc)
        return {}


def report_renderable(report: dict[str, Any]) -> Any:
    """The rich tables of a report dict (as the task returns it), for the CLI."""
    from slm.training.refresh import RefreshReport

    return RefreshReport(**report).table()


def post_report(settings: Settings, report: Any) -> bool:
    """Post the summary and the score-history chart to slack.admin_channel (if configured)."""
    channel = settings.slack.admin_channel
    if not channel or settings.slack.bot_token is None:
        return False
    web = slack.web_client(settings, timeout=30)
    try:
        web.chat_postMessage(channel=channel, text=report_text(report))
        chart = report.files.get("chart")
        if chart and Path(chart).is_file():
            web.files_upload_v2(
                channel=channel,
                file=chart,
                filename=f"refresh-{report.run}.png",
                title=f"lorebot refresh score history ({report.run})",
            )
        return True
    except Exception as exc:  # the run's outcome does not depend on Slack
        log.warning("refresh %s: could not post the report to %s: %s", report.run, channel, exc)
        return False


def _wait_for_reindex(r: Any, max_wait_s: float, grace_s: float = 5.0) -> None:
    """The nightly reindex starts at the same minute: learn from the new index, not the old."""
    deadline = time.monotonic() + max_wait_s
    time.sleep(grace_s)
    while time.monotonic() < deadline and r.exists(contracts.reindex_lock(None)):
        time.sleep(5)


def refresh_impl(
    settings: Settings,
    *,
    reply: contracts.ReplyTarget | dict | None = None,
    progress: Callable[[str, str, bool], None] | None = None,
    scheduled: bool = False,
    teacher: Any | None = None,
    embedder: Any | None = None,
) -> dict[str, Any]:
    """Run one refresh under the lock; returns {status, message, report?}."""
    from slm.training.refresh import run_refresh

    delivery = _delivery(settings, reply)
    r = _redis(settings)
    lock = RefreshLock(r, settings.training.lock_ttl_s)
    if not lock.acquire():
        msg = "a model refresh is already running"
        log.info("refresh: %s", msg)
        if delivery:
            delivery.progress(msg)
        return {"status": "busy", "message": msg}
    try:
        if scheduled:
            _wait_for_reindex(r, max_wait_s=3600)

        def on_progress(step: str, message: str, detail: bool) -> None:
            if progress:
                progress(step, message, detail)
            if delivery and not detail:
                delivery.progress(f"{step}: {message}")

        try:
            report = run_refresh(
                settings,
                progress=on_progress,
                should_stop=lambda: lock.lost,
                teacher=teacher,
                embedder=embedder,
                overrides=channel_overrides(r),
            )
        except Exception as exc:  # recorded and reported; a retry would only fail again
            if isinstance(exc, LorebotError):
                msg = f"refresh failed: {exc.one_line()}"
                log.error("refresh: %s", msg)
            else:
                msg = f"refresh failed: {type(exc).__name__}: {exc}"
                log.exception("refresh: %s", msg)
            _store_last(
                r, {"status": "failed", "reason": msg, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            )
            if delivery:
                delivery.progress(msg)
            _post_failure(settings, msg)
            return {"status": "failed", "message": msg}
        if report.status == "promoted":
            _publish(settings)
        _store_last(r, report.summary())
        log.info("%s", report.one_line())
        post_report(settings, report)
        if delivery:
            delivery.progress(report_text(report))
        return {"status": report.status, "message": report.one_line(), "report": report.to_dict()}
    finally:
        lock.release()


def _publish(settings: Settings) -> None:
    """Copy the registry to the shared location (when fleet sync is configured)."""
    from lorebot.sync import publish_adapters

    try:
        publish_adapters(settings)
    except Exception as exc:  # this host serves the new adapter either way
        log.warning("adapters: publishing to the shared location failed: %s", exc)


def _store_last(r: Any, summary: dict[str, Any]) -> None:
    try:
        r.set(contracts.LAST_REFRESH, json.dumps(summary))
    except Exception as exc:
        log.warning("refresh: could not record the summary in redis: %s", exc)


def _post_failure(settings: Settings, msg: str) -> None:
    if settings.slack.admin_channel and settings.slack.bot_token is not None:
        try:
            slack.web_client(settings, timeout=30).chat_postMessage(
                channel=settings.slack.admin_channel, text=f":warning: {msg}"
            )
        except Exception as exc:
            log.warning("refresh: could not post the failure: %s", exc)


def trained_on(card: dict[str, Any]) -> str:
    """An adapter's access scope as shown to admins: the collections it learned from."""
    cols = card.get("collections")
    return ",".join(cols) if isinstance(cols, list) else "unknown (serves only all-access)"


def adapters_impl(
    settings: Settings, action: str, version: str | None = None, scope: str | None = None
) -> dict[str, Any]:
    """`adapters list|promote|rollback` for the CLI and /lorebot; {text, adapters, current}.

    ``list`` shows every registry (the root one and each access scope's); promote and
    rollback act on ``scope``'s registry (None = the root one).
    """
    from slm.training import registry

    try:
        if action == "list":
            cards = registry.list_all(settings)
            lines = [
                f"{'*' if c['current'] else ' '} {c['version']}  {c.get('status', '?'):<9} "
                f"scope {trained_on(c)}"
                + (f" [{c['scope']}]" if c.get("scope") else "")
                + " score "
                f"{((c.get('metrics') or {}).get('candidate') or {}).get('score', '-')}  "
                f"{c.get('reason', '')}"
                for c in cards
            ]
            current = registry.current_version(settings)
            serving = {ref.scope or "": ref.version for ref in registry.serving_adapters(settings)}
            text = "\n".join(lines) if lines else "no adapters yet: the base model serves"
            return {
                "text": f"current: {current or 'base model'}\n```{text}```",
                "adapters": cards,
                "current": current,
                "serving": serving,
            }
        if action == "promote" and version and scope is None:
            scope = _scope_of(settings, version)
        if action == "rollback" and scope is None and version:
            scope = version  # `/lorebot adapters rollback <scope>`: the bot sends it as version
        where = f" in scope {scope}" if scope else ""
        if action == "promote":
            if not version:
                raise registry.RegistryError(
                    "which version?", fix="adapters promote VERSION (see adapters list)"
                )
            previous = registry.promote(
                settings, version, reason="promoted by an admin", scope=scope
            )
            if scope is None:
                _publish(settings)
            return {
                "text": f"promoted {version}{where} (was {previous or 'base model'})",
                "current": version,
            }
        if action == "rollback":
            target = registry.rollback(settings, scope=scope)
            if scope is None:
                _publish(settings)
            return {
                "text": f"rolled back{where} to {target or 'the base model'}",
                "current": target,
            }
    except LorebotError as exc:
        return {"text": f"adapters {action} failed: {exc.one_line()}", "error": exc.one_line()}
    return {
        "text": f"unknown action {action!r}: use list, promote VERSION or rollback",
        "error": "unknown action",
    }


def _scope_of(settings: Settings, version: str) -> str | None:
    """The registry holding ``version``: the root one, else the one scope that has it."""
    from slm.training import registry

    if registry.is_complete(settings, version):
        return None
    found = [s for s in registry.scopes(settings) if registry.is_complete(settings, version, s)]
    return found[0] if len(found) == 1 else None


def register(app: Any, settings: Settings) -> None:
    """Register the ``refresh`` (train queue) and ``adapters`` tasks on ``app``."""
    from lorebot import telemetry

    limit = refresh_time_limit_s(settings)

    @app.task(
        name=contracts.TASK_REFRESH, shared=False, time_limit=limit, soft_time_limit=limit - 60
    )
    def refresh(reply: dict | None = None, scheduled: bool = False) -> dict:
        result = refresh_impl(settings, reply=reply, scheduled=scheduled)
        if isinstance(result, dict) and result.get("status") in telemetry.REFRESH_DECISIONS:
            # "busy" (another run holds the lock) is not a result
            telemetry.record_refresh(result["status"])
        return result

    @app.task(
        name=contracts.TASK_ADAPTERS,
        shared=False,
        time_limit=contracts.CONTROL_TIME_LIMIT_S,
        soft_time_limit=contracts.CONTROL_TIME_LIMIT_S - 5,
    )
    def adapters(
        action: str = "list", version: str | None = None, scope: str | None = None
    ) -> dict:
        return adapters_impl(settings, action, version, scope)

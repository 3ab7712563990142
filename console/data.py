"""What each page shows, read from the stores the workers write (never changed here).

Every reader takes the settings and, where it needs Redis, a client, and returns plain
dicts for the templates. Nothing here loads a model or an index: the index's numbers come
from the serving version's manifest (immutable once published, so it is cached per
version), the adapters' from their cards, the votes from the feedback store. Every list is
bounded (a page size, a cap) and every free-text filter is cut to ``MAX_QUERY_CHARS``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from bot.state import ALL, ChannelAccess, open_access_warnings
from lorebot import contracts, feedback, recent, sync
from lorebot.errors import LorebotError
from lorebot.settings import Settings

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 200
PAGE_SIZE = 50
#: A worker whose last heartbeat is older than this is shown as late (it beats every 60 s).
LATE_AFTER_S = 2 * contracts.SERVING_HEARTBEAT_S

_manifests: dict[tuple[str, str], dict[str, Any]] = {}
_manifests_lock = threading.Lock()


def clean_query(q: str | None) -> str:
    return (q or "").strip()[:MAX_QUERY_CHARS]


# --------------------------------------------------------------------------- index
def index_manifest(settings: Settings) -> dict[str, Any] | None:
    """The serving index version's manifest, or None when nothing is indexed yet."""
    from ingest.store import MANIFEST, current_version, version_path

    version = current_version(settings)
    if version is None:
        return None
    key = (str(settings.index_dir), version)
    with _manifests_lock:
        if key in _manifests:
            return _manifests[key]
    path = version_path(settings, version) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("console: cannot read %s: %s", path, exc)
        return None
    with _manifests_lock:
        if len(_manifests) >= 4:  # a few versions at most: the current one and its successor
            _manifests.pop(next(iter(_manifests)))
        _manifests[key] = manifest
    return manifest


def index_summary(settings: Settings) -> dict[str, Any] | None:
    m = index_manifest(settings)
    if m is None:
        return None
    return {
        "version": m.get("version"),
        "built_at": m.get("built_at"),
        "documents": (m.get("counts") or {}).get("documents", 0),
        "chunks": (m.get("counts") or {}).get("chunks", 0),
        "collections": {
            name: {"documents": c.get("documents", 0), "chunks": c.get("chunks", 0)}
            for name, c in sorted((m.get("collections") or {}).items())
        },
        "index_type": m.get("index_type"),
    }


# --------------------------------------------------------------------------- status
def status(settings: Settings, redis) -> dict[str, Any]:
    """The Status page: index, adapter, workers, queues, last nightly, Redis health."""
    from slm.training.registry import current_version as adapter_version

    out: dict[str, Any] = {
        "index": index_summary(settings),
        "adapter": adapter_version(settings),
        "redis": {"ok": False},
        "queues": {},
        "workers": [],
        "last_refresh": None,
        "feedback": None,
    }
    started = time.perf_counter()
    try:
        redis.ping()
        out["redis"] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
        pipe = redis.pipeline(transaction=False)
        for q in contracts.ALL_QUEUES:
            pipe.llen(q)
        pipe.get(contracts.LAST_REFRESH)
        *depths, last = pipe.execute()
        out["queues"] = dict(zip(contracts.ALL_QUEUES, (int(d) for d in depths)))
        try:
            out["last_refresh"] = json.loads(last) if last else None
        except ValueError:
            out["last_refresh"] = {"status": "unreadable"}
        now = time.time()
        for name, entry in sorted(sync.serving_workers(settings).items()):
            age = now - float(entry.get("at") or 0)
            out["workers"].append(
                {
                    "name": name,
                    "index": entry.get("index"),
                    "adapter": entry.get("adapter") or "base",
                    "queues": entry.get("queues"),
                    "age_s": int(age),
                    "healthy": age <= LATE_AFTER_S,
                }
            )
    except Exception as exc:  # noqa: BLE001 - the page says Redis is down; it must not fail
        out["redis"] = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)[:200]}
    try:
        path = feedback.feedback_path(settings)
        if path.is_file():
            out["feedback"] = feedback.FeedbackStore(path).vote_counts()
    except Exception as exc:  # noqa: BLE001
        log.warning("console: cannot read feedback counts: %s", exc)
    return out


# --------------------------------------------------------------------------- documents
def documents(settings: Settings, *, q: str = "", only: str = "", page: int = 0) -> dict[str, Any]:
    """Sources and per-document results of the serving version: failures first."""
    from ingest.registry import recorded_sources

    q = clean_query(q).lower()
    try:
        sources = [
            {
                "path": str(e.get("path")),
                "collection": str(e.get("collection")),
                "recorded_at": e.get("recorded_at"),
                "include": ", ".join(map(str, e.get("include") or [])),
                "exclude": ", ".join(map(str, e.get("exclude") or [])),
            }
            for e in recorded_sources(settings)
        ]
        sources_error = None
    except Exception as exc:  # noqa: BLE001 - a damaged registry is shown, not raised
        sources, sources_error = [], str(exc)[:300]
    m = index_manifest(settings) or {}
    files = []
    counts: dict[str, int] = {}
    rank = {"failed": 0, "skipped": 1, "ok": 2, "unchanged": 2}
    for key, f in (m.get("files") or {}).items():
        counts[f.get("status", "?")] = counts.get(f.get("status", "?"), 0) + 1
        if only and f.get("status") != only:
            continue
        title = f.get("title") or ""
        if q and q not in title.lower() and q not in (f.get("path") or key).lower():
            continue
        files.append(
            {
                "key": key,
                "title": title or Path(f.get("path") or key).name,
                "path": f.get("path") or key,
                "collection": f.get("collection"),
                "status": f.get("status"),
                "reason": f.get("reason"),
                "chunks": f.get("chunks", 0),
                "modified": f.get("modified"),
            }
        )
    files.sort(key=lambda f: (rank.get(f["status"], 3), f["collection"] or "", f["path"]))
    page = max(0, page)
    return {
        "version": m.get("version"),
        "built_at": m.get("built_at"),
        "sources": sources,
        "sources_error": sources_error,
        "collections": sorted({s["collection"] for s in sources} | set(m.get("collections") or {})),
        "counts": counts,
        "total": len(files),
        "files": files[page * PAGE_SIZE : (page + 1) * PAGE_SIZE],
        "page": page,
        "pages": max(1, -(-len(files) // PAGE_SIZE)),
    }


def connector_sources(settings: Settings, *, q: str = "") -> dict[str, Any]:
    """Every remote source (settings and ``lorebot source add``) with its last sync and its
    per-document failures, from the connectors' read API; ``q`` keeps the failures whose
    document id or reason holds it."""
    from ingest.connectors.sync import source_overview

    q = clean_query(q).lower()
    try:
        rows = source_overview(settings)
    except LorebotError as exc:  # a damaged source list is shown, not raised
        return {"rows": [], "error": " ".join(exc.one_line().split())[:300]}
    except Exception as exc:  # noqa: BLE001
        log.warning("console: cannot read the remote sources: %r", exc)
        return {"rows": [], "error": f"cannot read the remote sources: {type(exc).__name__}"}
    if q:
        for r in rows:
            r["failures"] = [
                f for f in r["failures"] if q in f["id"].lower() or q in f["reason"].lower()
            ]
    return {"rows": rows, "error": None}


# --------------------------------------------------------------------------- answers
def answers(settings: Settings, *, q: str = "", page: int = 0) -> dict[str, Any]:
    """Voted answers, 👎 first, newest first, with any admin correction."""
    path = feedback.feedback_path(settings)
    if not path.is_file():
        return {"rows": [], "counts": {"up": 0, "down": 0, "corrected": 0}, "page": 0}
    store = feedback.FeedbackStore(path)
    page = max(0, page)
    rows = store.recent(limit=PAGE_SIZE, offset=page * PAGE_SIZE, query=clean_query(q) or None)
    for r in rows:
        r["created"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"]))
    return {"rows": rows, "counts": store.vote_counts(), "page": page}


def recent_answers(redis, *, channel: str = "") -> dict[str, Any]:
    """The newest questions from the workers' log (lorebot.recent), of one channel if given."""
    channel = clean_query(channel)[:64]
    try:
        return {"rows": recent.read(redis, channel=channel), "error": None, "channel": channel}
    except Exception as exc:  # noqa: BLE001 - the page says Redis is down; it must not fail
        return {"rows": [], "error": type(exc).__name__, "channel": channel}


# --------------------------------------------------------------------------- models
def _score(metrics: dict[str, Any], who: str) -> float | None:
    value = (metrics.get(who) or {}).get("score")
    return float(value) if isinstance(value, int | float) else None


def models(settings: Settings) -> dict[str, Any]:
    """The adapter registry (newest first) with gate scores, its history, and a score series."""
    from slm.evals.history import history_path
    from slm.evals.history import read_history as eval_history
    from slm.training import registry

    cards = registry.list_adapters(settings)
    rows = []
    for c in cards:
        m = c.get("metrics") or {}
        suites = (m.get("candidate") or {}).get("suites") or {}
        rows.append(
            {
                "version": c["version"],
                "status": c.get("status", "?"),
                "current": c.get("current", False),
                "reason": c.get("reason") or "",
                "created": str(c.get("created") or "")[:19],
                "candidate": _score(m, "candidate"),
                "served": _score(m, "current"),
                "base": _score(m, "base"),
                "suites": {
                    k: v.get("f1") for k, v in sorted(suites.items()) if isinstance(v, dict)
                },
            }
        )
    chart = score_chart(rows)
    return {
        "current": registry.current_version(settings),
        "adapters": list(reversed(rows)),
        "history": list(reversed(registry.read_history(settings)))[:PAGE_SIZE],
        "evals": list(reversed(eval_history(history_path(settings))))[:PAGE_SIZE],
        "chart": chart,
    }


def score_chart(rows: list[dict[str, Any]], width: int = 640, height: int = 200) -> dict[str, Any]:
    """Polylines (SVG coordinates) of the candidates' gate scores and what served, oldest left."""
    pad = 30
    n = len(rows)
    series: dict[str, list[tuple[float, float]]] = {"candidate": [], "served": []}
    dots = []
    if n == 0:
        return {"width": width, "height": height, "series": series, "dots": dots, "n": 0}

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * (i / max(1, n - 1))
        y = height - pad - (height - 2 * pad) * max(0.0, min(1.0, v))
        return round(x, 1), round(y, 1)

    for i, r in enumerate(rows):
        for name in series:
            if r[name] is not None:
                series[name].append(xy(i, r[name]))
        if r["candidate"] is not None:
            x, y = xy(i, r["candidate"])
            dots.append({"x": x, "y": y, "status": r["status"], "version": r["version"]})
    return {
        "width": width,
        "height": height,
        "n": n,
        "series": {k: " ".join(f"{x},{y}" for x, y in v) for k, v in series.items()},
        "dots": dots,
    }


# --------------------------------------------------------------------------- access
class _HashSnapshot:
    """The channel hash read once (HGETALL), answering ChannelAccess's HGETs from memory:
    one Redis round trip for the page instead of one per channel, same resolution rules."""

    def __init__(self, mapping: dict) -> None:
        self.mapping = {(k.decode() if isinstance(k, bytes) else k): v for k, v in mapping.items()}

    def hget(self, key: str, field: str):
        return self.mapping.get(field) if key == contracts.CHANNEL_COLLECTIONS else None


def access(settings: Settings, redis) -> dict[str, Any]:
    """Every channel with a mapping (settings or /lorebot channel set), what it resolves to."""
    error = None
    try:
        snapshot = _HashSnapshot(redis.hgetall(contracts.CHANNEL_COLLECTIONS))
    except Exception as exc:  # noqa: BLE001
        snapshot, error = _HashSnapshot({}), f"{type(exc).__name__}: {str(exc)[:200]}"
    acc = ChannelAccess(snapshot, settings)
    overrides = set(snapshot.mapping)
    rows = []
    for channel in sorted(overrides | set(settings.slack.channel_collections)):
        try:
            collections, source = acc.resolve(channel, is_dm=False)
        except Exception as exc:  # noqa: BLE001 - a damaged entry is shown, not raised
            collections, source = [], f"unreadable: {type(exc).__name__}"
        rows.append(
            {
                "channel": channel,
                "collections": collections,
                "everything": collections is None,
                "source": source,
                "override": channel in overrides,
            }
        )
    slack = settings.slack
    return {
        "rows": rows,
        "default": slack.default_collections,
        "dm": slack.dm_collections,
        "warnings": open_access_warnings(settings)
        + [
            f"{r['channel']} sees every collection ({r['source']})"
            for r in rows
            if r["everything"] and r["override"]
        ],
        "error": error,
        "all": ALL,
    }

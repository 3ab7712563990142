"""One sync of one source: connector → mirror folder → the ordinary incremental build.

Each source owns ``<data_dir>/connectors/<name>/``: ``state.json`` (the cursor, every
document's version and mirror path, the last run's failures) and ``docs/<collection>/``,
a mirror of the source's documents that ``build_index`` reads like any folder. A changed
document is rewritten there, a deleted or unshared one is removed, so the build's own
diff re-parses only what changed and drops what went. The state is written after the
mirror, and a build that did not finish is run again by the next sync.

Sources come from settings (``sources.defined``) and from ``lorebot source add``
(``<data_dir>/connectors/sources.json``, which holds no secret values: only the names of
the environment variables or files that hold them).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.connectors.base import Connector, Doc, SourceError, safe_relpath
from lorebot.errors import ConfigError, IndexBusyError, IngestError
from lorebot.files import atomic_write_text
from lorebot.settings import Settings, SourceConfig

if TYPE_CHECKING:
    from ingest.embed import Embedder
    from ingest.pool import TimeoutPool
    from ingest.report import IngestReport

log = logging.getLogger(__name__)

REGISTRY = "sources.json"
STATE = "state.json"
#: One file in every mirror folder: a build needs at least one file per run, and a
#: source whose documents were all deleted must still be built (to remove them). Its
#: type is one no parser takes, so it is listed as skipped and never indexed.
MARKER = "SOURCE.lorebot-sync"
#: Failures kept in the state and the report (the rest are counted).
MAX_FAILURES = 500


def connectors_dir(settings: Settings) -> Path:
    return settings.data_dir / "connectors"


def source_dir(settings: Settings, name: str) -> Path:
    return connectors_dir(settings) / name


# --- the registry of sources added from the command line -----------------------------


def _registry(settings: Settings) -> dict[str, dict[str, Any]]:
    path = connectors_dir(settings) / REGISTRY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise IngestError(
            f"the source list {path} cannot be read: {exc}",
            fix=f"repair or delete {path} and add the sources again",
        ) from None
    return data if isinstance(data, dict) else {}


def all_sources(settings: Settings) -> dict[str, tuple[SourceConfig, str]]:
    """Every source by name, with where it is defined ("settings" or "cli")."""
    out: dict[str, tuple[SourceConfig, str]] = {
        n: (c, "settings") for n, c in settings.sources.defined.items()
    }
    for name, raw in _registry(settings).items():
        if name in out:
            log.warning(
                "source %s is defined in settings and with `source add`: settings win", name
            )
            continue
        try:
            out[name] = (SourceConfig.model_validate(raw), "cli")
        except ValueError as exc:
            raise ConfigError(
                f"source {name} in {connectors_dir(settings) / REGISTRY} is invalid: {exc}",
                fix=f"lorebot source remove {name}, then add it again",
            ) from None
    return out


def get_source(settings: Settings, name: str) -> SourceConfig:
    found = all_sources(settings).get(name)
    if found is None:
        raise ConfigError(f"no source named {name}", fix="see `lorebot source list`")
    return found[0]


def add_source(settings: Settings, name: str, cfg: SourceConfig) -> None:
    """Remember a source added from the command line (its secret only by reference)."""
    import re

    from lorebot.contracts import COLLECTION_NAME

    if not re.fullmatch(COLLECTION_NAME, name):
        raise ConfigError(
            f"source name {name!r} is not allowed", fix="letters, digits, '-', '_' and '.' only"
        )
    if cfg.secret is not None:
        raise ConfigError(
            "a source added from the command line keeps no secret value",
            fix="pass --secret-env VAR or --secret-file PATH instead",
        )
    if name in all_sources(settings):
        raise ConfigError(f"a source named {name} exists already", fix="choose another name")
    entries = _registry(settings)
    entries[name] = cfg.model_dump(mode="json", exclude_defaults=True) | {
        "kind": cfg.kind,
        "collection": cfg.collection,
    }
    atomic_write_text(connectors_dir(settings) / REGISTRY, json.dumps(entries, indent=2))
    log.info("source %s added (kind=%s, collection=%s)", name, cfg.kind, cfg.collection)


def _forget(settings: Settings, name: str) -> None:
    entries = _registry(settings)
    if entries.pop(name, None) is not None:
        atomic_write_text(connectors_dir(settings) / REGISTRY, json.dumps(entries, indent=2))


# --- state ------------------------------------------------------------------------------


def load_state(settings: Settings, name: str) -> dict[str, Any]:
    """The source's state from its last sync (empty before the first)."""
    path = source_dir(settings, name) / STATE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("source %s: state unreadable (%s); the next sync starts afresh", name, exc)
        return {}
    return data if isinstance(data, dict) else {}


#: What source_overview returns per source at most: failures and characters per field.
OVERVIEW_FAILURES = 200
OVERVIEW_FIELD_CHARS = 500


def source_overview(
    settings: Settings, *, max_failures: int = OVERVIEW_FAILURES
) -> list[dict[str, Any]]:
    """Every source with its last sync, read from its state and never changed: kind,
    collection(s), where it is defined, last sync and error, document count and the last
    run's failures (the first ``max_failures``, each ``{id, reason}``, fields cut).

    Imports no connector: the console calls it. Raises ConfigError / IngestError for a
    damaged source list, like :func:`all_sources`.
    """

    def cut(value: Any) -> str | None:
        return None if value is None else str(value)[:OVERVIEW_FIELD_CHARS]

    rows = []
    for name, (cfg, origin) in sorted(all_sources(settings).items()):
        state = load_state(settings, name)
        failures = [f for f in state.get("failures") or [] if isinstance(f, dict)]
        known = state.get("collections") or []
        rows.append(
            {
                "name": name,
                "kind": cfg.kind,
                "collection": cfg.collection,
                "collections": sorted(
                    {cfg.collection, *cfg.collections.values()}
                    | {str(c) for c in known if isinstance(c, str)}
                ),
                "schedule": cfg.schedule,
                "defined_in": origin,
                "documents": len(state.get("docs") or {}),
                "failure_count": len(failures),
                "failures": [
                    {"id": cut(f.get("id")) or "?", "reason": cut(f.get("reason")) or "?"}
                    for f in failures[: max(0, max_failures)]
                ],
                "last_sync": cut(state.get("last_sync")),
                "last_error": cut(state.get("last_error")),
                "index_version": cut(state.get("index_version")),
                "build_owed": bool(state.get("needs_build")),
            }
        )
    return rows


def _save_state(settings: Settings, name: str, state: dict[str, Any]) -> None:
    atomic_write_text(source_dir(settings, name) / STATE, json.dumps(state, indent=1))


@contextmanager
def source_lock(settings: Settings, name: str) -> Iterator[None]:
    """One sync per source at a time (an flock, released if the process dies)."""
    folder = source_dir(settings, name)
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexBusyError(
                    f"a sync of source {name} is already running",
                    fix="wait for it to finish, then run this again",
                ) from None
            raise
        yield
    finally:
        fh.close()


# --- the report ---------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What one sync did."""

    source: str
    kind: str
    status: str = "ok"  # ok | failed
    fetched: int = 0
    unchanged: int = 0
    deleted: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # {id, reason}
    requests: int = 0
    built: bool = False
    index_version: str | None = None
    build: dict[str, Any] | None = None
    duration_s: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"source {self.source}: {self.fetched} fetched, {self.unchanged} unchanged, "
            f"{self.deleted} deleted, {len(self.failures)} failed"
            + (f"; index {self.index_version}" if self.built else "; index unchanged")
            + f" in {self.duration_s:.1f} s"
        )


# --- the engine ---------------------------------------------------------------------------


class _Mirror:
    """The sink a connector reports to: keeps the mirror folder and the new document list."""

    def __init__(self, root: Path, previous: dict[str, dict[str, Any]], max_documents: int):
        self.root = root
        self.previous = previous
        self.max_documents = max_documents
        self.docs: dict[str, dict[str, Any]] = {}
        self.failures: list[dict[str, str]] = []
        self.fetched = 0
        self.unchanged_n = 0
        self.kept_after_failure = 0
        self.dropped = 0  # documents over max_documents
        self.changed = False
        self._paths: dict[str, str] = {
            f"{d['collection']}/{d['path']}": i for i, d in previous.items()
        }
        self.acls: dict[str, list[list[str]]] = {}
        self.groups: dict[str, list[str]] | None = None

    # Sink
    def known(self, doc_id: str) -> dict[str, Any] | None:
        return self.previous.get(doc_id)

    def known_ids(self) -> list[str]:
        return list(self.previous)

    def full(self) -> bool:
        return len(self.docs) >= self.max_documents

    def viewers(self, doc_id: str, acl: list[list[str]]) -> None:
        self.acls[doc_id] = acl

    def members(self, groups: dict[str, list[str]]) -> None:
        self.groups = {str(k): [str(m) for m in v] for k, v in groups.items()}

    def unchanged(self, doc_id: str) -> None:
        old = self.previous.get(doc_id)
        if old is None or doc_id in self.docs:
            return
        if not (self.root / old["collection"] / old["path"]).is_file():
            # The mirror lost it (deleted by hand): the connector must fetch it again.
            self.failures.append({"id": doc_id, "reason": "mirror copy missing; fetched next sync"})
            return
        self.docs[doc_id] = old
        self.unchanged_n += 1

    def put(self, doc: Doc, data: bytes) -> None:
        if doc.id in self.docs:
            return
        if self.full():
            self.dropped += 1
            return
        rel = self._claim(doc)
        target = self.root / doc.collection / rel
        old = self.previous.get(doc.id)
        if old and (old["collection"], old["path"]) != (doc.collection, rel):
            self._remove(old)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.is_file() and target.read_bytes() == data):
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            self.changed = True
        self.docs[doc.id] = {
            "version": doc.version,
            "path": rel,
            "collection": doc.collection,
            "url": doc.url,
            "extra": doc.extra,
        }
        if old and "acl" in old:
            self.docs[doc.id]["acl"] = old["acl"]
        self.fetched += 1

    def failed(self, doc_id: str, reason: str, *, gone: bool = False) -> None:
        if len(self.failures) < MAX_FAILURES:
            self.failures.append({"id": doc_id, "reason": reason})
        log.info("source document %s: %s%s", doc_id, reason, " (removed)" if gone else "")
        old = self.previous.get(doc_id)
        if not gone and old is not None and doc_id not in self.docs:
            if (self.root / old["collection"] / old["path"]).is_file():
                self.docs[doc_id] = old  # keep serving the last good copy
                self.kept_after_failure += 1

    # engine
    def _claim(self, doc: Doc) -> str:
        rel = safe_relpath(doc.path)
        key = f"{doc.collection}/{rel}"
        holder = self._paths.get(key)
        if holder is not None and holder != doc.id:
            stem, dot, ext = rel.rpartition(".")
            tag = hashlib.sha1(doc.id.encode()).hexdigest()[:8]
            rel = f"{stem}~{tag}.{ext}" if dot and "/" not in ext else f"{rel}~{tag}"
            key = f"{doc.collection}/{rel}"
        self._paths[key] = doc.id
        return rel

    def _remove(self, old: dict[str, Any]) -> None:
        path = self.root / old["collection"] / old["path"]
        try:
            path.unlink()
            self.changed = True
        except FileNotFoundError:
            pass

    def finish(self) -> int:
        """Delete what was known and not reported now; returns how many went."""
        gone = 0
        taken = {(d["collection"], d["path"]) for d in self.docs.values()}
        for doc_id, old in self.previous.items():
            if doc_id not in self.docs:
                if (old["collection"], old["path"]) not in taken:  # else another doc's now
                    self._remove(old)
                gone += 1
        for doc_id, acl in self.acls.items():
            if doc_id in self.docs:
                self.docs[doc_id] = {**self.docs[doc_id], "acl": acl}
        if self.dropped:
            self.failures.append(
                {
                    "id": "(source)",
                    "reason": f"max_documents ({self.max_documents}) reached: "
                    f"{self.dropped} more documents not taken",
                }
            )
        return gone


def make_connector(
    settings: Settings, name: str, cfg: SourceConfig, workdir: Path
) -> tuple[Connector, Callable[[], int]]:
    """The connector of the source's kind, and a function giving its request count."""
    if cfg.kind == "s3":
        from ingest.connectors.s3 import S3Connector

        c = S3Connector(name, cfg)
    elif cfg.kind == "web":
        from ingest.connectors.web import WebConnector

        c = WebConnector(name, cfg, user_agent=settings.sources.user_agent)
    elif cfg.kind == "git":
        from ingest.connectors.git import GitConnector

        c = GitConnector(name, cfg, workdir)
    elif cfg.kind == "confluence":
        from ingest.connectors.confluence import ConfluenceConnector

        c = ConfluenceConnector(name, cfg, user_agent=settings.sources.user_agent)
    elif cfg.kind == "sharepoint":
        from ingest.connectors.sharepoint import SharePointConnector

        c = SharePointConnector(name, cfg, user_agent=settings.sources.user_agent)
    elif cfg.kind == "gdrive":
        from ingest.connectors.gdrive import DriveConnector

        c = DriveConnector(name, cfg, user_agent=settings.sources.user_agent)
    elif cfg.kind == "notion":
        from ingest.connectors.notion import NotionConnector

        c = NotionConnector(name, cfg, user_agent=settings.sources.user_agent)
    else:  # pragma: no cover - settings validate the kind
        raise ConfigError(f"source {name}: unknown kind {cfg.kind}")
    return c, lambda: getattr(c, "requests", 0)


def _mirror_sources(root: Path, collections: set[str], name: str) -> list[Any]:
    from ingest.sources import Source

    out = []
    for coll in sorted(collections):
        folder = root / coll
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / MARKER
        if not marker.is_file():
            marker.write_text(f"Mirror of lorebot source {name}; managed by `lorebot source`.\n")
        out.append(Source(path=folder, collection=coll))
    return out


def sync_source(
    settings: Settings,
    name: str,
    *,
    embedder: Embedder | None = None,
    pool: TimeoutPool | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    connector: Connector | None = None,
) -> SyncReport:
    """Sync one source and build the index from its mirror when anything changed.

    Raises SourceError (nothing deleted, state untouched) when the source cannot be
    listed, ConfigError for a bad definition, IndexBusyError when a sync of the same
    source or another build holds the lock. A document that cannot be fetched or parsed
    is recorded in the report with its reason and never stops the sync.
    """
    cfg = get_source(settings, name)
    started = time.perf_counter()
    report = SyncReport(source=name, kind=cfg.kind)
    folder = source_dir(settings, name)
    with source_lock(settings, name):
        state = load_state(settings, name)
        root = folder / "docs"
        root.mkdir(parents=True, exist_ok=True)
        previous = state.get("docs") or {}
        cursor = dict(state.get("cursor") or {})
        missing = [
            i for i, d in previous.items() if not (root / d["collection"] / d["path"]).is_file()
        ]
        if missing:
            # Mirror copies gone (deleted by hand, a failed remove): those documents are
            # fetched again, and a changes feed starts over so that it lists them.
            log.info("source %s: %d mirror copies missing; full sync", name, len(missing))
            previous = {i: d for i, d in previous.items() if i not in set(missing)}
            cursor = {}
        if cfg.permission_mode == "asker" and any("acl" not in d for d in previous.values()):
            # Documents synced without their viewers (before asker mode, or by an older
            # lorebot): a changes feed would never report them again, so walk it all.
            log.info("source %s: documents without viewers; full sync", name)
            cursor = {}
        mirror = _Mirror(root, previous, cfg.max_documents)
        count_requests: Callable[[], int] = lambda: 0  # noqa: E731
        if connector is None:
            connector, count_requests = make_connector(settings, name, cfg, folder / "work")
        try:
            cursor = connector.sync(mirror, cursor)
        except SourceError as exc:
            state["last_error"] = exc.message
            state["last_sync"] = _now()
            _save_state(settings, name, state)
            raise
        finally:
            report.requests = count_requests()
        report.deleted = mirror.finish()
        report.fetched, report.unchanged = mirror.fetched, mirror.unchanged_n
        report.failures = list(mirror.failures)
        collections = (
            set(state.get("collections") or [])
            | {d["collection"] for d in mirror.docs.values()}
            | {cfg.collection}
        )
        needs_build = mirror.changed or state.get("needs_build", True)
        state.update(
            cursor=cursor,
            docs=mirror.docs,
            collections=sorted(collections),
            failures=report.failures,
            last_sync=_now(),
            last_error=None,
            needs_build=needs_build,
        )
        _save_state(settings, name, state)
        _save_permissions(settings, name, cfg, state, mirror.groups)
        if needs_build:
            build = _build(settings, name, root, collections, embedder, pool, on_progress)
            report.built = build.new_version
            report.index_version = build.version
            report.build = build.to_dict()
            _merge_build_failures(report, build, root, mirror.docs)
            state["needs_build"] = False
            state["index_version"] = build.version
            _save_state(settings, name, state)
        else:
            report.index_version = state.get("index_version")
    report.duration_s = time.perf_counter() - started
    report.message = report.summary()
    log.info("%s (%d requests)", report.message, report.requests)
    return report


def _save_permissions(
    settings: Settings,
    name: str,
    cfg: SourceConfig,
    state: dict[str, Any],
    groups: dict[str, list[str]] | None,
) -> None:
    """Write the source's permission store (ingest.permissions) after a listing that
    succeeded: every document's viewers by mirror path, and the group members read now
    (the last sync's when the connector read none)."""
    from ingest import permissions

    folder = source_dir(settings, name)
    if cfg.permission_mode != "asker":
        (folder / permissions.PERMISSIONS).unlink(missing_ok=True)
        return
    docs = {
        f"{d['collection']}/{d['path']}": permissions.clean_acl(d.get("acl"))
        for d in (state.get("docs") or {}).values()
    }
    if groups is None:
        groups = state.get("groups") or {}
    state["groups"] = groups
    _save_state(settings, name, state)
    permissions.write_store(folder, docs, groups, time.time())


def _build(
    settings: Settings,
    name: str,
    root: Path,
    collections: set[str],
    embedder: Any,
    pool: Any,
    on_progress: Any,
) -> IngestReport:
    from ingest.build import build_index

    sources = _mirror_sources(root, collections, name)
    report = build_index(
        settings, sources, progress=False, embedder=embedder, pool=pool, on_progress=on_progress
    )
    report.files = [f for f in report.files if not f.path.endswith(MARKER)]
    return report


def _merge_build_failures(
    report: SyncReport, build: IngestReport, root: Path, docs: dict[str, dict[str, Any]]
) -> None:
    """Documents the parser refused, named by their source id, join the fetch failures."""
    by_path = {f"{d['collection']}/{d['path']}": i for i, d in docs.items()}
    for f in build.files:
        if f.status in ("failed", "skipped") and len(report.failures) < MAX_FAILURES:
            doc_id = by_path.get(f"{f.collection}/{f.path}", f.path)
            report.failures.append({"id": doc_id, "reason": f.reason or f.status})


def remove_source(
    settings: Settings, name: str, *, embedder: Any = None, pool: Any = None
) -> SyncReport:
    """Take a source's documents out of the index, then forget the source.

    A source defined in settings is only emptied from the index here; its definition
    stays until it is removed from the settings.
    """
    cfg = get_source(settings, name)
    report = SyncReport(source=name, kind=cfg.kind)
    started = time.perf_counter()
    folder = source_dir(settings, name)
    with source_lock(settings, name):
        state = load_state(settings, name)
        root = folder / "docs"
        collections = set(state.get("collections") or [])
        if root.is_dir() and collections:
            for coll in collections:
                shutil.rmtree(root / coll, ignore_errors=True)
            report.deleted = len(state.get("docs") or {})
            try:
                build = _build(settings, name, root, collections, embedder, pool, None)
            except IngestError as exc:
                failed = getattr(exc, "report", None)
                if failed is None or failed.chunks_total:
                    raise
                raise IngestError(
                    f"removing source {name} would leave the index empty, which cannot be "
                    "served; its documents are still in the serving version",
                    fix="ingest or add another source first, then remove this one",
                ) from None
            report.built, report.index_version = build.new_version, build.version
            report.build = build.to_dict()
    shutil.rmtree(folder, ignore_errors=True)
    _forget(settings, name)
    report.duration_s = time.perf_counter() - started
    report.message = f"source {name} removed: {report.deleted} documents left the index"
    log.info(report.message)
    return report


def due_sources(settings: Settings, now: datetime | None = None) -> list[str]:
    """Sources whose schedule has come round since their last sync (never synced: due)."""
    from celery.schedules import crontab

    now = now or datetime.now().astimezone()
    due = []
    for name, (cfg, _) in sorted(all_sources(settings).items()):
        if not cfg.schedule:
            continue
        minute, hour, dom, month, dow = cfg.schedule.split()
        try:
            cron = crontab(
                minute=minute,
                hour=hour,
                day_of_month=dom,
                month_of_year=month,
                day_of_week=dow,
                nowfun=lambda: now,
            )
        except ValueError as exc:
            log.warning("source %s: bad schedule %r: %s", name, cfg.schedule, exc)
            continue
        state = load_state(settings, name)
        last = state.get("last_sync")
        if last is None or state.get("needs_build"):  # never synced, or its build is owed
            due.append(name)
            continue
        last_at = datetime.fromisoformat(last).astimezone(now.tzinfo)
        if cron.remaining_estimate(last_at).total_seconds() <= 0:
            due.append(name)
    return due


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

"""Answer as the asker: each synced document's viewers, and the row filter a search applies.

A source in ``permissions = "asker"`` mode (Confluence, Google Drive, SharePoint) keeps
``<data_dir>/connectors/<name>/permissions.json``, written by its sync: every mirrored
document (by its mirror path ``<collection>/<path>``, which the index's manifest maps to
the document's row range) with its ACL, the members of the groups those ACLs name, and
when both were read. An ACL is a list of clauses that must all hold; a clause holds when
the asker is one of its principals (``user:<e-mail>``, ``group:<key>``,
``domain:<domain>``, ``anyone``). Confluence uses two clauses (the space's viewers, then
the page's restrictions); Drive and SharePoint one.

:class:`PermissionIndex` compiles those stores against one index version: a code per
row (``DENY`` for a restricted row without a usable ACL, ``OPEN`` for rows of other
sources, else the id of its distinct ACL) and, per principal, the clauses it satisfies.
An asker's mask is then a few numpy operations; the search applies it inside both the
dense and the keyword search, before anything is ranked, so a document the asker may not
read cannot be returned however many candidates are asked for.

Closed by default: no e-mail, an e-mail in no ACL, a source whose permissions were read
longer ago than ``sources.permissions_max_age_s``, a mirrored document with no ACL, or a
store that cannot be read: the restricted rows stay out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from lorebot.files import atomic_write_text

log = logging.getLogger(__name__)

PERMISSIONS = "permissions.json"
ANYONE = "anyone"
#: Row codes of a compiled index: never readable, readable by everyone, then ACL ids.
DENY, OPEN = 0, 1
#: Askers whose masks are kept per compiled index.
MASK_CACHE = 512

Acl = list[list[str]]


def user(email: str) -> str:
    return "user:" + email.strip().lower()


def group(key: str) -> str:
    return "group:" + key.strip().lower()


def domain(name: str) -> str:
    return "domain:" + name.strip().lower()


def principals_of(email: str | None, groups: dict[str, list[str]]) -> set[str]:
    """Everything ``email`` matches in one source: itself, its domain, its groups, anyone."""
    out = {ANYONE}
    if not email or "@" not in email:
        return out
    e = email.strip().lower()
    out |= {user(e), domain(e.rsplit("@", 1)[1])}
    out |= {group(g) for g, members in groups.items() if e in members}
    return out


def allows(acl: Acl, principals: set[str]) -> bool:
    """Whether an ACL lets someone with these principals read (an empty ACL: nobody)."""
    return bool(acl) and all(any(p in principals for p in clause) for clause in acl)


def clean_acl(acl: Any) -> Acl:
    """An ACL as stored: clauses of lower-case principal strings, empty clauses kept
    (they deny), anything malformed denied."""
    if not isinstance(acl, list):
        return []
    out: Acl = []
    for clause in acl:
        if not isinstance(clause, list):
            return []
        out.append(sorted({str(p).strip().lower() for p in clause if isinstance(p, str)}))
    return out


def flatten_groups(direct: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each group's members as e-mails, nested groups (``group:<key>``) expanded."""
    out: dict[str, list[str]] = {}
    for key in direct:
        seen, emails, todo = {key}, set(), list(direct[key])
        while todo:
            m = todo.pop().strip().lower()
            if m.startswith("group:"):
                sub = m[len("group:") :]
                if sub not in seen:
                    seen.add(sub)
                    todo.extend(direct.get(sub, []))
            elif "@" in m:
                emails.add(m.removeprefix("user:"))
        out[key.lower()] = sorted(emails)
    return out


def write_store(
    folder: Path, docs: dict[str, Acl], groups: dict[str, list[str]], synced_at: float
) -> None:
    """Write a source's permission store (docs: mirror path -> ACL)."""
    data = {"synced_at": synced_at, "docs": docs, "groups": flatten_groups(groups)}
    atomic_write_text(folder / PERMISSIONS, json.dumps(data, indent=0, sort_keys=True))


def read_store(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("permission store %s unreadable (%s): its documents answer nobody", path, exc)
        return None
    return data if isinstance(data, dict) else None


class PermissionIndex:
    """The permission stores of the asker-mode sources, compiled against one index version.

    ``files``: the index's documents as (absolute mirror path, (first row, end row)).
    ``sources``: name -> (its mirror root, its store or None, its synced_at is trusted).
    """

    def __init__(
        self,
        n: int,
        files: list[tuple[str, tuple[int, int]]],
        sources: dict[str, tuple[Path, dict[str, Any] | None, bool]],
    ) -> None:
        self.n = n
        codes = np.full(n, OPEN, dtype=np.int32)
        acl_ids: dict[tuple[str, tuple[tuple[str, ...], ...]], int] = {}
        acl_clauses: list[list[int]] = []  # per ACL id - 2: its clause ids
        clause_ids: dict[tuple[str, tuple[str, ...]], int] = {}
        self.by_principal: dict[tuple[str, str], list[int]] = {}  # (source, principal)
        self.groups: dict[str, dict[str, list[str]]] = {}
        self.restricted_rows = 0
        for name, (root, store, fresh) in sources.items():
            prefix = str(root).rstrip("/") + "/"
            docs = (store or {}).get("docs") or {}
            self.groups[name] = {
                str(k): [str(e).lower() for e in v]
                for k, v in ((store or {}).get("groups") or {}).items()
                if isinstance(v, list)
            }
            for path, (start, end) in files:
                if not path.startswith(prefix):
                    continue
                self.restricted_rows += end - start
                acl = clean_acl(docs.get(path[len(prefix) :])) if fresh else []
                if not acl or any(not c for c in acl):
                    codes[start:end] = DENY
                    continue
                key = (name, tuple(tuple(c) for c in acl))
                aid = acl_ids.get(key)
                if aid is None:
                    aid = acl_ids[key] = len(acl_clauses) + 2
                    ids = []
                    for clause in acl:
                        ckey = (name, tuple(clause))
                        cid = clause_ids.get(ckey)
                        if cid is None:
                            cid = clause_ids[ckey] = len(clause_ids)
                            for p in clause:
                                self.by_principal.setdefault((name, p), []).append(cid)
                        ids.append(cid)
                    acl_clauses.append(ids)
                codes[start:end] = aid
        self.codes = codes
        self.n_clauses = len(clause_ids)
        self.n_acls = len(acl_clauses)
        flat = [c for ids in acl_clauses for c in ids]
        self.acl_clause = np.asarray(flat, dtype=np.int64)
        self.acl_start = np.asarray(
            np.cumsum([0] + [len(ids) for ids in acl_clauses[:-1]]), dtype=np.int64
        )
        self.principal_clauses = {
            k: np.asarray(v, dtype=np.int64) for k, v in self.by_principal.items()
        }
        self._masks: OrderedDict[str | None, np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, email: str | None) -> np.ndarray | None:
        """The rows the asker may read (bool, one per row); None when nothing is restricted."""
        if self.restricted_rows == 0:
            return None
        key = email.strip().lower() if email else None
        with self._lock:
            hit = self._masks.get(key)
            if hit is not None:
                self._masks.move_to_end(key)
                return hit
        mask = self._compute(key)
        with self._lock:
            self._masks[key] = mask
            while len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        return mask

    def _compute(self, email: str | None) -> np.ndarray:
        satisfied = np.zeros(self.n_clauses + 1, dtype=bool)
        for name, groups in self.groups.items():
            for p in principals_of(email, groups):
                ids = self.principal_clauses.get((name, p))
                if ids is not None:
                    satisfied[ids] = True
        ok = np.zeros(self.n_acls + 2, dtype=bool)
        ok[OPEN] = True
        if self.n_acls:
            ok[2:] = np.logical_and.reduceat(satisfied[self.acl_clause], self.acl_start)
        return ok[self.codes]


def compile_for(
    n: int, manifest: dict[str, Any], stores: dict[str, tuple[Path, Path]], max_age_s: float
) -> PermissionIndex:
    """A :class:`PermissionIndex` for an index version's manifest and the asker-mode
    sources' (mirror root, store file); an unreadable or stale store denies its documents."""
    files = [
        (str(f["path"]), (int(f["rows"][0]), int(f["rows"][1])))
        for f in (manifest.get("files") or {}).values()
        if f.get("status") == "ok" and f.get("rows")
    ]
    now = time.time()
    sources = {}
    for name, (root, store_path) in stores.items():
        store = read_store(store_path)
        synced = float((store or {}).get("synced_at") or 0)
        fresh = store is not None and now - synced <= max_age_s
        if store is not None and not fresh:
            log.warning(
                "source %s: permissions older than %ds; its documents are hidden", name, max_age_s
            )
        sources[name] = (root, store, fresh)
    return PermissionIndex(n, files, sources)


#: The compiled index when no source answers as the asker.
NOTHING_RESTRICTED = PermissionIndex(0, [], {})


class Permissions:
    """The worker's view of who may read what: one compiled index per index version,
    recompiled when a store file changes (a sync) or ages past the limit."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._key: Any = None
        self._compiled: PermissionIndex | None = None
        self._lock = threading.Lock()

    def _stores(self) -> dict[str, tuple[Path, Path]]:
        from ingest.connectors.sync import all_sources, source_dir

        out = {}
        for name, (cfg, _) in all_sources(self.settings).items():
            if cfg.permission_mode == "asker":
                folder = source_dir(self.settings, name)
                out[name] = ((folder / "docs").resolve(), folder / PERMISSIONS)
        return out

    def for_index(self, reader: Any) -> PermissionIndex:
        stores = self._stores()
        if not stores:
            return NOTHING_RESTRICTED
        stamps = []
        for name, (_root, path) in sorted(stores.items()):
            try:
                stamps.append((name, path.stat().st_mtime_ns))
            except OSError:
                stamps.append((name, None))
        max_age = self.settings.sources.permissions_max_age_s
        # Recompile at least every tenth of the age limit, so a store goes stale on time.
        epoch = int(time.time() // max(1.0, max_age / 10))
        key = (getattr(reader, "version", None), id(reader), tuple(stamps), epoch)
        with self._lock:
            if self._key == key and self._compiled is not None:
                return self._compiled
        compiled = compile_for(reader.n, reader.manifest, stores, max_age)
        with self._lock:
            self._key, self._compiled = key, compiled
        return compiled


class AskerRetriever:
    """An index reader seen by one asker: every search carries the asker's row mask.

    The neighbours of a hit are of the same document, so readable too; they are checked
    against the mask all the same.
    """

    def __init__(self, reader: Any, mask: np.ndarray | None) -> None:
        self._reader = reader
        self._mask = mask

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def search(
        self,
        query: str,
        k: int = 4,
        collections: list[str] | None = None,
        candidates: int = 20,
    ) -> list[Any]:
        return self._reader.search(query, k, collections, candidates, allowed=self._mask)

    def neighbours(self, hit: Any, before: int = 1, after: int = 1) -> list[Any]:
        found = self._reader.neighbours(hit, before, after)
        if self._mask is None:
            return found
        return [h for h in found if h.row is not None and bool(self._mask[h.row])]

    def iter_chunks(self, collections: list[str] | None = None):
        for row, chunk in enumerate_rows(self._reader, collections):
            if self._mask is None or bool(self._mask[row]):
                yield chunk


def enumerate_rows(reader: Any, collections: list[str] | None):
    """(row, chunk) of every chunk in ``collections`` (None = all), in row order."""
    for start, end in reader.allowed_ranges(collections):
        yield from zip(range(start, end), _chunks_between(reader, start, end))


def _chunks_between(reader: Any, start: int, end: int):
    from ingest.store import _to_chunk

    with reader._db_lock:
        rows = reader.db.execute(
            "SELECT * FROM chunks WHERE row >= ? AND row < ? ORDER BY row", (start, end)
        ).fetchall()
    for rec in rows:
        yield _to_chunk(rec)

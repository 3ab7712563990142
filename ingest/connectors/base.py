"""What every connector shares: the document record, the sink it reports to, secrets,
safe mirror paths, collection routing, and retries with backoff for HTTP APIs.

A connector walks its source and tells a :class:`Sink`, document by document, what it
found: ``unchanged`` (same version as the last sync: nothing fetched), ``put`` (new or
changed, with its bytes), ``failed`` (with a reason; ``gone=True`` when the source says
the document no longer exists or may no longer be read, so it leaves the index). The
sync engine (ingest.connectors.sync) turns that into a mirror folder the ordinary
incremental build reads; anything known before and not reported at all is deleted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from pydantic import SecretStr

from lorebot.errors import ConfigError, IngestError
from lorebot.settings import SourceConfig

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: rate limits and server trouble.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: HTTP statuses that mean "this document is gone or no longer shared with us".
GONE_STATUSES = frozenset({401, 403, 404, 410, 451})
#: The longest wait a Retry-After header may impose on one retry.
MAX_RETRY_AFTER_S = 60.0


class SourceError(IngestError):
    """A whole sync cannot go on (listing failed, bad credentials): nothing is deleted."""


@dataclass
class Doc:
    """One remote document as a connector sees it.

    ``id`` is stable across syncs (S3 key, repository path, canonical URL); ``version``
    changes whenever the content does (ETag, blob id, Last-Modified); ``path`` is where
    the mirror stores it, relative and '/'-separated; ``url`` becomes the citation link.
    """

    id: str
    version: str
    path: str
    collection: str
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # connector's own (links, headers)


class Sink(Protocol):
    """What a connector reports to (implemented by the sync engine)."""

    def known(self, doc_id: str) -> dict[str, Any] | None:
        """The document's record from the last sync (version, path, extra), if any."""

    def known_ids(self) -> list[str]:
        """Every document id recorded by the last sync."""

    def unchanged(self, doc_id: str) -> None:
        """Still there with the version recorded last time."""

    def put(self, doc: Doc, data: bytes) -> None:
        """New or changed: store these bytes."""

    def failed(self, doc_id: str, reason: str, *, gone: bool = False) -> None:
        """Could not be fetched. ``gone``: deleted or unshared at the source (it leaves
        the index); otherwise the copy from the last sync, if any, is kept."""

    def full(self) -> bool:
        """Whether ``max_documents`` have been reported (the connector should stop)."""

    def viewers(self, doc_id: str, acl: list[list[str]]) -> None:
        """Who may read the document in the source (``permissions = "asker"``): clauses
        that must all hold, each a list of principals (ingest.permissions). A document
        never given viewers keeps those of the last sync; one with none answers nobody."""

    def members(self, groups: dict[str, list[str]]) -> None:
        """Members of the groups the viewers name (e-mails, or ``group:<key>`` for a nested
        group), read this sync; they replace those of the last sync."""


class Connector(Protocol):
    """A source kind: ``sync`` walks the source, reporting every document to the sink,
    and returns the new cursor (or raises SourceError without having deleted anything)."""

    def sync(self, sink: Sink, cursor: dict[str, Any]) -> dict[str, Any]: ...


def named_groups(sink: Sink, acls: dict[str, list[list[str]]]) -> set[str]:
    """The groups (``group:<key>`` principals) that any document's viewers name: this
    sync's ``acls`` first, else what the last sync recorded for the document."""
    names: set[str] = set()
    for doc_id in set(sink.known_ids()) | set(acls):
        acl = acls.get(doc_id)
        if acl is None:
            acl = (sink.known(doc_id) or {}).get("acl") or []
        names |= {p[6:] for clause in acl for p in clause if p.startswith("group:")}
    return names


def resolve_secret(cfg: SourceConfig, name: str) -> SecretStr | None:
    """The source's secret: the value, else the named environment variable, else the file.

    Read only when a sync runs; an environment variable or file that is named but empty
    or missing is a ConfigError naming it (never its content).
    """
    if cfg.secret is not None:
        return cfg.secret
    if cfg.secret_env:
        value = os.environ.get(cfg.secret_env)
        if not value:
            raise ConfigError(
                f"source {name}: environment variable {cfg.secret_env} is not set",
                fix=f"export {cfg.secret_env} in the worker's environment",
            )
        return SecretStr(value)
    if cfg.secret_file:
        try:
            text = Path(cfg.secret_file).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"source {name}: cannot read the secret file {cfg.secret_file}: {exc.strerror}",
                fix="check the path and its permissions",
            ) from None
        lines = text.splitlines()
        # A JSON key (a Google service account) is the whole file; a token its first line.
        value = (
            text.strip() if text.lstrip().startswith("{") else (lines[0].strip() if lines else "")
        )
        if not value:
            raise ConfigError(
                f"source {name}: the secret file {cfg.secret_file} is empty",
                fix="write the token on its first line",
            )
        return SecretStr(value)
    return None


def matches(path: str, patterns: list[str]) -> bool:
    """A glob match as ingest.sources does it (a pattern without '/' matches the name)."""
    name = path.rsplit("/", 1)[-1]
    for pat in patterns:
        if fnmatch.fnmatchcase(path, pat) or ("/" not in pat and fnmatch.fnmatchcase(name, pat)):
            return True
        if pat.endswith("/**") and (path + "/").startswith(pat[:-2]):
            return True
    return False


def wanted(cfg: SourceConfig, path: str) -> bool:
    """Whether the include/exclude globs of the source let this path in."""
    if cfg.include and not matches(path, cfg.include):
        return False
    return not (cfg.exclude and matches(path, cfg.exclude))


def collection_for(cfg: SourceConfig, key: str) -> str:
    """The collection a document goes into: the longest matching prefix, else the default."""
    best = None
    for prefix, coll in cfg.collections.items():
        if key.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, coll)
    return best[1] if best else cfg.collection


_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+,=@~-]")
MAX_PART = 100
MAX_DEPTH = 16


def safe_relpath(raw: str, *, default_name: str = "index") -> str:
    """A mirror path for a remote name: no '..', no hidden parts, no odd characters.

    Discovery passes over hidden files, so a leading dot becomes '_'; every part is cut
    to 100 characters (a hash keeps long names apart) and the path to 16 levels.
    """
    parts = []
    for part in PurePosixPath(raw.replace("\\", "/")).parts:
        if part in ("/", "", ".", ".."):
            continue
        clean = _UNSAFE.sub("_", part).strip(" ")
        if clean.startswith((".", "~$")):
            clean = "_" + clean.lstrip(".~$")
        if len(clean) > MAX_PART:
            digest = hashlib.sha1(part.encode()).hexdigest()[:8]
            stem, dot, ext = clean.rpartition(".")
            ext = ext if dot and len(ext) <= 8 else ""
            clean = clean[: MAX_PART - 18] + "~" + digest + ("." + ext if ext else "")
        parts.append(clean or "_")
    if not parts:
        parts = [default_name]
    if len(parts) > MAX_DEPTH:
        parts = parts[: MAX_DEPTH - 1] + ["_".join(parts[MAX_DEPTH - 1 :])[:MAX_PART]]
    return "/".join(parts)


class TooLarge(Exception):
    """A document over the size limit (the reason is the message)."""


def size_reason(size: int, limit_mb: float) -> str:
    return f"too large: {size / 2**20:.1f} MB > {limit_mb:g} MB limit"


def backoff_wait(attempt: int, base_s: float, retry_after: str | None) -> float:
    """Seconds before retry ``attempt`` (0-based): Retry-After when given (capped), else
    ``base_s * 2**attempt`` with jitter."""
    if retry_after:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: fall back to our own backoff
    return min(MAX_RETRY_AFTER_S, base_s * (2**attempt)) * (0.75 + random.random() / 2)


def with_retries(
    call: Callable[[], Any],
    *,
    retries: int,
    base_s: float,
    status_of: Callable[[Any], int],
    retry_after_of: Callable[[Any], str | None],
    transient: tuple[type[BaseException], ...],
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """``call()`` until its result's status is not a retryable one or retries run out.

    Exceptions in ``transient`` (timeouts, connection resets) are retried too; after the
    last attempt the last response is returned, or the last exception raised.
    """
    for attempt in range(retries + 1):
        try:
            result = call()
        except transient as exc:
            if attempt == retries:
                raise
            wait = backoff_wait(attempt, base_s, None)
            log.info(
                "%s: %s; retry %d/%d in %.1fs", what, type(exc).__name__, attempt + 1, retries, wait
            )
            sleep(wait)
            continue
        status = status_of(result)
        if status not in RETRY_STATUSES or attempt == retries:
            return result
        wait = backoff_wait(attempt, base_s, retry_after_of(result))
        log.info("%s: HTTP %d; retry %d/%d in %.1fs", what, status, attempt + 1, retries, wait)
        sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover

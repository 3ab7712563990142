"""Many workers, one truth: publish and pull versioned directories through a shared location.

The index (``settings.index_dir``) and the adapter registry (``settings.adapters_dir``)
have the same shape, locally and in the shared location::

    versions/<version>/...     immutable once complete
    CURRENT                    the serving version's name (absent locally = none)

The shared location is any fsspec URL: a path or ``file://`` URL (an NFS or other shared
mount) or ``s3://bucket/prefix`` on any S3-compatible store (through s3fs). Under it the
index lives in ``index/`` and the adapters in ``adapters/``.

Publishing uploads the version's files, then ``versions/<version>/.lorebot-sync.json``
(the file list with sizes and SHA-256), then ``CURRENT``. Object stores have no atomic
directory rename, so that manifest is the "complete" mark: a version without it is an
upload in progress (or an interrupted one) and is never pulled. An empty remote
``CURRENT`` means "explicitly none" (an adapter rollback to the base model); a missing one
means nothing was ever published.

Pulling compares the remote ``CURRENT`` with the local one; when they differ it downloads
a missing version into a temporary directory beside ``versions/``, checks every file
against the manifest, renames it into place and only then flips the local ``CURRENT``
(tmp + ``os.replace``), so a reader on the worker sees the old version or the new one,
never half of one. Processes sharing one data directory (Celery's prefork children)
serialise their pulls with a lock file.

This module is kernel: it imports nothing from the other lorebot packages.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorebot.errors import ConfigError, TransientError
from lorebot.files import fsync_dir as _fsync_dir
from lorebot.files import fsync_tree
from lorebot.files import sha256_file as _sha256
from lorebot.settings import Settings, mask_url
from lorebot.versioned import POINTER, read_pointer, write_pointer

log = logging.getLogger(__name__)

VERSIONS = "versions"
MANIFEST = ".lorebot-sync.json"
LOCK = ".sync.lock"
TMP_DIR = ".sync-tmp"  # beside versions/, so no listing of versions/ ever sees a partial one
KINDS = ("index", "adapters")
# Redis hash: "<host>:<pid>" -> JSON of the versions that worker process serves.

# Version names become path components locally and keys remotely: nothing that could
# climb out of versions/ or hide as a dotfile.
_VERSION_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SyncError(TransientError):
    """The shared location could not be read or written.

    Transient: a worker keeps serving what it has and tries again on the next check.
    """


@dataclass
class PullResult:
    """What one pull did."""

    kind: str
    local: str | None  # local CURRENT after the pull
    remote: str | None  # remote CURRENT as read ("" = explicitly none, None = never published)
    changed: bool = False
    downloaded: bool = False
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class PublishResult:
    kind: str
    version: str | None
    uploaded: bool = False
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pruned: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the location
class Location:
    """One versioned directory in the shared location (fsspec filesystem + root path)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        from fsspec.core import url_to_fs

        self.url = url.rstrip("/")
        try:
            self.fs, root = url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"cannot use sync location {mask_url(url)}: {exc}",
                fix="set LOREBOT_SYNC__URL to a path, file:// or s3:// URL (s3 needs s3fs)",
            ) from None
        self.root = root.rstrip("/")
        self.local = _is_local(self.fs)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def invalidate(self) -> None:
        """Forget cached listings: another machine may have published since."""
        try:
            self.fs.invalidate_cache()
        except Exception:  # noqa: BLE001, S110 - filesystems without a cache
            pass

    def read_text(self, *parts: str) -> str | None:
        try:
            return self.fs.cat_file(self.path(*parts)).decode("utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, text: str, *parts: str) -> None:
        """Replace a small file so a reader sees the old content or the new one."""
        target = self.path(*parts)
        data = text.encode("utf-8")
        if self.local:
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(
                parent, f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            )
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:  # one PUT is atomic on S3-compatible stores
            self.fs.pipe_file(target, data)

    def complete_versions(self) -> list[str]:
        """Published versions whose manifest exists, oldest first (names sort by time)."""
        try:
            entries = self.fs.ls(self.path(VERSIONS), detail=False)
        except FileNotFoundError:
            return []
        names = sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries})
        return [
            n
            for n in names
            if _VERSION_OK.match(n) and self.fs.exists(self.path(VERSIONS, n, MANIFEST))
        ]


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def storage_options(settings: Settings) -> dict[str, Any]:
    """fsspec options for the configured location (credentials only for s3://)."""
    s = settings.sync
    if not (s.url or "").startswith(("s3://", "s3a://")):
        return {}
    opts: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if s.endpoint_url:
        client["endpoint_url"] = s.endpoint_url
    if s.region:
        client["region_name"] = s.region
    if client:
        opts["client_kwargs"] = client
    if s.access_key_id is not None:
        opts["key"] = s.access_key_id.get_secret_value()
    if s.secret_access_key is not None:
        opts["secret"] = s.secret_access_key.get_secret_value()
    if s.access_key_id is None and s.secret_access_key is None and s.anonymous:
        opts["anon"] = True
    return opts


def location(settings: Settings, kind: str) -> Location:
    """The shared location of one kind ("index" or "adapters")."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if not settings.sync.url:
        raise ConfigError(
            "no sync location is configured",
            fix="set LOREBOT_SYNC__URL (a path, file:// or s3:// URL)",
        )
    return Location(settings.sync.url.rstrip("/") + "/" + kind, storage_options(settings))


def local_dir(settings: Settings, kind: str) -> Path:
    return settings.index_dir if kind == "index" else settings.adapters_dir


# --------------------------------------------------------------------------- local helpers
local_current = read_pointer
#: Flip (or remove, for "none") the local pointer atomically.
_set_local_current = write_pointer


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One pull at a time per data directory (prefork children share it)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _version_files(vdir: Path) -> list[dict[str, Any]]:
    files = []
    for p in sorted(vdir.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files.append(
                {
                    "path": p.relative_to(vdir).as_posix(),
                    "size": p.stat().st_size,
                    "sha256": _sha256(p),
                }
            )
    return files


def _check_version(version: str) -> str:
    if not _VERSION_OK.match(version):
        raise SyncError(
            f"refusing version name {version!r}",
            fix="version names are letters, digits, '.', '_' and '-'",
        )
    return version


# --------------------------------------------------------------------------- publish
def publish_dir(
    local_root: Path, loc: Location, *, kind: str = "dir", keep: int | None = None
) -> PublishResult:
    """Upload the local CURRENT version (if the remote lacks it), then the remote CURRENT.

    A local directory without CURRENT publishes an empty CURRENT ("none": for adapters,
    the base model after a rollback). `keep` prunes older remote versions, never the
    current one.
    """
    started = time.perf_counter()
    version = local_current(local_root)
    result = PublishResult(kind=kind, version=version)
    try:
        loc.invalidate()
        if version is not None:
            _check_version(version)
            vdir = local_root / VERSIONS / version
            if not vdir.is_dir():
                raise SyncError(
                    f"{kind} version {version} named by {local_root / POINTER} is not on disk",
                    fix=f"repair {local_root / POINTER} or rebuild",
                )
            if not loc.fs.exists(loc.path(VERSIONS, version, MANIFEST)):
                files = _version_files(vdir)
                for f in files:
                    target = loc.path(VERSIONS, version, f["path"])
                    if loc.local:
                        loc.fs.makedirs(os.path.dirname(target), exist_ok=True)
                    loc.fs.put_file(str(vdir / f["path"]), target)
                    result.files += 1
                    result.bytes += f["size"]
                manifest = {"version": version, "files": files, "published": time.time()}
                loc.write_text(json.dumps(manifest, indent=1), VERSIONS, version, MANIFEST)
                result.uploaded = True
        loc.write_text((version or "") + "\n", POINTER)
        if keep is not None:
            result.pruned = _prune_remote(loc, keep, version)
    except (OSError, ConnectionError) as exc:
        raise SyncError(
            f"cannot publish {kind} to {mask_url(loc.url)}: {exc}",
            fix="check LOREBOT_SYNC__URL, its credentials and that it is writable",
        ) from None
    except Exception as exc:  # botocore/aiohttp errors have no common base we can name
        if isinstance(exc, SyncError):
            raise
        raise SyncError(
            f"cannot publish {kind} to {mask_url(loc.url)}: {type(exc).__name__}: {exc}",
            fix="check LOREBOT_SYNC__URL, its credentials and that it is writable",
        ) from None
    result.seconds = time.perf_counter() - started
    log.info(
        "sync publish kind=%s version=%s uploaded=%s files=%d bytes=%d seconds=%.2f",
        kind,
        version,
        result.uploaded,
        result.files,
        result.bytes,
        result.seconds,
    )
    return result


def _prune_remote(loc: Location, keep: int, current: str | None) -> list[str]:
    versions = loc.complete_versions()
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in doomed:
        # The manifest goes first, so a half-deleted version is never taken for complete.
        loc.fs.rm_file(loc.path(VERSIONS, v, MANIFEST))
        loc.fs.rm(loc.path(VERSIONS, v), recursive=True)
        log.info("sync pruned remote version %s of %s", v, mask_url(loc.url))
    return doomed


# --------------------------------------------------------------------------- pull
def pull_dir(
    local_root: Path, loc: Location, *, kind: str = "dir", keep: int | None = None
) -> PullResult:
    """Make the local CURRENT match the remote one, downloading the version if needed."""
    started = time.perf_counter()
    try:
        loc.invalidate()
        remote = loc.read_text(POINTER)
        remote_version = remote.strip() if remote is not None else None
        result = PullResult(kind=kind, local=local_current(local_root), remote=remote_version)
        if remote_version is None or (remote_version or None) == result.local:
            return result
        with _locked(local_root):
            result.local = local_current(local_root)  # another process may have pulled it
            wanted = remote_version or None
            if wanted == result.local:
                return result
            if wanted is not None:
                _check_version(wanted)
                final = local_root / VERSIONS / wanted
                if not final.is_dir():
                    result.files, result.bytes = _download(loc, wanted, local_root)
                    result.downloaded = True
            _set_local_current(local_root, wanted)
            result.local, result.changed = wanted, True
            if keep is not None:
                _prune_local(local_root, keep, wanted)
    except SyncError:
        raise
    except Exception as exc:  # noqa: BLE001 - s3fs/botocore errors share no base class
        raise SyncError(
            f"cannot pull {kind} from {mask_url(loc.url)}: {type(exc).__name__}: {exc}",
            fix="check LOREBOT_SYNC__URL and that this machine can read it",
        ) from None
    result.seconds = time.perf_counter() - started
    log.info(
        "sync pull kind=%s version=%s downloaded=%s files=%d bytes=%d seconds=%.2f",
        kind,
        result.local,
        result.downloaded,
        result.files,
        result.bytes,
        result.seconds,
    )
    return result


def _download(loc: Location, version: str, local_root: Path) -> tuple[int, int]:
    raw = loc.read_text(VERSIONS, version, MANIFEST)
    if raw is None:
        raise SyncError(
            f"remote CURRENT names {version}, which is not completely published yet",
            fix="wait for the publisher to finish, or publish again",
        )
    manifest = json.loads(raw)
    versions = local_root / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    tmp_root = local_root / TMP_DIR
    shutil.rmtree(tmp_root, ignore_errors=True)  # a killed pull's litter (we hold the lock)
    tmp = tmp_root / f"{version}-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir(parents=True)
    total = 0
    try:
        for f in manifest["files"]:
            rel = Path(f["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise SyncError(
                    f"manifest of {version} names an unsafe path {f['path']!r}", fix="republish it"
                )
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            loc.fs.get_file(loc.path(VERSIONS, version, f["path"]), str(dest))
            if dest.stat().st_size != f["size"] or _sha256(dest) != f["sha256"]:
                raise SyncError(
                    f"{f['path']} of {version} does not match its manifest",
                    fix="republish the version; the upload may have been altered",
                )
            total += f["size"]
        fsync_tree(tmp)
        os.rename(tmp, versions / version)
        _fsync_dir(versions)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(manifest["files"]), total


def _prune_local(local_root: Path, keep: int, current: str | None) -> None:
    root = local_root / VERSIONS
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for v in names[: max(0, len(names) - keep)]:
        if v != current:
            shutil.rmtree(root / v, ignore_errors=True)
            log.info("sync deleted old local version %s of %s", v, local_root)


# --------------------------------------------------------------------------- settings-level API
def enabled(settings: Settings) -> bool:
    return bool(settings.sync.url)


def _keep(settings: Settings, kind: str) -> int | None:
    # Adapters are small and every old one is a rollback target: never pruned here.
    return settings.index.keep_versions if kind == "index" else None


def publish(settings: Settings, kind: str) -> PublishResult | None:
    """Publish the local CURRENT of one kind; None when no sync location is configured."""
    if not enabled(settings):
        return None
    return publish_dir(
        local_dir(settings, kind), location(settings, kind), kind=kind, keep=_keep(settings, kind)
    )


def publish_index(settings: Settings) -> PublishResult | None:
    """Call after a build flipped the local index CURRENT."""
    return publish(settings, "index")


def publish_adapters(settings: Settings) -> PublishResult | None:
    """Call after a promotion or rollback changed (or removed) the adapters CURRENT."""
    return publish(settings, "adapters")


def pull(settings: Settings, kind: str) -> PullResult | None:
    if not enabled(settings):
        return None
    return pull_dir(
        local_dir(settings, kind), location(settings, kind), kind=kind, keep=_keep(settings, kind)
    )


class Puller:
    """Rate-limited pulls for a long-lived worker process.

    ``maybe_pull()`` runs before each task: at most every ``check_interval_s`` it reads
    the remote CURRENTs (one small GET each) and pulls what moved. A failed check is
    logged and retried at the next interval; the worker keeps serving what it has.
    """

    def __init__(self, settings: Settings, kinds: tuple[str, ...] = KINDS) -> None:
        self.settings = settings
        self.kinds = kinds
        self.interval = settings.sync.check_interval_s
        self._last = float("-inf")
        self._locations: dict[str, Location] = {}
        self._lock = threading.Lock()
        self.last_results: dict[str, PullResult] = {}

    def _location(self, kind: str) -> Location:
        # Created in the process that uses it: async clients (s3fs) must not cross a fork.
        if kind not in self._locations:
            self._locations[kind] = location(self.settings, kind)
        return self._locations[kind]

    def maybe_pull(self, force: bool = False) -> dict[str, PullResult]:
        if not enabled(self.settings):
            return {}
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.interval:
                return {}
            self._last = now
            out: dict[str, PullResult] = {}
            for kind in self.kinds:
                try:
                    out[kind] = pull_dir(
                        local_dir(self.settings, kind),
                        self._location(kind),
                        kind=kind,
                        keep=_keep(self.settings, kind),
                    )
                except (SyncError, ConfigError) as exc:
                    log.warning(
                        "sync check kind=%s failed, serving the local version: %s",
                        kind,
                        exc.one_line(),
                    )
            self.last_results.update(out)
            return out


def status(settings: Settings) -> dict[str, dict[str, str | None]]:
    """Local and remote CURRENT of each kind (for `lorebot sync status` and operators)."""
    out: dict[str, dict[str, str | None]] = {}
    for kind in KINDS:
        entry: dict[str, str | None] = {"local": local_current(local_dir(settings, kind))}
        if enabled(settings):
            try:
                loc = location(settings, kind)
                loc.invalidate()
                remote = loc.read_text(POINTER)
                entry["remote"] = None if remote is None else (remote.strip() or "none")
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                entry["remote_error"] = f"{type(exc).__name__}: {exc}"
        out[kind] = entry
    return out


def serving_workers(settings: Settings) -> dict[str, dict[str, Any]]:
    """What every worker process announced it serves: "<host>:<pid>" -> {index, adapter, ...}.

    Read from the contracts.SERVING hash in Redis (the answer workers write it); raises
    ``redis.RedisError`` when Redis cannot be read.
    """
    import redis

    from lorebot import contracts

    raw = redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2).hgetall(
        contracts.SERVING
    )
    return {k.decode(): json.loads(v) for k, v in raw.items()}

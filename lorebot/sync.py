"""Many workers, one truth: publish and pull versioned directories through a shared location.

The index (``settings.index_dir``) and the adapter registry (``settings.adapters_dir``)
have the same shape, locally and in the shared location::

    versions/<version>/...     immutable once complete
    CURRENT                    the serving version's name (absent locally = none)

The shared location is any fsspec URL: a path or ``file://`` URL (an NFS or other shared
mount) or ``s3://bucket/prefix`` on any S3-compatible store (through s3fs). Under it the
index lives in ``index/`` and the adapters in ``adapters/``.

Publishing uploads the version's files, then ``versions/<version>/.lorebot-sync.json``
(the file list with sizes and SHA-256, signed with the publisher's Ed25519 key), then
``CURRENT``. Object stores have no atomic
directory rename, so that manifest is the "complete" mark: a version without it is an
upload in progress (or an interrupted one) and is never pulled. An empty remote
``CURRENT`` means "explicitly none" (an adapter rollback to the base model); a missing one
means nothing was ever published.

Pulling compares the remote ``CURRENT`` with the local one; when they differ it checks the
manifest's signature against the worker's public key (``sync.verify_key``) before it reads
anything else, so whoever can write the shared location but does not hold the private key
(``sync.signing_key``, publishing roles only) cannot choose what workers serve; an unsigned
or wrongly signed version is refused and the worker keeps the one it serves. It then
downloads a missing version into a temporary directory beside ``versions/``, checks every file
against the manifest, renames it into place and only then flips the local ``CURRENT``
(tmp + ``os.replace``), so a reader on the worker sees the old version or the new one,
never half of one. Processes sharing one data directory (Celery's prefork children)
serialise their pulls with a lock file.

This module is kernel: it imports nothing from the other lorebot packages.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
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
SIGNATURE_ALG = "ed25519"

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
        self.write_bytes(text.encode("utf-8"), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Replace a file so a reader sees the old content or the new one."""
        target = self.path(*parts)
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


# --------------------------------------------------------------------------- signing
class SignatureError(SyncError):
    """A manifest is unsigned or not signed by the trusted key: the version is refused."""


def key_id(public_key: Any) -> str:
    """A short fingerprint of an Ed25519 public key (for messages and manifests)."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (private file mode 0600, never overwritten); its key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never replace a key that signed what workers serve; 0600 from the start.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())


def load_signing_key(path: Path) -> Any:
    """The Ed25519 private key in a PEM file (ConfigError naming the setting if unusable)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        if os.stat(path).st_mode & 0o077:
            log.warning("sync signing key %s is readable by others: chmod 600 it", path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot read the sync signing key {path}: {type(exc).__name__}",
            fix="point LOREBOT_SYNC__SIGNING_KEY at a key made by `lorebot sync keygen`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"the sync signing key {path} is not an Ed25519 key",
            fix="create one with `lorebot sync keygen`",
        )
    return key


def load_verify_key(path: Path) -> Any:
    """The Ed25519 public key in a PEM file (ConfigError naming the setting if unusable)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot read the sync verify key {path}: {type(exc).__name__}",
            fix="point LOREBOT_SYNC__VERIFY_KEY at the .pub file `lorebot sync keygen` wrote",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"the sync verify key {path} is not an Ed25519 public key",
            fix="use the .pub file `lorebot sync keygen` wrote",
        )
    return key


def sign_manifest(manifest: dict[str, Any], key: Any) -> str:
    """The manifest file's text: the exact signed bytes, their signature and the key id."""
    body = json.dumps(manifest, indent=1, sort_keys=True)
    return json.dumps(
        {
            "signed": body,
            "alg": SIGNATURE_ALG,
            "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(key.sign(body.encode("utf-8"))).decode("ascii"),
        },
        indent=1,
    )


def verify_manifest(
    raw: str, *, kind: str, version: str, public_key: Any, allow_unsigned: bool = False
) -> dict[str, Any]:
    """The manifest of ``kind``/``version`` once its signature checks out; else SignatureError.

    The signed body names its kind and version, so a signed manifest copied to another
    version (or from the index to the adapters) is refused too.
    """
    from cryptography.exceptions import InvalidSignature

    try:
        doc = json.loads(raw)
    except ValueError:
        raise SignatureError(
            f"the manifest of {kind} {version} is not JSON", fix="republish it"
        ) from None
    if not isinstance(doc, dict):
        raise SignatureError(f"the manifest of {kind} {version} is malformed", fix="republish it")
    if "signed" not in doc:
        if public_key is None and allow_unsigned:
            return doc
        raise SignatureError(
            f"refusing {kind} version {version}: its manifest is not signed",
            fix="publish it from a role holding LOREBOT_SYNC__SIGNING_KEY",
        )
    if public_key is None:
        if allow_unsigned:
            body = json.loads(doc["signed"])
            return body
        raise SignatureError(  # pragma: no cover - settings refuse this combination first
            f"cannot check {kind} version {version}: no verify key",
            fix="set LOREBOT_SYNC__VERIFY_KEY",
        )
    try:
        signature = base64.b64decode(str(doc.get("signature", "")), validate=True)
        if doc.get("alg") != SIGNATURE_ALG:
            raise InvalidSignature
        public_key.verify(signature, str(doc["signed"]).encode("utf-8"))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"refusing {kind} version {version}: its manifest is not signed by the trusted key "
            f"{key_id(public_key)} (it names {str(doc.get('key_id'))[:16]!r})",
            fix="publish it again from a role holding the matching LOREBOT_SYNC__SIGNING_KEY",
        ) from None
    body = json.loads(doc["signed"])
    if body.get("version") != version or body.get("kind") not in (None, kind):
        raise SignatureError(
            f"refusing {kind} version {version}: its signed manifest is for "
            f"{body.get('kind')} {body.get('version')}",
            fix="publish the version again",
        )
    return body


# --------------------------------------------------------------------------- publish
def publish_dir(
    local_root: Path,
    loc: Location,
    *,
    kind: str = "dir",
    keep: int | None = None,
    signing_key: Any = None,
) -> PublishResult:
    """Upload the local CURRENT version (if the remote lacks it), then the remote CURRENT.

    A local directory without CURRENT publishes an empty CURRENT ("none": for adapters,
    the base model after a rollback). `keep` prunes older remote versions, never the
    current one. With `signing_key` (Ed25519) the manifest is signed; without, it is
    written unsigned (only :func:`publish` with ``sync.allow_unsigned`` does that).
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
                manifest = {
                    "kind": kind,
                    "version": version,
                    "files": files,
                    "published": time.time(),
                }
                text = (
                    sign_manifest(manifest, signing_key)
                    if signing_key is not None
                    else json.dumps(manifest, indent=1)
                )
                loc.write_text(text, VERSIONS, version, MANIFEST)
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
    local_root: Path,
    loc: Location,
    *,
    kind: str = "dir",
    keep: int | None = None,
    verify_key: Any = None,
    allow_unsigned: bool = False,
) -> PullResult:
    """Make the local CURRENT match the remote one, downloading the version if needed.

    The version's manifest must be signed by `verify_key` (an Ed25519 public key) unless
    `allow_unsigned` is true and no key is given; a refused version raises SignatureError
    and leaves the local CURRENT (what this worker serves) as it was.
    """
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
                    result.files, result.bytes = _download(
                        loc,
                        wanted,
                        local_root,
                        kind=kind,
                        verify_key=verify_key,
                        allow_unsigned=allow_unsigned,
                    )
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


def _download(
    loc: Location,
    version: str,
    local_root: Path,
    *,
    kind: str,
    verify_key: Any,
    allow_unsigned: bool,
) -> tuple[int, int]:
    raw = loc.read_text(VERSIONS, version, MANIFEST)
    if raw is None:
        raise SyncError(
            f"remote CURRENT names {version}, which is not completely published yet",
            fix="wait for the publisher to finish, or publish again",
        )
    # Checked before any file is fetched: an unsigned version never touches the disk.
    manifest = verify_manifest(
        raw, kind=kind, version=version, public_key=verify_key, allow_unsigned=allow_unsigned
    )
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


@dataclass(frozen=True)
class Trust:
    """The keys one process uses: a signing key on publishing roles, a verify key everywhere."""

    signing_key: Any = None
    verify_key: Any = None
    allow_unsigned: bool = False


def trust(settings: Settings) -> Trust:
    """The configured keys; ConfigError (one line) when sync is on without any key.

    Workers call it at start (:func:`check_config`), so a fleet that would accept any
    version written to the shared location refuses to start instead.
    """
    s = settings.sync
    signing = load_signing_key(s.signing_key) if s.signing_key else None
    if s.verify_key:
        verify = load_verify_key(s.verify_key)
    else:
        verify = signing.public_key() if signing is not None else None
    if verify is None and not s.allow_unsigned:
        raise ConfigError(
            "sync is configured without keys: anyone who can write "
            f"{mask_url(s.url or '')} could choose what workers serve",
            fix="set LOREBOT_SYNC__VERIFY_KEY (workers) and LOREBOT_SYNC__SIGNING_KEY "
            "(publishers), made with `lorebot sync keygen`; or LOREBOT_SYNC__ALLOW_UNSIGNED=true",
        )
    return Trust(signing, verify, s.allow_unsigned)


def check_config(settings: Settings) -> None:
    """Raise ConfigError when sync is configured but its keys are missing or unreadable."""
    if enabled(settings):
        trust(settings)


def _keep(settings: Settings, kind: str) -> int | None:
    # Adapters are small and every old one is a rollback target: never pruned here.
    return settings.index.keep_versions if kind == "index" else None


def publish(settings: Settings, kind: str) -> PublishResult | None:
    """Publish the local CURRENT of one kind; None when no sync location is configured."""
    if not enabled(settings):
        return None
    keys = trust(settings)
    if keys.signing_key is None and not keys.allow_unsigned:
        raise ConfigError(
            "this process cannot publish: no sync signing key",
            fix="publish from a role with LOREBOT_SYNC__SIGNING_KEY set (`lorebot sync keygen`)",
        )
    return publish_dir(
        local_dir(settings, kind),
        location(settings, kind),
        kind=kind,
        keep=_keep(settings, kind),
        signing_key=keys.signing_key,
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
    keys = trust(settings)
    return pull_dir(
        local_dir(settings, kind),
        location(settings, kind),
        kind=kind,
        keep=_keep(settings, kind),
        verify_key=keys.verify_key,
        allow_unsigned=keys.allow_unsigned,
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
        self._trust: Trust | None = None

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
                    if self._trust is None:
                        self._trust = trust(self.settings)
                    out[kind] = pull_dir(
                        local_dir(self.settings, kind),
                        self._location(kind),
                        kind=kind,
                        keep=_keep(self.settings, kind),
                        verify_key=self._trust.verify_key,
                        allow_unsigned=self._trust.allow_unsigned,
                    )
                except SignatureError as exc:
                    log.error(
                        "sync refused kind=%s, serving the local version: %s",
                        kind,
                        exc.one_line(),
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
    """What every live worker process serves: "<host>:<pid>" -> {index, adapter, at, ...}.

    Entries without a heartbeat for contracts.SERVING_TTL_S are left out.

    Read from the contracts.SERVING hash in Redis (the answer workers write it); raises
    ``redis.RedisError`` when Redis cannot be read.
    """
    import redis

    from lorebot import contracts

    raw = redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2).hgetall(
        contracts.SERVING
    )
    now = time.time()
    out = {}
    for k, v in raw.items():
        entry = json.loads(v)
        # A process gone without withdrawing its entry (killed, machine lost) stops beating.
        if now - float(entry.get("at") or 0) <= contracts.SERVING_TTL_S:
            out[k.decode()] = entry
    return out

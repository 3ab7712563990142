"""Who may use the console: the local admin password, the sessions' key, sign-in throttling.

Passwords are never stored: settings hold an argon2id hash (``console.password_hash``,
made by :func:`hash_password`, i.e. `lorebot console hash-password`). Sessions are signed
cookies (Starlette's SessionMiddleware, itsdangerous); the key comes from
``console.secret_key`` or is generated once into ``<data_dir>/console/secret.key`` (0600)
so that every console process on the host, and restarts, accept the same sessions.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from lorebot.errors import ConfigError
from lorebot.settings import Settings

log = logging.getLogger(__name__)

#: Longest password or user name read from a form (argon2 hashes anything, slowly).
MAX_PASSWORD_CHARS = 256


def console_dir(settings: Settings) -> Path:
    return settings.data_dir / "console"


def hash_password(password: str) -> str:
    """An argon2id hash for ``console.password_hash`` (library defaults: RFC 9106 low-memory)."""
    from argon2 import PasswordHasher

    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"a password must have 1 to {MAX_PASSWORD_CHARS} characters")
    return PasswordHasher().hash(password)


class PasswordCheck:
    """Checks the local admin's name and password against the configured hash."""

    def __init__(self, user: str, password_hash: str | None) -> None:
        self.user = user
        self.password_hash = password_hash

    @property
    def enabled(self) -> bool:
        return bool(self.password_hash)

    def verify(self, user: str, password: str) -> bool:
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        if not self.password_hash or not password or len(password) > MAX_PASSWORD_CHARS:
            return False
        try:
            # The hash is checked whatever the name, so a wrong name costs the same time.
            ok = PasswordHasher().verify(self.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return bool(ok) and hmac.compare_digest(user.encode(), self.user.encode())


def secret_key(settings: Settings) -> str:
    """The key that signs session cookies: from settings, else the data dir's key file."""
    if settings.console.secret_key is not None:
        return settings.console.secret_key.get_secret_value()
    path = console_dir(settings) / "secret.key"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another console process may have created it a moment ago and be writing it.
            for _ in range(20):
                key = path.read_text(encoding="ascii").strip()
                if len(key) >= 32:
                    return key
                time.sleep(0.05)
            raise ConfigError(
                f"the console key file {path} is damaged",
                fix=f"delete {path} (every session ends) or set console.secret_key",
            ) from None
        key = secrets.token_urlsafe(48)
        try:
            os.write(fd, key.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("console: generated the session key %s", path)
        return key
    except OSError as exc:
        raise ConfigError(
            f"cannot read or create the console key {path}: {exc.strerror}",
            fix="make LOREBOT_DATA_DIR writable or set LOREBOT_CONSOLE__SECRET_KEY",
        ) from None


class SignInThrottle:
    """Refuses sign-in attempts after too many failures: per client, and overall.

    ``per_client`` failures from one address within ``window_s`` lock that address out
    until the oldest ages out; ``overall`` failures from everyone lock every address (a
    password spray from many addresses). Memory is bounded: at most ``max_clients``
    addresses are tracked, the least recent dropped first.
    """

    def __init__(
        self,
        *,
        per_client: int = 5,
        overall: int = 50,
        window_s: float = 300.0,
        max_clients: int = 10_000,
        clock=time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._clients: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _prune(self, q: deque[float], now: float) -> None:
        while q and now - q[0] > self.window_s:
            q.popleft()

    def retry_after(self, client: str) -> float:
        """0 when the client may try now, else seconds until it may."""
        now = self.clock()
        with self._lock:
            self._prune(self._all, now)
            q = self._clients.get(client)
            if q is not None:
                self._prune(q, now)
            waits = []
            if q is not None and len(q) >= self.per_client:
                waits.append(self.window_s - (now - q[0]))
            if len(self._all) >= self.overall:
                waits.append(self.window_s - (now - self._all[0]))
            return max(waits, default=0.0)

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            q = self._clients.pop(client, None) or deque(maxlen=self.per_client)
            q.append(now)
            self._clients[client] = q  # re-inserted: dicts keep insertion order (LRU)
            while len(self._clients) > self.max_clients:
                self._clients.pop(next(iter(self._clients)))
            self._all.append(now)
            while len(self._all) > self.overall:
                self._all.popleft()

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class RevokedSessions:
    """Sessions ended by signing out, until they would have expired anyway.

    A session is a signed cookie: without this list a copy of the cookie taken before
    sign-out would keep working until ``session_max_age_s``. The list is a small JSON file
    (``<data_dir>/console/revoked.json``, sid -> expiry) that every console process on
    the host reads (cached by modification time) and prunes when it writes.
    """

    def __init__(self, path: Path, clock=time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: tuple[int, dict[str, float]] | None = None

    def _read(self) -> dict[str, float]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._cache and self._cache[0] == mtime:
            return self._cache[1]
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("console: %s is unreadable; rewriting it at the next sign-out", self.path)
            entries = {}
        self._cache = (mtime, entries)
        return entries

    def revoked(self, sid: str | None) -> bool:
        if not sid:
            return True  # a session from before sids existed, or forged without one
        with self._lock:
            until = self._read().get(sid)
        return until is not None and until > self.clock()

    def revoke(self, sid: str, until: float) -> None:
        import json

        from lorebot.files import atomic_write_text

        with self._lock:
            now = self.clock()
            entries = {k: v for k, v in self._read().items() if v > now}
            entries[sid] = until
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(entries))
            self._cache = None

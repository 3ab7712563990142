"""Running the local stack: an embedded redis-server, workers, beat, the bot and the
console (when enabled), supervised.

``lorebot up`` builds a :class:`Stack` and blocks; ``lorebot demo`` starts one, asks two
questions and stops it. Children are separate processes (``lorebot worker`` etc.), so a
crash in one is seen, logged and restarted, and Ctrl-C / SIGTERM stops them all.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from lorebot import assets
from lorebot.errors import ConfigError, ServiceUnavailableError
from lorebot.settings import Settings, mask_url

log = logging.getLogger(__name__)


def redis_ping(url: str, timeout: float = 2.0) -> bool:
    """True when a Redis server answers PING at `url`."""
    import redis

    try:
        return bool(
            redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        )
    except (redis.RedisError, OSError, ValueError):
        return False


def require_redis(settings: Settings) -> None:
    """Raise a one-line error naming the setting when Redis cannot be reached."""
    url = settings.redis.effective_url
    if redis_ping(url):
        return
    shown = mask_url(url)
    if settings.redis.embedded:
        raise ServiceUnavailableError(
            f"the embedded Redis ({shown}) is not running",
            fix="start the stack with `lorebot up`, or set LOREBOT_REDIS__URL to a running Redis",
        )
    raise ServiceUnavailableError(
        f"cannot reach Redis at {shown}",
        fix="check LOREBOT_REDIS__URL and that the server is running",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_command(binary: Path, port: int, data_dir: Path) -> list[str]:
    """redis-server arguments: loopback only, AOF on (fsync every second), no eviction."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(binary),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


def embedded_password(settings: Settings) -> str:
    """The embedded Redis's password: generated once, kept in <data_dir>/redis/password (0600).

    Every lorebot process on the machine reads it from there (RedisSettings.effective_url);
    it never appears in a command line.
    """
    path = settings.redis.password_file
    if path is None:
        raise ValueError("Redis is not embedded (redis.url is set)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # an older or copied file: keep it private
        password = path.read_text().strip()
        if password:
            return password
        path.unlink()
        return embedded_password(settings)
    password = secrets.token_hex(32)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


class RedisServer:
    """A redis-server child process; used by the stack and by the tests.

    With a ``password`` the server requires it; the password reaches redis-server on its
    standard input as a config line (``-`` as the last argument), never in its argv.
    """

    def __init__(
        self,
        port: int,
        data_dir: Path,
        binary: Path | None = None,
        *,
        password: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.binary = binary or assets.redis_server_binary()
        self.password = password
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        log_path = self.data_dir / "redis.log"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise ServiceUnavailableError(
                    f"port {self.port} is already in use",
                    fix="stop what listens there or set LOREBOT_REDIS__EMBEDDED_PORT",
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [*redis_command(self.binary, self.port, self.data_dir), *self.extra_args]
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "-"] if self.password else argv,
                stdin=subprocess.PIPE if self.password else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if self.password:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f'requirepass "{self.password}"\n'.encode())
            self.proc.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [
                    "no output"
                ]
                raise ServiceUnavailableError(
                    f"redis-server exited at start: {tail[0]}",
                    fix=f"see {log_path}; is port {self.port} taken?",
                )
            if redis_ping(self.url, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise ServiceUnavailableError(
            f"redis-server did not answer on port {self.port}", fix=f"see {log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


def lorebot_argv(*args: str) -> list[str]:
    """argv that runs a lorebot subcommand with this interpreter."""
    return [sys.executable, "-m", "lorebot", *args]


def stop_process_group(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0
) -> None:
    """Signal a child started with its own process group (and its pool), then SIGKILL it if it
    lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Stack:
    """Starts and supervises the local services; stops them all on exit."""

    max_restarts_per_min = 5

    def __init__(
        self,
        settings: Settings,
        *,
        config_file: Path | None = None,
        worker: bool = True,
        beat: bool = True,
        bot: bool | None = None,
        console: bool | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.redis: RedisServer | None = None
        self.children: list[Child] = []
        self.log_dir = log_dir or settings.run_dir
        env = dict(os.environ)
        env["LOREBOT_DATA_DIR"] = str(settings.data_dir)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        if config_file is not None:
            env["LOREBOT_CONFIG"] = str(config_file)
        if settings.redis.embedded:
            # Children find the embedded server as this process does: the port, and the
            # password in <data_dir>/redis/password (not in their environment or argv).
            env.pop("LOREBOT_REDIS__URL", None)
            env["LOREBOT_REDIS__EMBEDDED_PORT"] = str(settings.redis.embedded_port)
        if worker:
            # Answers in one worker; re-indexing, file shares and the nightly refresh in
            # another, so a long job never delays a question (and each keeps its own
            # redelivery timeout, see workers.app.broker_config).
            # The answer worker also takes admin control tasks (adapter rollback), which must
            # not wait behind a long re-index on the jobs worker.
            self.children.append(
                Child("worker", lorebot_argv("worker", "--queues", "answer,control"), env)
            )
            # its metrics on a free port (announced in Redis), the default one is the answers'
            jobs_env = {**env, "LOREBOT_METRICS__WORKER_PORT": "0"}
            self.children.append(
                Child("jobs", lorebot_argv("worker", "--queues", "ingest,train"), jobs_env)
            )
        if beat:
            self.children.append(Child("beat", lorebot_argv("beat"), env))
        if bot is None:
            bot = settings.slack.configured
        if bot:
            self.children.append(Child("bot", lorebot_argv("bot"), env))
        if console is None:
            console = settings.console.enabled
        if console:
            # Refused here rather than in a restart loop: the child would exit at once.
            if not settings.console.password_hash and not settings.console.oidc_issuer:
                raise ConfigError(
                    "console.enabled is set but the console has no way to sign in",
                    fix="set LOREBOT_CONSOLE__PASSWORD_HASH (lorebot console hash-password) "
                    "or console.oidc_issuer",
                )
            # the password hash and OIDC secret reach it as settings (environment or
            # config file), never on its command line
            self.children.append(Child("console", lorebot_argv("console"), env))

    def start(self) -> Stack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.redis.embedded:
            url = self.settings.redis.effective_url
            if redis_ping(url):
                log.info("embedded Redis already running at %s; reusing it", mask_url(url))
            else:
                self.redis = RedisServer(
                    self.settings.redis.embedded_port,
                    self.settings.data_dir / "redis",
                    password=embedded_password(self.settings),
                ).start()
                log.info(
                    "started redis-server at %s (AOF in %s)", mask_url(url), self.redis.data_dir
                )
        else:
            require_redis(self.settings)
        for child in self.children:
            self._spawn(child)
        return self

    def _spawn(self, child: Child) -> None:
        out = open(self.log_dir / f"{child.name}.log", "ab")
        # A new session: Ctrl-C in the terminal reaches only us, and we stop children in order.
        child.proc = subprocess.Popen(
            child.argv, env=child.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        log.info(
            "started %s (pid %d), log %s",
            child.name,
            child.proc.pid,
            self.log_dir / f"{child.name}.log",
        )

    def poll(self) -> None:
        """Restart children that died; give up on one that keeps crashing."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            child.restarts = [t for t in child.restarts if now - t < 60]
            code = child.proc.returncode
            if len(child.restarts) >= self.max_restarts_per_min:
                raise ServiceUnavailableError(
                    f"{child.name} keeps exiting (last code {code})",
                    fix=f"see {self.log_dir / (child.name + '.log')}",
                )
            log.warning("%s exited with code %s; restarting", child.name, code)
            child.restarts.append(now)
            self._spawn(child)

    def run_forever(self) -> None:
        stop = {"flag": False}

        def _stop(signum, frame):  # noqa: ARG001
            stop["flag"] = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            while not stop["flag"]:
                self.poll()
                time.sleep(0.5)
        finally:
            self.stop()

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown: SIGTERM to every child (workers finish their task), then Redis."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
